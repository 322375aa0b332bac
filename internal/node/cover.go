package node

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sys/unix"
)

// The cover: while the node-local cache does not answer, the agent answers
// at its address itself, forwarding every query to kube-dns, so that pods
// pointed at the cache (before the outage as well as during it) resolve at
// the speed of a pod that asks kube-dns directly, instead of waiting out
// their timeout (glibc) or failing (musl with the cache alone).
//
// It never fights the cache for the address or the port:
//   - The address: the cover adds it (a /32 on lo, labelled lo:dnstune) only
//     when no interface of the node holds it, and removes only that label.
//     The kernel keeps an address's local route while any interface still
//     holds it, so the cache's own interface is untouched either way.
//   - The port: the cover binds with SO_REUSEPORT. So does the cache: CoreDNS,
//     which node-local-dns and AKS LocalDNS run, sets SO_REUSEPORT on every
//     listener (coredns plugin/pkg/reuseport), and both run as root, which
//     the kernel requires of sockets sharing a port. A cache that starts
//     while the cover holds the port binds beside it instead of failing; the
//     cover sees a listener that is not its own in /proc/net/udp and closes
//     its sockets at once (within CoverCheckInterval). While both are bound,
//     the kernel spreads queries over both, and both answer.

// CoverLabel is the label of the address the cover adds to lo, so it removes
// only its own (and a look at `ip addr show lo` says who added it).
const CoverLabel = "lo:dnstune"

// CoverCheckInterval is how often a cover looks for the cache's listener
// beside its own: the longest the two share the port.
const CoverCheckInterval = 250 * time.Millisecond

// Bounds of the forwarder: queries in flight (more are dropped, as a busy
// server drops them; the client retries), how long it waits for kube-dns,
// and how long a TCP connection may stay idle.
const (
	coverMaxInFlight = 512
	coverUpstreamTTL = 2 * time.Second
	coverTCPIdle     = 10 * time.Second
)

// AddressLinks adds and removes the cover's address; Netlink is the real
// one. Tests use fakes: changing a node's addresses needs root.
type AddressLinks interface {
	// HasLocal says whether an interface of the node holds addr.
	HasLocal(addr netip.Addr) (bool, error)
	// Add adds addr/32 (or /128) to lo with label; Del removes it.
	Add(addr netip.Addr, label string) error
	Del(addr netip.Addr, label string) error
}

// CoverOptions configure a Cover.
type CoverOptions struct {
	// Address and Port are the cache's (the policy's nodeLocalDNS, 53).
	Address netip.Addr
	Port    int
	// Upstream returns where queries go while the cover answers: kube-dns
	// as host:port. Called at each start, so a Service's address is
	// looked up when it is needed.
	Upstream func(ctx context.Context) (string, error)
	// Links manages the address; default Netlink{}.
	Links AddressLinks
	// Proc is where /proc/net/udp is read (the host network namespace's
	// when the agent runs with hostNetwork).
	Proc Proc
	Log  logr.Logger
}

// Cover answers at the cache's address while the cache does not.
type Cover struct {
	o CoverOptions

	mu       sync.Mutex
	udp      net.PacketConn
	tcp      net.Listener
	inodes   map[uint64]bool // of its own sockets
	added    bool            // it added the address
	upstream string
	wg       sync.WaitGroup
	inflight chan struct{}
}

// NewCover returns a cover for o.Address; it answers nothing until Start.
func NewCover(o CoverOptions) (*Cover, error) {
	if !o.Address.IsValid() {
		return nil, errors.New("node-local cover: no address")
	}
	if o.Upstream == nil {
		return nil, errors.New("node-local cover: no upstream (set --nodelocal-cover-upstream)")
	}
	if o.Port == 0 {
		o.Port = 53
	}
	if o.Links == nil {
		o.Links = Netlink{}
	}
	return &Cover{o: o, inflight: make(chan struct{}, coverMaxInFlight)}, nil
}

func (c *Cover) addr() string {
	return net.JoinHostPort(c.o.Address.String(), strconv.Itoa(c.o.Port))
}

// Active says whether the cover holds the port.
func (c *Cover) Active() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.udp != nil
}

// Upstream is where the running cover forwards ("" when inactive).
func (c *Cover) Upstream() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.upstream
}

// Start makes the address answer: it adds the address if no interface
// holds it, binds UDP and TCP on it with SO_REUSEPORT and forwards every
// query to the upstream. It undoes what it did when a step fails.
func (c *Cover) Start(ctx context.Context) (err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.udp != nil {
		return nil
	}
	up, err := c.o.Upstream(ctx)
	if err != nil {
		return fmt.Errorf("node-local cover: no upstream to forward to: %w", err)
	}
	local, err := c.o.Links.HasLocal(c.o.Address)
	if err != nil {
		return fmt.Errorf("node-local cover: cannot list the node's addresses: %w", err)
	}
	if !local {
		if err := c.o.Links.Add(c.o.Address, CoverLabel); err != nil {
			return fmt.Errorf("node-local cover: cannot add %s to lo (needs CAP_NET_ADMIN in the host network namespace): %w", c.o.Address, err)
		}
		c.added = true
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.closeLocked())
		}
	}()
	lc := net.ListenConfig{Control: reusePort}
	if c.udp, err = lc.ListenPacket(ctx, "udp", c.addr()); err != nil {
		return fmt.Errorf("node-local cover: cannot bind %s/udp (needs CAP_NET_BIND_SERVICE, and the same user as the cache to share its port): %w", c.addr(), err)
	}
	if c.tcp, err = lc.Listen(ctx, "tcp", c.addr()); err != nil {
		return fmt.Errorf("node-local cover: cannot bind %s/tcp: %w", c.addr(), err)
	}
	c.inodes = map[uint64]bool{}
	for _, s := range []any{c.udp, c.tcp} {
		ino, err := socketInode(s.(syscall.Conn))
		if err != nil {
			return fmt.Errorf("node-local cover: %w", err)
		}
		c.inodes[ino] = true
	}
	c.upstream = up
	c.wg.Add(2)
	go func(pc net.PacketConn) { defer c.wg.Done(); c.serveUDP(pc, up) }(c.udp)
	go func(l net.Listener) { defer c.wg.Done(); c.serveTCP(l, up) }(c.tcp)
	return nil
}

// Ensure keeps the address local while the cover runs: when the interface
// that held it goes away (the cache's, removed by its teardown or by hand),
// the cover's sockets would stay bound to an address the node no longer
// delivers to, so the cover adds it to lo. It reports whether it did.
func (c *Cover) Ensure() (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.udp == nil || c.added {
		return false, nil
	}
	local, err := c.o.Links.HasLocal(c.o.Address)
	if err != nil || local {
		return false, err
	}
	if err := c.o.Links.Add(c.o.Address, CoverLabel); err != nil {
		return false, fmt.Errorf("node-local cover: %s left the node and cannot be added to lo: %w", c.o.Address, err)
	}
	c.added = true
	return true, nil
}

// Stop closes the sockets, waits for the forwarder to stop accepting,
// and removes the address if the cover added it.
func (c *Cover) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeLocked()
}

func (c *Cover) closeLocked() error {
	var errs []error
	if c.udp != nil {
		errs = append(errs, c.udp.Close())
	}
	if c.tcp != nil {
		errs = append(errs, c.tcp.Close())
	}
	c.wg.Wait()
	c.udp, c.tcp, c.inodes, c.upstream = nil, nil, nil, ""
	if c.added {
		if err := c.o.Links.Del(c.o.Address, CoverLabel); err != nil {
			errs = append(errs, fmt.Errorf("node-local cover: cannot remove %s (%s) from lo: %w", c.o.Address, CoverLabel, err))
		} else {
			c.added = false
		}
	}
	return errors.Join(errs...)
}

// CacheListening says whether a UDP socket that is not the cover's listens
// on the address and port: the cache, back. Wildcard listeners do not count
// (they do not take the cache's address from a more specific bind).
func (c *Cover) CacheListening() (bool, error) {
	c.mu.Lock()
	own := c.inodes
	c.mu.Unlock()
	socks, err := c.o.Proc.udpListeners()
	if err != nil {
		return false, err
	}
	for _, s := range socks {
		if s.addr == netip.AddrPortFrom(c.o.Address, uint16(c.o.Port)) && !own[s.inode] {
			return true, nil
		}
	}
	return false, nil
}

func (c *Cover) serveUDP(pc net.PacketConn, up string) {
	buf := make([]byte, 65535)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return // closed
		}
		if n < 12 {
			continue // not a DNS message
		}
		select {
		case c.inflight <- struct{}{}:
		default:
			continue // too many in flight: dropped, the client asks again
		}
		q := append([]byte(nil), buf[:n]...)
		go func() {
			defer func() { <-c.inflight }()
			if a, err := exchangeUDP(up, q); err == nil {
				_, _ = pc.WriteTo(a, from)
			} else {
				c.o.Log.V(1).Info("cover: kube-dns did not answer", "upstream", up, "error", err.Error())
			}
		}()
	}
}

// exchangeUDP sends q to up and returns the answer with q's ID.
func exchangeUDP(up string, q []byte) ([]byte, error) {
	conn, err := net.DialTimeout("udp", up, coverUpstreamTTL)
	if err != nil {
		return nil, err
	}
	defer func() { _ = conn.Close() }()
	_ = conn.SetDeadline(time.Now().Add(coverUpstreamTTL))
	if _, err := conn.Write(q); err != nil {
		return nil, err
	}
	buf := make([]byte, 65535)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return nil, err
		}
		if n >= 12 && binary.BigEndian.Uint16(buf) == binary.BigEndian.Uint16(q) {
			return buf[:n], nil
		}
	}
}

func (c *Cover) serveTCP(l net.Listener, up string) {
	var conns sync.WaitGroup
	defer conns.Wait()
	for {
		conn, err := l.Accept()
		if err != nil {
			return // closed
		}
		select {
		case c.inflight <- struct{}{}:
		default:
			_ = conn.Close()
			continue
		}
		conns.Add(1)
		go func() {
			defer conns.Done()
			defer func() { <-c.inflight }()
			proxyTCP(conn, up)
		}()
	}
}

// proxyTCP copies a DNS-over-TCP connection to up and back until either
// side closes or it stays idle for coverTCPIdle.
func proxyTCP(conn net.Conn, up string) {
	defer func() { _ = conn.Close() }()
	u, err := net.DialTimeout("tcp", up, coverUpstreamTTL)
	if err != nil {
		return
	}
	defer func() { _ = u.Close() }()
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		buf := make([]byte, 4096)
		for {
			_ = src.SetReadDeadline(time.Now().Add(coverTCPIdle))
			n, err := src.Read(buf)
			if n > 0 {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		done <- struct{}{}
	}
	go cp(u, conn)
	go cp(conn, u)
	<-done
}

// reusePort sets SO_REUSEPORT, as CoreDNS does on its listeners, so the
// cache and the cover can hold the port at once.
func reusePort(_, _ string, rc syscall.RawConn) error {
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); err != nil {
		return err
	}
	return serr
}

// socketInode is the inode /proc/net/* lists a socket under.
func socketInode(s syscall.Conn) (uint64, error) {
	rc, err := s.SyscallConn()
	if err != nil {
		return 0, err
	}
	var st unix.Stat_t
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Fstat(int(fd), &st) }); err != nil {
		return 0, err
	}
	if serr != nil {
		return 0, fmt.Errorf("fstat of its socket: %w", serr)
	}
	return st.Ino, nil
}

type udpSocket struct {
	addr  netip.AddrPort
	inode uint64
}

// udpListeners lists the IPv4 UDP sockets of net/udp that are bound and
// not connected (remote 0.0.0.0:0).
func (p Proc) udpListeners() ([]udpSocket, error) {
	f, err := os.Open(p.root() + "/net/udp")
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	var out []udpSocket
	s := bufio.NewScanner(f)
	s.Scan() // header
	for s.Scan() {
		fields := strings.Fields(s.Text())
		// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
		if len(fields) < 10 || fields[2] != "00000000:0000" {
			continue
		}
		local, err := parseProcAddr(fields[1])
		if err != nil {
			return nil, fmt.Errorf("%s/net/udp: %w", p.root(), err)
		}
		ino, err := strconv.ParseUint(fields[9], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s/net/udp: inode %q: %w", p.root(), fields[9], err)
		}
		out = append(out, udpSocket{addr: local, inode: ino})
	}
	return out, s.Err()
}

// parseProcAddr reads /proc/net's "0A14FEA9:0035": the address is the
// kernel's 32-bit word printed in host order (little-endian on amd64 and
// arm64, the platforms the image is built for), the port in hex.
func parseProcAddr(s string) (netip.AddrPort, error) {
	h, p, ok := strings.Cut(s, ":")
	if !ok || len(h) != 8 {
		return netip.AddrPort{}, fmt.Errorf("address %q is not IPv4 hex:port", s)
	}
	a, err := strconv.ParseUint(h, 16, 32)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("address %q: %w", s, err)
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("port of %q: %w", s, err)
	}
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], uint32(a))
	return netip.AddrPortFrom(netip.AddrFrom4(b), uint16(port)), nil
}
