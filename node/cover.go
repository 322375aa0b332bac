package node

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sys/unix"
)

// The cover: the agent answers at the node-local cache's address whenever
// the cache does not, forwarding every query to kube-dns, so that pods
// pointed at the cache (before an outage as well as during it) resolve at
// the speed of a pod that asks kube-dns directly, instead of waiting out
// their timeout (glibc) or failing (musl with the cache alone).
//
// It stands by on the cache's own port and takes over the instant the
// cache's socket closes (a crash, a kill, a rolling restart), with no probe
// in between:
//   - Both bind the port with SO_REUSEPORT. CoreDNS, which node-local-dns and
//     AKS LocalDNS run, sets it on every listener (coredns
//     plugin/pkg/reuseport), and both run as root, which the kernel requires
//     of sockets sharing a port. The kernel keeps the group's sockets in an
//     array (a socket that leaves is replaced by the last one).
//   - The cover attaches a classic BPF program to the group
//     (SO_ATTACH_REUSEPORT_CBPF) that returns an index of the cache's in
//     that array: every query goes to the cache while its socket is bound.
//     When it closes, the cover is alone and gets every query (an index past
//     the group's end makes the kernel fall back to its hash over what is
//     left). The cover follows the array from /proc/net/udp every
//     CoverCheckInterval (a join is appended, a leave is replaced by the
//     last); when it cannot tell the order (a join and a leave between two
//     looks) or it still receives queries beside a bound cache, it binds
//     again, which puts it last.
//
// It never fights the cache for the address or the port:
//   - The address: the cover adds it (a /32 on lo, labelled lo:dnstune) only
//     when no interface of the node holds it, and removes its own as soon as
//     another interface holds it too (the cache's, back). The kernel keeps an
//     address's local route while any interface holds it.
//   - The port: a cache that starts while the cover holds the port binds
//     beside it (SO_REUSEPORT) and gets every query. A cache that cannot
//     share (no SO_REUSEPORT, or another user) makes the cover's bind fail
//     while it runs: the cover then stays off on that node and says so.

// coverLabel is the label of the address the cover adds to lo, so it removes
// only its own (and a look at `ip addr show lo` says who added it).
const coverLabel = "lo:dnstune"

// coverCheckInterval is how often a running cover reads /proc/net/udp for
// the cache's socket: how soon it moves the cache's index after the cache
// rebinds in an order it did not expect, and takes its address off lo.
const coverCheckInterval = 250 * time.Millisecond

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
	// HasLocal says whether an interface of the node holds addr, not
	// counting an address labelled except ("" counts every address).
	HasLocal(addr netip.Addr, except string) (bool, error)
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
	own      map[uint64]bool // inodes of its sockets
	udpIno   uint64          // of its UDP socket
	order    []uint64        // the port's UDP group as the kernel keeps it, as far as seen
	steer    int             // the index its BPF program returns; -1: none attached
	stable   bool            // the cache's sockets did not change at the last look
	seen     int64           // received at the last look
	added    bool            // it added the address
	upstream string
	wg       sync.WaitGroup
	inflight chan struct{}
	received atomic.Int64 // queries its UDP socket read
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

// Active says whether the cover holds the port (standing by or answering).
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

// ErrCacheWontShare is Start's error when the cache holds the port and does
// not share it: the cover must stay off on this node.
var ErrCacheWontShare = errors.New("the node-local cache holds the port without sharing it (SO_REUSEPORT, same user); the cover stays off on this node")

// Start binds UDP and TCP on the address with SO_REUSEPORT (adding the
// address to lo first if no interface holds it), steers the port's traffic
// to the cache's socket while there is one, and forwards what reaches it
// to the upstream. It undoes what it did when a step fails.
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
	local, err := c.o.Links.HasLocal(c.o.Address, "")
	if err != nil {
		return fmt.Errorf("node-local cover: cannot list the node's addresses: %w", err)
	}
	elsewhere, err := c.o.Links.HasLocal(c.o.Address, coverLabel)
	if err != nil {
		return fmt.Errorf("node-local cover: cannot list the node's addresses: %w", err)
	}
	switch {
	case !local:
		if err := c.o.Links.Add(c.o.Address, coverLabel); err != nil {
			return fmt.Errorf("node-local cover: cannot add %s to lo (needs CAP_NET_ADMIN in the host network namespace): %w", c.o.Address, err)
		}
		c.added = true
	case !elsewhere:
		// Only its own label holds it: left by an agent that was killed
		// while covering. It is this cover's to remove.
		c.added = true
	}
	c.upstream = up
	if err := c.bindLocked(ctx); err != nil {
		return errors.Join(err, c.closeLocked())
	}
	return nil
}

// bindLocked binds the sockets (last in the port's group), steers, and
// starts forwarding.
func (c *Cover) bindLocked(ctx context.Context) (err error) {
	lc := net.ListenConfig{Control: reusePort}
	// Plain TCP: Go listens with MPTCP by default where the kernel has it,
	// and an MPTCP socket takes no reuseport program (EOPNOTSUPP).
	lc.SetMultipathTCP(false)
	if c.udp, err = lc.ListenPacket(ctx, "udp", c.addr()); err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("node-local cover: bind %s/udp: %w", c.addr(), ErrCacheWontShare)
		}
		return fmt.Errorf("node-local cover: cannot bind %s/udp (needs CAP_NET_BIND_SERVICE): %w", c.addr(), err)
	}
	if c.tcp, err = lc.Listen(ctx, "tcp", c.addr()); err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("node-local cover: bind %s/tcp: %w", c.addr(), ErrCacheWontShare)
		}
		return fmt.Errorf("node-local cover: cannot bind %s/tcp: %w", c.addr(), err)
	}
	c.own = map[uint64]bool{}
	for i, s := range []any{c.udp, c.tcp} {
		ino, err := socketInode(s.(syscall.Conn))
		if err != nil {
			return fmt.Errorf("node-local cover: %w", err)
		}
		c.own[ino] = true
		if i == 0 {
			c.udpIno = ino
		}
	}
	cache, err := c.cacheSockets()
	if err != nil {
		return err
	}
	// It joined last: after every socket of the cache's.
	c.order = append(slices.Sorted(maps.Keys(cache)), c.udpIno)
	c.steer, c.stable, c.seen = -1, false, c.received.Load()
	if err := c.steerLocked(); err != nil {
		return err
	}
	c.wg.Add(2)
	go func(pc net.PacketConn, up string) { defer c.wg.Done(); c.serveUDP(pc, up) }(c.udp, c.upstream)
	go func(l net.Listener, up string) { defer c.wg.Done(); c.serveTCP(l, up) }(c.tcp, c.upstream)
	return nil
}

// steerLocked attaches the program that sends every query and connection to
// an index that is not the cover's: 0, or 1 when the cover is at 0 (alone,
// the index is past the end and the kernel picks the cover).
func (c *Cover) steerLocked() error {
	idx := 0
	if slices.Index(c.order, c.udpIno) == 0 {
		idx = 1
	}
	if idx == c.steer {
		return nil
	}
	prog := []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: uint32(idx)}} // #nosec G115 -- 0 or 1
	fprog := &unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	for _, s := range []syscall.Conn{c.udp.(syscall.Conn), c.tcp.(syscall.Conn)} {
		rc, err := s.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF, fprog)
		}); err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("node-local cover: cannot steer the port to the cache (SO_ATTACH_REUSEPORT_CBPF): %w", serr)
		}
	}
	c.steer = idx
	return nil
}

// Refresh looks at the port once: it says whether the cache's socket is
// bound beside the cover (then the cache gets every query; else the cover
// answers), follows the port's group to keep the steering right (binding
// again when it cannot), and keeps the address local: on lo when the
// interface that held it went away, off lo once another interface holds it
// again.
func (c *Cover) Refresh(ctx context.Context) (cacheBound bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.udp == nil {
		return false, nil
	}
	now, err := c.cacheSockets()
	if err != nil {
		return false, err
	}
	var left, joined []uint64
	for _, ino := range c.order {
		if ino != c.udpIno && !now[ino] {
			left = append(left, ino)
		}
	}
	for _, ino := range slices.Sorted(maps.Keys(now)) {
		if !slices.Contains(c.order, ino) {
			joined = append(joined, ino)
		}
	}
	received := c.received.Load()
	wrong := c.stable && len(left) == 0 && len(joined) == 0 && len(now) > 0 && received > c.seen
	switch {
	case len(left) > 0 && len(joined) > 0, wrong:
		// The order is unknown, or the cover still gets queries beside the
		// cache: bind again, last.
		c.o.Log.V(1).Info("cover: binding again behind the cache's sockets", "left", len(left), "joined", len(joined), "misrouted", wrong)
		if err := c.closeSocketsLocked(); err != nil {
			return len(now) > 0, err
		}
		if err := c.bindLocked(ctx); err != nil {
			return len(now) > 0, err
		}
	default:
		for _, ino := range left { // the kernel moves the last socket into the slot
			i := slices.Index(c.order, ino)
			c.order[i] = c.order[len(c.order)-1]
			c.order = c.order[:len(c.order)-1]
		}
		c.order = append(c.order, joined...)
		c.stable = len(left) == 0 && len(joined) == 0
		c.seen = received
		if err := c.steerLocked(); err != nil {
			return len(now) > 0, err
		}
	}
	elsewhere, err := c.o.Links.HasLocal(c.o.Address, coverLabel)
	if err != nil {
		return len(now) > 0, err
	}
	switch {
	case c.added && elsewhere:
		if err := c.o.Links.Del(c.o.Address, coverLabel); err != nil {
			return len(now) > 0, fmt.Errorf("node-local cover: cannot take %s (%s) off lo: %w", c.o.Address, coverLabel, err)
		}
		c.added = false
	case !c.added && !elsewhere:
		if err := c.o.Links.Add(c.o.Address, coverLabel); err != nil {
			return len(now) > 0, fmt.Errorf("node-local cover: %s left the node and cannot be added to lo: %w", c.o.Address, err)
		}
		c.added = true
	}
	return len(now) > 0, nil
}

// Stop closes the sockets, waits for the forwarder to stop accepting,
// and removes the address if the cover added it.
func (c *Cover) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeLocked()
}

func (c *Cover) closeLocked() error {
	errs := []error{c.closeSocketsLocked()}
	c.upstream = ""
	if c.added {
		if err := c.o.Links.Del(c.o.Address, coverLabel); err != nil {
			errs = append(errs, fmt.Errorf("node-local cover: cannot remove %s (%s) from lo: %w", c.o.Address, coverLabel, err))
		} else {
			c.added = false
		}
	}
	return errors.Join(errs...)
}

// closeSocketsLocked closes the sockets and waits for the forwarder.
func (c *Cover) closeSocketsLocked() error {
	var errs []error
	if c.udp != nil {
		errs = append(errs, c.udp.Close())
	}
	if c.tcp != nil {
		errs = append(errs, c.tcp.Close())
	}
	c.wg.Wait()
	c.udp, c.tcp, c.own, c.order, c.udpIno = nil, nil, nil, nil, 0
	return errors.Join(errs...)
}

// cacheSockets are the inodes of the UDP sockets bound to the address and
// port that are not the cover's: the cache's. Wildcard listeners do not
// count (they do not take the cache's address from a more specific bind).
func (c *Cover) cacheSockets() (map[uint64]bool, error) {
	socks, err := c.o.Proc.udpListeners()
	if err != nil {
		return nil, err
	}
	out := map[uint64]bool{}
	for _, s := range socks {
		if s.addr == netip.AddrPortFrom(c.o.Address, uint16(c.o.Port)) && !c.own[s.inode] {
			out[s.inode] = true
		}
	}
	return out, nil
}

// CacheListening says whether a socket other than the cover's listens at
// the address (UDP), whether or not the cover runs.
func (c *Cover) CacheListening() (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, err := c.cacheSockets()
	return len(s) > 0, err
}

func (c *Cover) serveUDP(pc net.PacketConn, up string) {
	buf := make([]byte, 65535)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return // closed
		}
		c.received.Add(1)
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
