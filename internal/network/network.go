// Package network gives every banger VM a place on the host network: a
// bridge carrying the gateway address, one persistent tap per VM NIC,
// addresses allocated from the configured cidr, deterministic MACs, and
// egress through a masquerade rule kept in banger's own nftables table.
//
// Everything is done through netlink (vishvananda/netlink) and nftables
// (google/nftables); nothing shells out to ip or iptables. A Manager acts on
// the network namespace of the calling OS thread, so a daemon that runs
// inside a namespace (ip netns exec) manages that namespace only. Every host
// change is an idempotent step: it looks first and acts only when the host
// differs from what is wanted.
package network

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
)

// Defaults used when Config leaves a field empty.
const (
	DefaultBridgeName = "banger0"
	DefaultTapPrefix  = "bgtap"
	// TableName is the nftables table (family ip) that holds all of
	// banger's rules. banger never reads or writes any other table's rules.
	TableName = "banger"
)

// ifNameMax is the longest interface name Linux accepts (IFNAMSIZ - 1).
const ifNameMax = 15

// tapSuffixLen is the number of hex characters appended to TapPrefix.
const tapSuffixLen = 8

// Sentinel errors. Returned errors wrap them, so callers use errors.Is.
var (
	// ErrNotOurs reports a link that exists under banger's name but was
	// not created by banger (or is not a bridge).
	ErrNotOurs = errors.New("link exists but is not banger's")
	// ErrOverlap reports a cidr that collides with a route on the host.
	ErrOverlap = errors.New("overlaps the host route")
	// ErrExhausted reports that every address of the cidr is leased.
	ErrExhausted = errors.New("address pool exhausted")
	// ErrNoTun reports a missing /dev/net/tun.
	ErrNoTun = errors.New("/dev/net/tun is missing")
	// ErrNoNetAdmin reports that the process lacks CAP_NET_ADMIN.
	ErrNoNetAdmin = errors.New("CAP_NET_ADMIN is missing")
	// ErrNotExist reports a tap that does not exist or is not banger's.
	ErrNotExist = errors.New("not found")
)

// Config describes the host network banger manages.
type Config struct {
	BridgeName string       // default DefaultBridgeName
	BridgeIP   netip.Addr   // gateway address of the guests, inside CIDR
	CIDR       netip.Prefix // guest address range, e.g. 172.16.0.0/24
	TapPrefix  string       // default DefaultTapPrefix, at most 7 characters
	PoolSize   int          // number of spare taps FillPool keeps ready
	// TapOwner and TapGroup own the taps banger creates (TUNSETOWNER):
	// a VMM that runs as this user (the Firecracker jailer's --uid) can
	// then open them. Default 0: root, as a VMM that drops privileges only
	// after opening its tap (QEMU -runas) needs.
	TapOwner, TapGroup uint32
	Logger             *slog.Logger // default: discard
}

// Manager owns banger's bridge, taps and NAT rules in the network namespace
// of the calling thread. It is safe for concurrent use.
type Manager struct {
	cfg Config
	log *slog.Logger

	// tunPath and hasNetAdmin are fixed at construction; tests replace them.
	tunPath     string
	hasNetAdmin func() (bool, error)
	forwardPath string

	// tapMu serialises tap creation, pool hand-out and deletion so that
	// two acquires never take the same pool tap.
	tapMu sync.Mutex
	// ruleMu serialises writes of per-guest rules, each of which reads
	// the shared chains and then replaces the guest's rules in them.
	ruleMu sync.Mutex
}

// New validates cfg, fills defaults and returns a Manager. It touches
// nothing on the host.
func New(cfg Config) (*Manager, error) {
	if cfg.BridgeName == "" {
		cfg.BridgeName = DefaultBridgeName
	}
	if cfg.TapPrefix == "" {
		cfg.TapPrefix = DefaultTapPrefix
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if len(cfg.BridgeName) > ifNameMax {
		return nil, fmt.Errorf("bridge_name %q is longer than %d characters", cfg.BridgeName, ifNameMax)
	}
	if n := ifNameMax - tapSuffixLen; len(cfg.TapPrefix) > n {
		return nil, fmt.Errorf("tap prefix %q is longer than %d characters", cfg.TapPrefix, n)
	}
	if !cfg.CIDR.IsValid() || !cfg.CIDR.Addr().Is4() {
		return nil, fmt.Errorf("cidr %q: must be an IPv4 prefix such as 172.16.0.0/24", cfg.CIDR)
	}
	cfg.CIDR = cfg.CIDR.Masked()
	if cfg.CIDR.Bits() > 30 {
		return nil, fmt.Errorf("cidr %s is too small for a bridge and a guest; use /30 or wider", cfg.CIDR)
	}
	if !cfg.CIDR.Contains(cfg.BridgeIP) {
		return nil, fmt.Errorf("bridge_ip %s is not inside cidr %s", cfg.BridgeIP, cfg.CIDR)
	}
	if cfg.BridgeIP == cfg.CIDR.Addr() || cfg.BridgeIP == lastAddr(cfg.CIDR) {
		return nil, fmt.Errorf("bridge_ip %s is the network or broadcast address of %s", cfg.BridgeIP, cfg.CIDR)
	}
	if cfg.PoolSize < 0 {
		return nil, fmt.Errorf("tap_pool_size %d is negative", cfg.PoolSize)
	}
	return &Manager{
		cfg:         cfg,
		log:         cfg.Logger,
		tunPath:     "/dev/net/tun",
		hasNetAdmin: hasNetAdmin,
		forwardPath: "/proc/sys/net/ipv4/ip_forward",
	}, nil
}

// Config returns the configuration in use, defaults filled.
func (m *Manager) Config() Config { return m.cfg }

// Allocate returns the lowest free guest address of the Manager's cidr;
// see Allocate.
func (m *Manager) Allocate(inUse map[netip.Addr]bool) (netip.Addr, error) {
	return Allocate(m.cfg.CIDR, m.cfg.BridgeIP, inUse)
}

// GuestConfig returns the network settings of a guest at addr.
func (m *Manager) GuestConfig(addr netip.Addr, dns []netip.Addr) GuestConfig {
	return GuestConfig{
		Address: netip.PrefixFrom(addr, m.cfg.CIDR.Bits()),
		Gateway: m.cfg.BridgeIP,
		DNS:     dns,
	}
}

// Setup readies the host for VMs, as the daemon does at start: Preflight,
// EnsureBridge, EnsureForwarding, EnsureNAT, then FillPool. Each step is
// idempotent, so Setup is too.
func (m *Manager) Setup(ctx context.Context) error {
	if err := m.EnsureBridge(ctx); err != nil { // runs Preflight first
		return err
	}
	if _, err := m.EnsureForwarding(ctx); err != nil {
		return err
	}
	if _, err := m.EnsureNAT(ctx); err != nil {
		return err
	}
	if _, err := m.FillPool(ctx); err != nil {
		return fmt.Errorf("filling tap pool: %w", err)
	}
	return nil
}
