package network

import (
	"crypto/sha256"
	"fmt"
	"net"
	"net/netip"
)

// Allocate returns the lowest address of cidr that is neither the network
// address, the broadcast address, gateway, nor in inUse. In a /31 both
// addresses are hosts (RFC 3021); in a /32 the single address is. Allocate
// is pure: callers hold the lease table and serialise allocations.
//
// When nothing is free the error wraps ErrExhausted, says how many
// addresses are in use and suggests a wider cidr.
func Allocate(cidr netip.Prefix, gateway netip.Addr, inUse map[netip.Addr]bool) (netip.Addr, error) {
	if !cidr.IsValid() || !cidr.Addr().Is4() {
		return netip.Addr{}, fmt.Errorf("cidr %q: must be an IPv4 prefix", cidr)
	}
	cidr = cidr.Masked()
	first, last := hostRange(cidr)
	used := 0
	for a := first; ; a = a.Next() {
		switch {
		case a == gateway:
		case inUse[a]:
			used++
		default:
			return a, nil
		}
		if a == last {
			break
		}
	}
	return netip.Addr{}, fmt.Errorf("%w: all %d addresses of %s are in use; set a wider cidr in config.toml, e.g. %s",
		ErrExhausted, used, cidr, widen(cidr))
}

// hostRange returns the first and last usable host address of an IPv4 cidr.
func hostRange(cidr netip.Prefix) (first, last netip.Addr) {
	first, last = cidr.Addr(), lastAddr(cidr)
	if cidr.Bits() >= 31 {
		return first, last
	}
	return first.Next(), last.Prev()
}

// lastAddr returns the highest address (the broadcast address) of cidr.
func lastAddr(cidr netip.Prefix) netip.Addr {
	a := cidr.Masked().Addr().As4()
	host := uint32(1)<<(32-cidr.Bits()) - 1
	if cidr.Bits() == 0 {
		host = ^uint32(0)
	}
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v |= host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// widen returns cidr with four fewer prefix bits (16 times the addresses),
// but never wider than a /8.
func widen(cidr netip.Prefix) netip.Prefix {
	bits := max(cidr.Bits()-4, 8)
	return netip.PrefixFrom(cidr.Addr(), bits).Masked()
}

// MACFor returns the MAC address of vmID's NIC: locally administered,
// unicast (first octet 0x02), second octet 0xbe, and four bytes of the
// SHA-256 of vmID. The same id always yields the same MAC.
func MACFor(vmID string) net.HardwareAddr {
	sum := sha256.Sum256([]byte(vmID))
	return net.HardwareAddr{0x02, 0xbe, sum[0], sum[1], sum[2], sum[3]}
}
