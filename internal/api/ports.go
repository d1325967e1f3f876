package api

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// PortSyntax is the form of a -p spec, Docker's.
const PortSyntax = "[HOST_ADDR:]HOST_PORT:GUEST_PORT[/tcp|/udp]"

// DefaultPortAddr is where a forward listens when its spec names no
// address: loopback, so nothing beyond this host reaches the guest unless
// asked for with an explicit address (0.0.0.0 for every interface).
const DefaultPortAddr = "127.0.0.1"

// portExamples is said with every malformed spec.
const portExamples = "e.g. 8080:80, 127.0.0.1:8080:80/tcp, 0.0.0.0:5353:53/udp or [::1]:8080:80"

// ParsePortForward reads a -p spec, [HOST_ADDR:]HOST_PORT:GUEST_PORT[/tcp|/udp].
// HOST_ADDR is an IP address (IPv6 in brackets), 127.0.0.1 when left out;
// the protocol is tcp when left out. Errors are InvalidArgument and show
// the accepted forms.
func ParsePortForward(spec string) (PortForward, error) {
	p, guest, err := parsePort(spec)
	if err != nil {
		return PortForward{}, err
	}
	if !guest {
		return PortForward{}, badPort(spec, "no GUEST_PORT")
	}
	return p, nil
}

// ParsePortKey reads the forward a spec names for removal: the forms of
// ParsePortForward, or without the guest port ([HOST_ADDR:]HOST_PORT[/tcp|/udp]).
// GuestPort is 0 when the spec has none.
func ParsePortKey(spec string) (PortForward, error) {
	p, _, err := parsePort(spec)
	return p, err
}

// parsePort reads either form; guest says whether a GUEST_PORT was given.
func parsePort(spec string) (p PortForward, guest bool, err error) {
	rest := strings.TrimSpace(spec)
	p.Proto, p.HostAddr = "tcp", DefaultPortAddr
	if i := strings.LastIndexByte(rest, '/'); i >= 0 {
		p.Proto = strings.ToLower(rest[i+1:])
		rest = rest[:i]
		if p.Proto != "tcp" && p.Proto != "udp" {
			return p, false, badPort(spec, fmt.Sprintf("protocol %q is neither tcp nor udp", p.Proto))
		}
	}
	if strings.HasPrefix(rest, "[") {
		end := strings.Index(rest, "]:")
		if end < 0 {
			return p, false, badPort(spec, "an IPv6 HOST_ADDR in brackets must be followed by :HOST_PORT")
		}
		if p.HostAddr, err = hostAddr(spec, rest[1:end], true); err != nil {
			return p, false, err
		}
		rest = rest[end+2:]
	}
	parts := strings.Split(rest, ":")
	switch {
	case len(parts) == 3 && !strings.HasPrefix(spec, "["):
		if p.HostAddr, err = hostAddr(spec, parts[0], false); err != nil {
			return p, false, err
		}
		parts = parts[1:]
	case len(parts) == 2 && !strings.HasPrefix(spec, "[") && isIP(parts[0]):
		// HOST_ADDR:HOST_PORT, the short form of a removal.
		if p.HostAddr, err = hostAddr(spec, parts[0], false); err != nil {
			return p, false, err
		}
		parts = parts[1:]
	case len(parts) > 2 || (len(parts) == 2 && isIP(parts[0])):
		return p, false, badPort(spec, "too many ':'")
	}
	if p.HostPort, err = portNumber(spec, "HOST_PORT", parts[0]); err != nil {
		return p, false, err
	}
	if len(parts) == 2 {
		if p.GuestPort, err = portNumber(spec, "GUEST_PORT", parts[1]); err != nil {
			return p, false, err
		}
		guest = true
	}
	return p, guest, nil
}

func isIP(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}

// hostAddr checks an address to listen on; an IPv6 one must have come in
// brackets (bracketed).
func hostAddr(spec, s string, bracketed bool) (string, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return "", badPort(spec, fmt.Sprintf("HOST_ADDR %q is not an IP address (host names are not taken)", s))
	}
	a = a.Unmap()
	if a.Is6() && !bracketed {
		return "", badPort(spec, "put an IPv6 HOST_ADDR in brackets")
	}
	return a.String(), nil
}

func portNumber(spec, what, s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 {
		return 0, badPort(spec, fmt.Sprintf("%s %q is not a port number between 1 and 65535", what, s))
	}
	return n, nil
}

func badPort(spec, why string) *Error {
	return Errorf(InvalidArgument, "port forward %q: %s; use %s (%s)", spec, why, PortSyntax, portExamples)
}

// Key names the host side of p, which is what makes it unique on the
// host: "127.0.0.1:8080/tcp", "[::1]:8080/tcp".
func (p PortForward) Key() string { return p.Host() + "/" + p.Proto }

// Host is where p listens: "127.0.0.1:8080", "[::1]:8080".
func (p PortForward) Host() string {
	a, err := netip.ParseAddr(p.HostAddr)
	if err != nil {
		return fmt.Sprintf("%s:%d", p.HostAddr, p.HostPort)
	}
	return netip.AddrPortFrom(a, uint16(p.HostPort)).String()
}

// String is p in -p syntax, with every part spelled out.
func (p PortForward) String() string {
	a := p.HostAddr
	if strings.Contains(a, ":") {
		a = "[" + a + "]"
	}
	return fmt.Sprintf("%s:%d:%d/%s", a, p.HostPort, p.GuestPort, p.Proto)
}
