package node

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Family is an address family with a neighbour table.
type Family string

const (
	// IPv4 is the ARP table (arp_cache).
	IPv4 Family = "ipv4"
	// IPv6 is the NDP table (ndisc_cache).
	IPv6 Family = "ipv6"
)

// statFile is the /proc/net/stat file of the family's table.
func (f Family) statFile() string {
	if f == IPv6 {
		return "ndisc_cache"
	}
	return "arp_cache"
}

// Proc reads and writes the kernel settings the agent uses, under Root
// (default /proc).
type Proc struct {
	Root string
}

func (p Proc) root() string {
	if p.Root == "" {
		return "/proc"
	}
	return p.Root
}

func (p Proc) threshPath(f Family, i int) string {
	return filepath.Join(p.root(), "sys", "net", string(f), "neigh", "default", "gc_thresh"+strconv.Itoa(i+1))
}

// ErrFamilyDisabled means the node has no such family (e.g. ipv6.disable=1).
var ErrFamilyDisabled = errors.New("address family disabled on this node")

// ErrNotHostNetwork means the process is in a pod's own network namespace,
// where the global gc_thresh settings are not visible.
var ErrNotHostNetwork = errors.New("not in the host network namespace")

// ErrNoPrivilege means /proc/sys could not be written.
var ErrNoPrivilege = errors.New("no privilege to write /proc/sys")

// Thresholds reads gc_thresh1/2/3 of a family.
func (p Proc) Thresholds(f Family) (Thresholds, error) {
	var t Thresholds
	for i := range t {
		path := p.threshPath(f, i)
		b, err := os.ReadFile(path) // #nosec G304 -- fixed paths under --proc-root.
		if err != nil {
			return t, p.explain(f, path, err)
		}
		v, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return t, fmt.Errorf("failed to parse %s: %q is not a number", path, strings.TrimSpace(string(b)))
		}
		t[i] = v
	}
	return t, nil
}

// SetThreshold writes one of gc_thresh1/2/3 (i = 0, 1, 2).
func (p Proc) SetThreshold(f Family, i, v int) error {
	path := p.threshPath(f, i)
	// Sysctl files must be written in one write, without O_CREATE or O_TRUNC games.
	file, err := os.OpenFile(path, os.O_WRONLY, 0) // #nosec G304 -- fixed paths under --proc-root.
	if err != nil {
		return p.explain(f, path, err)
	}
	_, werr := file.WriteString(strconv.Itoa(v) + "\n")
	cerr := file.Close()
	if err := errors.Join(werr, cerr); err != nil {
		return p.explain(f, path, err)
	}
	return nil
}

// explain turns a file error into one that says what to do.
func (p Proc) explain(f Family, path string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if _, serr := os.Stat(filepath.Join(p.root(), "sys", "net", string(f))); serr != nil {
			return fmt.Errorf("%s skipped: %s has no sys/net/%s: %w", f, p.root(), f, ErrFamilyDisabled)
		}
		return fmt.Errorf("%w: %s does not exist, as in a pod's own network namespace; run the node agent with hostNetwork: true", ErrNotHostNetwork, path)
	case errors.Is(err, fs.ErrPermission), errors.Is(err, syscall.EROFS), errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EACCES):
		return fmt.Errorf("%w: %s: %w; the node agent needs privileged: true (or CAP_NET_ADMIN with a writable /proc/sys)", ErrNoPrivilege, path, err)
	}
	return fmt.Errorf("failed to access %s: %w", path, err)
}

// Stat reads /proc/net/stat/arp_cache or ndisc_cache.
func (p Proc) Stat(f Family) (Stat, error) {
	return p.readStat(filepath.Join(p.root(), "net", "stat", f.statFile()))
}

// Conntrack reads /proc/net/stat/nf_conntrack; ok is false when the file is
// absent (conntrack not loaded).
func (p Proc) Conntrack() (s Stat, ok bool, err error) {
	path := filepath.Join(p.root(), "net", "stat", "nf_conntrack")
	s, err = p.readStat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, false, nil
	}
	return s, err == nil, err
}

func (p Proc) readStat(path string) (Stat, error) {
	f, err := os.Open(path) // #nosec G304 -- fixed paths under --proc-root.
	if err != nil {
		return Stat{}, err
	}
	defer func() { _ = f.Close() }()
	s, err := ParseStat(f)
	if err != nil {
		return Stat{}, fmt.Errorf("failed to parse %s: %w", path, err)
	}
	return s, nil
}
