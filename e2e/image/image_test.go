package image

import (
	"archive/tar"
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func fakeBinary(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "dnstune")
	if err := os.WriteFile(p, []byte(content), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// The Dockerfile's final stage declares the binary path, user and
// entrypoint this package builds.
func TestDockerfileDeclaresTheSame(t *testing.T) {
	f, err := os.Open("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	var copyDest, user, entrypoint string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		switch strings.ToUpper(fields[0]) {
		case "FROM": // a new stage: only the last one counts
			copyDest, user, entrypoint = "", "", ""
		case "COPY":
			copyDest = fields[len(fields)-1]
		case "USER":
			user = fields[1]
		case "ENTRYPOINT":
			entrypoint = strings.TrimSpace(strings.TrimPrefix(sc.Text(), fields[0]))
		}
	}
	var ep []string
	if err := json.Unmarshal([]byte(entrypoint), &ep); err != nil {
		t.Fatalf("ENTRYPOINT %q is not exec form: %v", entrypoint, err)
	}
	if copyDest != BinaryPath || user != User || strings.Join(ep, " ") != strings.Join(Entrypoint, " ") {
		t.Errorf("Dockerfile: COPY to %q, USER %q, ENTRYPOINT %v; image: %q, %q, %v", copyDest, user, ep, BinaryPath, User, Entrypoint)
	}
}

// The same binary gives the same digest; another binary another digest.
func TestBuildIsReproducible(t *testing.T) {
	bin := fakeBinary(t, "binary v1")
	a, err := Build(bin, "0.1.0")
	if err != nil {
		t.Fatal(err)
	}
	b, err := Build(bin, "0.1.0")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Build(fakeBinary(t, "binary v2"), "0.1.0")
	if err != nil {
		t.Fatal(err)
	}
	da, _ := a.Digest()
	db, _ := b.Digest()
	dc, _ := c.Digest()
	if da != db || da == dc {
		t.Fatalf("digests %s, %s (same binary), %s (other binary)", da, db, dc)
	}
}

// The tarball holds one image whose config and layer are what users run:
// non-root user, entrypoint, the binary executable at its path.
func TestTarballContents(t *testing.T) {
	img, err := Build(fakeBinary(t, "#!dnstune"), "0.1.0")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "image.tar")
	if err := WriteTarball(out, "example.com/dnstune:test", img); err != nil {
		t.Fatal(err)
	}
	read, err := tarball.ImageFromPath(out, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := read.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Config.User != "65532:65532" || strings.Join(cfg.Config.Entrypoint, " ") != "/usr/local/bin/dnstune" || cfg.OS != "linux" || cfg.Architecture != "amd64" {
		t.Errorf("config = %+v", cfg.Config)
	}
	layers, err := read.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers = %d, %v", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rc.Close() }()
	tr := tar.NewReader(rc)
	found := map[string]*tar.Header{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		found[h.Name] = h
		if h.Name == "usr/local/bin/dnstune" {
			b, _ := io.ReadAll(tr)
			if string(b) != "#!dnstune" {
				t.Errorf("binary content %q", b)
			}
		}
	}
	if h := found["usr/local/bin/dnstune"]; h == nil || h.Mode&0o111 == 0 {
		t.Errorf("binary missing or not executable: %+v", h)
	}
	if found["etc/passwd"] == nil || found["tmp/"] == nil {
		t.Errorf("layer lacks passwd or /tmp: %v", found)
	}
}
