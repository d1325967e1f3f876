package guest

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"
)

// Reidentify gives a guest restored from a memory snapshot its own
// identity (see OpReidentify): it returns once the agent has applied all
// of req, or an error naming the part that failed (a *RemoteError from the
// agent, or an invalid request refused before it is sent). With
// req.AgentKey set, the agent authenticates every later connection with
// that key; this Client's connection stays up.
func (c *Client) Reidentify(ctx context.Context, req ReidentifyRequest) error {
	if err := req.Validate(); err != nil {
		return err
	}
	// Not a oneShot: the agent answers once all of it is applied (host
	// keys made, sshd restarted), which the caller's ctx bounds.
	cl, err := c.start(ctx, Request{Op: OpReidentify, Reidentify: &req})
	if err == nil {
		_, err = cl.response()
		cl.close()
	}
	var re *RemoteError
	if err != nil && !errors.As(err, &re) { // the agent's own errors say "reidentify" already
		return fmt.Errorf("reidentify: %w", err)
	}
	return err
}

// hostnameRE is an RFC 1123 host name: dot-separated labels of letters,
// digits and inner hyphens.
var hostnameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$`)

// machineIDRE is a systemd machine id.
var machineIDRE = regexp.MustCompile(`^[0-9a-f]{32}$`)

// maxHostKey bounds the host key fields (an ed25519 key is ~400 bytes).
const maxHostKey = 16 << 10

// Validate checks every field of r. The error is a KindInvalid
// *RemoteError naming the field and what it must be; nothing in the guest
// changes for a request that fails it.
func (r ReidentifyRequest) Validate() error {
	_, err := r.Parse()
	return err
}

// Identity is a validated ReidentifyRequest in parsed form.
type Identity struct {
	MAC      net.HardwareAddr
	Address  netip.Prefix
	Gateway  netip.Addr
	DNS      []netip.Addr
	AgentKey []byte // nil: keep the current key
}

// Parse validates r (see Validate) and returns its network and key fields
// parsed.
func (r ReidentifyRequest) Parse() (Identity, error) {
	var id Identity
	bad := func(field, format string, args ...any) (Identity, error) {
		return Identity{}, &RemoteError{Kind: KindInvalid,
			Message: fmt.Sprintf("reidentify: bad %s: %s", field, fmt.Sprintf(format, args...))}
	}
	if r.Time.IsZero() {
		return bad("time", "missing (the host's current time)")
	}
	if len(r.Hostname) > 64 || !hostnameRE.MatchString(r.Hostname) {
		return bad("hostname", "%q: use up to 64 letters, digits, '-' and '.', a label not starting or ending with '-'", r.Hostname)
	}
	mac, err := net.ParseMAC(r.MAC)
	if err != nil || len(mac) != 6 {
		return bad("mac", "%q: want six hex bytes like 02:42:ac:10:00:05", r.MAC)
	}
	if mac[0]&1 != 0 || strings.Trim(mac.String(), "0:") == "" {
		return bad("mac", "%s: want a unicast address (an even first byte) other than 00:00:00:00:00:00", mac)
	}
	id.MAC = mac
	if id.Address, err = netip.ParsePrefix(r.Address); err != nil || !id.Address.Addr().Is4() {
		return bad("address", "%q: want an IPv4 address with its prefix length, like 172.16.0.5/24", r.Address)
	}
	if id.Address.Bits() == 0 || id.Address.Bits() > 32 {
		return bad("address", "%s: want a prefix length of 1 to 32", id.Address)
	}
	if id.Gateway, err = netip.ParseAddr(r.Gateway); err != nil || !id.Gateway.Is4() {
		return bad("gateway", "%q: want an IPv4 address, like 172.16.0.1", r.Gateway)
	}
	if !id.Address.Contains(id.Gateway) || id.Gateway == id.Address.Addr() {
		return bad("gateway", "%s is not another address inside %s", id.Gateway, id.Address.Masked())
	}
	for _, d := range r.DNS {
		a, err := netip.ParseAddr(d)
		if err != nil {
			return bad("dns", "%q: want an IP address", d)
		}
		id.DNS = append(id.DNS, a)
	}
	if !machineIDRE.MatchString(r.MachineID) || strings.Trim(r.MachineID, "0") == "" {
		return bad("machine_id", "%q: want 32 lowercase hex digits, not all zero", r.MachineID)
	}
	if !strings.HasPrefix(strings.TrimSpace(r.HostKey), "-----BEGIN OPENSSH PRIVATE KEY-----") || len(r.HostKey) > maxHostKey {
		return bad("host_key", "want an OpenSSH private key (-----BEGIN OPENSSH PRIVATE KEY-----) of at most %d bytes", maxHostKey)
	}
	pub := strings.TrimSpace(r.HostKeyPub)
	if !strings.HasPrefix(pub, "ssh-ed25519 ") || strings.ContainsAny(pub, "\n\r") || len(pub) > maxHostKey {
		return bad("host_key_pub", "want one line starting with ssh-ed25519")
	}
	if r.AgentKey != "" {
		k, err := hex.DecodeString(r.AgentKey)
		if err != nil || len(k) != KeySize {
			return bad("agent_key", "want %d bytes as hex", KeySize)
		}
		id.AgentKey = k
	}
	return id, nil
}
