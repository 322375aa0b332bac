package kubenode

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// hostTool is one of the node's own commands, put into an image: images
// here are built from local files, and the node's ip, nft, iptables and
// ipset are the tools whose behaviour the tests are about.
type hostTool struct {
	// name is the command in the image (/usr/local/bin/NAME) and the
	// node's command it runs (looked up on PATH).
	name string
	// argv0, for a multi-call binary (iptables-nft is xtables-nft-multi):
	// what it is called as; "" for name.
	argv0 string
}

// hostTools copies tools, with the libraries ldd lists, under
// /opt/hosttools of the image tree dir, and writes /usr/local/bin/NAME
// wrappers that run each through the node's own loader and libraries, so
// nothing depends on the image's libc layout. iptables' extensions (the
// xtables folder, dlopened) come along when an iptables tool does. The
// image needs /bin/sh for the wrappers.
func hostTools(dir string, tools []hostTool) error {
	root := filepath.Join(dir, "opt", "hosttools")
	for _, d := range []string{root + "/bin", root + "/lib", dir + "/usr/local/bin"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	loader := ""
	// libs copies the libraries of an ELF file into root/lib.
	libs := func(file string) error {
		out, err := exec.Command("ldd", file).Output()
		if err != nil {
			return fmt.Errorf("ldd %s: %w", file, err)
		}
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			lib := ""
			switch {
			case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
				lib = f[2]
			case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
				lib, loader = f[0], filepath.Base(f[0])
			default:
				continue
			}
			realLib, err := filepath.EvalSymlinks(lib)
			if err != nil {
				return err
			}
			if err := copyFile(realLib, filepath.Join(root, "lib", filepath.Base(lib)), 0o755); err != nil {
				return err
			}
		}
		return nil
	}
	xtables := false
	for _, t := range tools {
		path, err := exec.LookPath(t.name)
		if err != nil {
			return fmt.Errorf("%s (for an image of the node's tools): %w", t.name, err)
		}
		real, err := filepath.EvalSymlinks(path)
		if err != nil {
			return err
		}
		bin := filepath.Base(real)
		if err := copyFile(real, filepath.Join(root, "bin", bin), 0o755); err != nil {
			return err
		}
		if err := libs(real); err != nil {
			return err
		}
		env, argv0 := "", t.argv0
		if argv0 == "" {
			argv0 = t.name
		}
		if strings.HasPrefix(bin, "xtables-") {
			xtables = true
			env = "XTABLES_LIBDIR=/opt/hosttools/xtables "
		}
		wrapper := fmt.Sprintf("#!/bin/sh\n%sexec /opt/hosttools/lib/%s --library-path /opt/hosttools/lib --argv0 %s /opt/hosttools/bin/%s \"$@\"\n", env, loader, argv0, bin)
		if err := os.WriteFile(filepath.Join(dir, "usr", "local", "bin", t.name), []byte(wrapper), 0o755); err != nil { // #nosec G306 -- an image's executable
			return err
		}
	}
	if loader == "" {
		return errors.New("ldd named no dynamic loader for the node's tools")
	}
	if !xtables {
		return nil
	}
	exts, _ := filepath.Glob("/usr/lib/*/xtables/*.so")
	if len(exts) == 0 {
		return errors.New("no iptables extensions (/usr/lib/*/xtables/*.so) on the node")
	}
	if err := os.MkdirAll(filepath.Join(root, "xtables"), 0o755); err != nil {
		return err
	}
	for _, ext := range exts {
		if err := copyFile(ext, filepath.Join(root, "xtables", filepath.Base(ext)), 0o755); err != nil {
			return err
		}
		if err := libs(ext); err != nil {
			return err
		}
	}
	return nil
}
