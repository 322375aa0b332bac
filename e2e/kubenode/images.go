package kubenode

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/dnstune/dnstune/e2e/framework"
	"github.com/dnstune/dnstune/e2e/image"
)

// Images the node runs. Nothing can be pulled here: every image is built
// from local files and imported into containerd; pods use them with
// imagePullPolicy IfNotPresent (the default for a non-latest tag).
const (
	// PauseImage is the sandbox image (a static musl pause).
	PauseImage = "dnstune.test/pause:1"
	// DnstuneImage is dnstune's own image (internal/image, as make image
	// builds it), under the tag make image uses.
	DnstuneImage = "ghcr.io/dnstune/dnstune:dev"
	// GlibcClientImage holds busybox (cat, sleep), Debian's glibc (from the
	// libc6 package, dpkg -x) and two builds of a getaddrinfo client:
	// /usr/local/bin/resolve-glibc (dynamic, glibc) and
	// /usr/local/bin/resolve-musl (musl-gcc -static).
	GlibcClientImage = "dnstune.test/client:glibc"
	// MuslClientImage is the same image under a tag dnstune recognises as
	// musl-based (policy.LooksMusl: a tag containing "alpine"); its pods run
	// resolve-musl.
	MuslClientImage = "dnstune.test/client:alpine"
	// CoreDNSImage holds the project's CoreDNS build at /coredns.
	CoreDNSImage = "dnstune.test/coredns:1"
	// KubeRouterImage holds kube-router at /usr/local/bin/kube-router,
	// busybox, and the node's iptables (iptables-nft) and ipset, which its
	// NetworkPolicy controller runs.
	KubeRouterImage = "dnstune.test/kube-router:1"
)

// debs are the Debian packages the client image is made of, extracted with
// dpkg -x, never installed.
var debs = []string{"libc6", "busybox-static"}

// buildImages writes every image into one docker tarball for ctr import.
func (c *Cluster) buildImages(coredns string) (string, error) {
	work := filepath.Join(c.Dir, "images")
	src := filepath.Join(framework.RepoRoot(), "e2e", "kubenode", "testdata")
	pauseDir := filepath.Join(work, "pause")
	clientDir := filepath.Join(work, "client")
	corednsDir := filepath.Join(work, "coredns")
	for _, d := range []string{pauseDir + "/bin", clientDir + "/usr/local/bin", clientDir + "/etc", corednsDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", err
		}
	}
	steps := [][]string{
		{"musl-gcc", "-static", "-O2", "-o", pauseDir + "/bin/pause", src + "/pause.c"},
		{"musl-gcc", "-static", "-O2", "-o", clientDir + "/usr/local/bin/resolve-musl", src + "/resolve.c"},
		{"gcc", "-O2", "-o", clientDir + "/usr/local/bin/resolve-glibc", src + "/resolve.c"},
	}
	for _, s := range steps {
		if out, err := exec.Command(s[0], s[1:]...).CombinedOutput(); err != nil {
			return "", fmt.Errorf("%s: %w\n%s", strings.Join(s, " "), err, out)
		}
	}
	if err := extractDebs(clientDir); err != nil {
		return "", err
	}
	for _, tool := range []string{"sh", "cat", "sleep", "ls"} {
		if err := os.Symlink("busybox", clientDir+"/bin/"+tool); err != nil && !os.IsExist(err) {
			return "", err
		}
	}
	if err := os.WriteFile(clientDir+"/etc/nsswitch.conf", []byte("hosts: files dns\n"), 0o644); err != nil {
		return "", err
	}
	if err := copyFile(coredns, corednsDir+"/coredns", 0o755); err != nil {
		return "", err
	}
	busybox, err := filepath.EvalSymlinks(clientDir + "/bin/busybox")
	if err != nil {
		return "", fmt.Errorf("busybox-static left no bin/busybox: %w", err)
	}
	nodeCacheDir := filepath.Join(work, "node-cache")
	if err := nodeCacheImageDir(nodeCacheDir, coredns, busybox); err != nil {
		return "", err
	}
	c.busybox = busybox
	imgs := map[name.Reference]v1.Image{}
	add := func(ref string, img v1.Image, err error) error {
		if err != nil {
			return fmt.Errorf("image %s: %w", ref, err)
		}
		tag, err := name.NewTag(ref)
		if err != nil {
			return err
		}
		imgs[tag] = img
		return nil
	}
	pause, err := dirImage(pauseDir, []string{"/bin/pause"})
	if err := add(PauseImage, pause, err); err != nil {
		return "", err
	}
	client, err := dirImage(clientDir, []string{"/bin/sleep", "infinity"})
	if err := add(GlibcClientImage, client, err); err != nil {
		return "", err
	}
	if err := add(MuslClientImage, client, nil); err != nil {
		return "", err
	}
	cd, err := dirImage(corednsDir, []string{"/coredns"})
	if err := add(CoreDNSImage, cd, err); err != nil {
		return "", err
	}
	nc, err := dirImage(nodeCacheDir, []string{"/coredns"})
	if err := add(NodeCacheImage, nc, err); err != nil {
		return "", err
	}
	dn, err := image.Build(c.Dnstune, "dev")
	if err := add(DnstuneImage, dn, err); err != nil {
		return "", err
	}
	out := filepath.Join(work, "images.tar")
	if err := tarball.MultiRefWriteToFile(out, imgs); err != nil {
		return "", fmt.Errorf("write %s: %w", out, err)
	}
	return out, nil
}

// importImage builds a one-layer image of dir (dirImage) under ref and
// imports it into the node's containerd: for the images only some steps
// run (the enforcer, cert-manager), built when those steps start.
func (c *Cluster) importImage(ref, dir string, entrypoint []string) error {
	img, err := dirImage(dir, entrypoint)
	if err != nil {
		return fmt.Errorf("image %s: %w", ref, err)
	}
	tag, err := name.NewTag(ref)
	if err != nil {
		return err
	}
	tarPath := dir + ".tar"
	if err := tarball.WriteToFile(tarPath, tag, img); err != nil {
		return fmt.Errorf("write %s: %w", tarPath, err)
	}
	if out, err := c.AnchorCommand("ctr", "-n", "k8s.io", "images", "import", tarPath).CombinedOutput(); err != nil {
		return fmt.Errorf("ctr images import %s: %w: %s", tarPath, err, out)
	}
	return nil
}

// extractDebs downloads the packages (apt-get download, into a cache under
// bin/ so a second run needs no network) and unpacks them into root.
func extractDebs(root string) error {
	cache := filepath.Join(framework.RepoRoot(), "bin", "cache", "debs")
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return err
	}
	for _, pkg := range debs {
		files, _ := filepath.Glob(filepath.Join(cache, pkg+"_*.deb"))
		if len(files) == 0 {
			cmd := exec.Command("apt-get", "download", pkg)
			cmd.Dir = cache
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("apt-get download %s (for the client image): %w\n%s", pkg, err, out)
			}
			files, _ = filepath.Glob(filepath.Join(cache, pkg+"_*.deb"))
		}
		if len(files) == 0 {
			return fmt.Errorf("apt-get download %s left no .deb in %s", pkg, cache)
		}
		if out, err := exec.Command("dpkg", "-x", files[0], root).CombinedOutput(); err != nil {
			return fmt.Errorf("dpkg -x %s: %w\n%s", files[0], err, out)
		}
	}
	return nil
}

// dirImage is a one-layer image of dir's tree (owned by root, symlinks kept).
func dirImage(dir string, entrypoint []string) (v1.Image, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		info, err := os.Lstat(path)
		if err != nil {
			return err
		}
		link := ""
		if info.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(path); err != nil {
				return err
			}
		}
		h, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		h.Name, h.Uid, h.Gid, h.Uname, h.Gname = rel, 0, 0, "", ""
		if d.IsDir() {
			h.Name += "/"
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if info.Mode().IsRegular() {
			f, err := os.Open(path) // #nosec G304 -- files the harness just built.
			if err != nil {
				return err
			}
			defer func() { _ = f.Close() }()
			_, err = io.Copy(tw, f)
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.Architecture, cfg.OS = "amd64", "linux"
	cfg.Config.Entrypoint = entrypoint
	cfg.Config.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin"}
	return mutate.ConfigFile(img, cfg)
}

func copyFile(from, to string, mode os.FileMode) error {
	b, err := os.ReadFile(from) // #nosec G304 -- a binary the harness built.
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, mode)
}
