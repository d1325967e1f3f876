package network

import (
	"encoding/binary"
	"net"
	"net/netip"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The matches banger's rules are made of, each the expressions nft itself
// generates for the match named in its comment. Every one loads into
// register 1 and compares; a rule is matches followed by a verdict.

var zero4 = []byte{0, 0, 0, 0}

// iif matches `iifname NAME`; a NAME ending in * matches its prefix.
func iif(name string) []expr.Any { return ifMatch(expr.MetaKeyIIFNAME, name, expr.CmpOpEq) }

// oif matches `oifname NAME`.
func oif(name string) []expr.Any { return ifMatch(expr.MetaKeyOIFNAME, name, expr.CmpOpEq) }

func ifMatch(key expr.MetaKey, name string, op expr.CmpOp) []expr.Any {
	data := ifname(name)
	if n := len(name); n > 0 && name[n-1] == '*' {
		data = []byte(name[:n-1])
	}
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: data},
	}
}

// ipAddr matches `ip saddr ADDR` (offset 12) or `ip daddr ADDR` (16), as
// a prefix when p is shorter than /32.
func ipAddr(offset uint32, p netip.Prefix, op expr.CmpOp) []expr.Any {
	p = p.Masked()
	a := p.Addr().As4()
	out := []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4}}
	if p.Bits() < 32 {
		mask := net4(p.Bits())
		out = append(out, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask[:], Xor: zero4})
	}
	return append(out, &expr.Cmp{Op: op, Register: 1, Data: a[:]})
}

func saddr(a netip.Addr) []expr.Any  { return ipAddr(12, netip.PrefixFrom(a, 32), expr.CmpOpEq) }
func daddr(a netip.Addr) []expr.Any  { return ipAddr(16, netip.PrefixFrom(a, 32), expr.CmpOpEq) }
func dnet(p netip.Prefix) []expr.Any { return ipAddr(16, p, expr.CmpOpEq) }

// l4proto matches `meta l4proto PROTO`.
func l4proto(proto byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
}

// dport matches `tcp dport PORT` or `udp dport PORT` (proto given).
func dport(proto byte, port uint16) []expr.Any {
	return append(l4proto(proto),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, port)})
}

// icmpEcho matches `icmp type echo-request`.
func icmpEcho() []expr.Any {
	return append(l4proto(unix.IPPROTO_ICMP),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{8}})
}

// ctEstablished matches `ct state established,related`.
func ctEstablished() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: native32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED), Xor: zero4},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: zero4},
	}
}

// The bridge family's matches on the Ethernet header and ARP.

const (
	etherTypeIP  = 0x0800
	etherTypeARP = 0x0806
)

// etherType matches `ether type T`. A VLAN-tagged frame shows 0x8100.
func etherType(t uint16) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 12, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, t)},
	}
}

// etherSaddr matches `ether saddr MAC` (or != with op).
func etherSaddr(mac net.HardwareAddr, op expr.CmpOp) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 6, Len: 6},
		&expr.Cmp{Op: op, Register: 1, Data: []byte(mac)},
	}
}

// arpSender matches `arp saddr ether MAC arp saddr ip ADDR`: the sender
// fields of an ARP packet over Ethernet and IPv4.
func arpSender(mac net.HardwareAddr, a netip.Addr) []expr.Any {
	ip := a.As4()
	return append(etherType(etherTypeARP),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 8, Len: 6},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(mac)},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 14, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ip[:]})
}

// Verdicts.

func accept() expr.Any { return &expr.Verdict{Kind: expr.VerdictAccept} }
func drop() expr.Any   { return &expr.Verdict{Kind: expr.VerdictDrop} }
func jump(chain string) expr.Any {
	return &expr.Verdict{Kind: expr.VerdictJump, Chain: chain}
}

// cat joins matches and a verdict into one rule's expressions.
func cat(parts ...any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		switch v := p.(type) {
		case []expr.Any:
			out = append(out, v...)
		case expr.Any:
			out = append(out, v)
		}
	}
	return out
}
