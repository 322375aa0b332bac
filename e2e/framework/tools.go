package framework

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
)

// BuildTool builds one of hack/build-tools.sh's tools into the tool cache
// (once; the make targets do it ahead) and returns its path: "kube-proxy",
// "kube-router", "cert-manager", "coredns".
func BuildTool(what string) (string, error) {
	out, err := exec.Command("bash", filepath.Join(RepoRoot(), "hack", "build-tools.sh"), what).Output() // #nosec G204 -- the repository's own script
	if err != nil {
		return "", fmt.Errorf("hack/build-tools.sh %s: %w", what, err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1], nil
}
