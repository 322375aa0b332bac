package node

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// Netlink changes the node's addresses over rtnetlink (the agent runs in
// the host network namespace); it is the cover's AddressLinks.
type Netlink struct{}

// HasLocal implements AddressLinks.
func (Netlink) HasLocal(addr netip.Addr, except string) (bool, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return false, err
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == addr && (except == "" || a.Label != except) {
			return true, nil
		}
	}
	return false, nil
}

func hostNet(addr netip.Addr, label string) (netlink.Link, *netlink.Addr, error) {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return nil, nil, fmt.Errorf("link lo: %w", err)
	}
	return lo, &netlink.Addr{IPNet: &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(addr.BitLen(), addr.BitLen())}, Label: label}, nil
}

// Add implements AddressLinks: addr as a host address on lo.
func (Netlink) Add(addr netip.Addr, label string) error {
	lo, a, err := hostNet(addr, label)
	if err != nil {
		return err
	}
	return netlink.AddrAdd(lo, a)
}

// Del implements AddressLinks.
func (Netlink) Del(addr netip.Addr, label string) error {
	lo, a, err := hostNet(addr, label)
	if err != nil {
		return err
	}
	return netlink.AddrDel(lo, a)
}
