package api

// Egress modes of a VM (NetPolicy.Mode).
const (
	NetNAT   = "nat"   // the default: the guest reaches what the host reaches, masqueraded
	NetNone  = "none"  // nothing leaves the bridge (see docs/networking.md)
	NetAllow = "allow" // only NetPolicy.Allow
)

// NetPolicy is a VM's egress policy, enforced on the host in banger's
// nftables table. The zero value is the default: nat, not isolated.
type NetPolicy struct {
	Mode string `json:"mode,omitempty"` // NetNAT (also when empty), NetNone or NetAllow
	// Allow are the destinations of NetAllow, as given: HOST, IP or CIDR,
	// each optionally with :PORT.
	Allow []string `json:"allow,omitempty"`
	// Isolate cuts the VM off from the other VMs on the bridge.
	Isolate bool `json:"isolate,omitempty"`
	// Resolved are the addresses Allow's host names resolved to when the
	// rules were last written (shown by vm inspect; never stored as the
	// policy).
	Resolved map[string][]string `json:"resolved,omitempty"`
}

// PortForward forwards a host port to a guest port of a VM.
type PortForward struct {
	Proto     string `json:"proto"`     // "tcp" or "udp"
	HostAddr  string `json:"host_addr"` // default 127.0.0.1
	HostPort  int    `json:"host_port"`
	GuestPort int    `json:"guest_port"`
	// Active says the daemon listens on it now (the VM runs).
	Active bool `json:"active,omitempty"`
}

// AddPortsRequest is the body of POST /v1/vms/{name}/ports: forwards in
// -p syntax ([HOST_ADDR:]HOST_PORT:GUEST_PORT[/tcp|/udp]).
type AddPortsRequest struct {
	Ports []string `json:"ports"`
}

// SetNetRequest is the body of POST /v1/vms/{name}/net: the policy in
// --net syntax (nat, none, allow=HOST[,HOST|CIDR[:PORT]...]); Isolate
// nil leaves the VM's isolation as it is.
type SetNetRequest struct {
	Net     string `json:"net,omitempty"`
	Isolate *bool  `json:"isolate,omitempty"`
}
