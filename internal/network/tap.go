package network

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/vishvananda/netlink"
)

// Tap aliases (ifalias) record who a tap belongs to, so a restarted daemon
// maps taps back to VMs.
const (
	poolAlias     = "banger:pool"
	vmAliasPrefix = "banger:vm:"
)

// Tap is one of banger's tap devices.
type Tap struct {
	Name  string `json:"name"`
	VMID  string `json:"vm_id,omitempty"` // empty for pool taps and orphans
	Pool  bool   `json:"pool,omitempty"`  // a spare, not yet handed to a VM
	State string `json:"state"`           // operational state, e.g. "up", "down"
}

// AcquireTap returns the tap of vmID: the one it already has (so a retried
// create reuses it), else a spare from the pool, else a new persistent tap
// named TapPrefix+8 hex characters. The tap is attached to the bridge and
// up. EnsureBridge must have run. Call FillPool afterwards to replace a
// spare that was taken.
func (m *Manager) AcquireTap(ctx context.Context, vmID string) (string, error) {
	if vmID == "" || len(vmID) > 200 || strings.ContainsAny(vmID, "\n\x00") {
		return "", fmt.Errorf("acquiring tap: invalid vm id %q", vmID)
	}
	m.tapMu.Lock()
	defer m.tapMu.Unlock()
	if err := ctx.Err(); err != nil {
		return "", err
	}
	br, err := m.bridge()
	if err != nil {
		return "", err
	}
	if br == nil {
		return "", fmt.Errorf("acquiring tap: bridge %s does not exist (EnsureBridge first)", m.cfg.BridgeName)
	}
	taps, err := m.listTaps()
	if err != nil {
		return "", err
	}
	// The VM's own tap first, then a spare. Either is re-marked, attached
	// and brought up again, which costs nothing when it already is.
	for _, pool := range []bool{false, true} {
		for _, t := range taps {
			if (pool && !t.Pool) || (!pool && t.VMID != vmID) {
				continue
			}
			l, err := netlink.LinkByName(t.Name)
			if err != nil {
				continue // gone since the listing: try the next one
			}
			if err := m.setupTap(l, br, vmAliasPrefix+vmID); err != nil {
				return "", fmt.Errorf("assigning tap %s to %s: %w", t.Name, vmID, err)
			}
			if pool {
				m.log.Info("tap taken from pool", "tap", t.Name, "vm", vmID)
			}
			return t.Name, nil
		}
	}
	name, err := m.createTap(ctx, vmAliasPrefix+vmID)
	if err != nil {
		return "", err
	}
	m.log.Info("tap created", "tap", name, "vm", vmID)
	return name, nil
}

// FillPool creates spare taps until PoolSize of them exist and returns how
// many it created.
func (m *Manager) FillPool(ctx context.Context) (int, error) {
	m.tapMu.Lock()
	defer m.tapMu.Unlock()
	taps, err := m.listTaps()
	if err != nil {
		return 0, err
	}
	spare := 0
	for _, t := range taps {
		if t.Pool {
			spare++
		}
	}
	created := 0
	for ; spare < m.cfg.PoolSize; spare++ {
		if _, err := m.createTap(ctx, poolAlias); err != nil {
			return created, err
		}
		created++
	}
	return created, nil
}

// ReleaseTap deletes one of banger's taps. Releasing a tap that is already
// gone is not an error; a link of that name that is not banger's is
// refused.
func (m *Manager) ReleaseTap(ctx context.Context, name string) error {
	m.tapMu.Lock()
	defer m.tapMu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	l, err := netlink.LinkByName(name)
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("looking up tap %s: %w", name, err)
	}
	if !m.isOurTap(l) {
		return fmt.Errorf("releasing tap %s: %w", name, ErrNotOurs)
	}
	return m.deleteTap(l)
}

// ListTaps returns banger's taps, sorted by name.
func (m *Manager) ListTaps(ctx context.Context) ([]Tap, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return m.listTaps()
}

// Reconcile deletes the taps of VMs not in keepVMIDs and taps left without
// an owner by a crash between creation and marking; spares stay. It
// returns the taps it removed.
func (m *Manager) Reconcile(ctx context.Context, keepVMIDs map[string]bool) ([]Tap, error) {
	m.tapMu.Lock()
	defer m.tapMu.Unlock()
	taps, err := m.listTaps()
	if err != nil {
		return nil, err
	}
	var removed []Tap
	for _, t := range taps {
		if err := ctx.Err(); err != nil {
			return removed, err
		}
		if t.Pool || keepVMIDs[t.VMID] {
			continue
		}
		l, err := netlink.LinkByName(t.Name)
		if err != nil {
			continue
		}
		if err := m.deleteTap(l); err != nil {
			return removed, err
		}
		m.log.Info("stale tap removed", "tap", t.Name, "vm", t.VMID)
		removed = append(removed, t)
	}
	return removed, nil
}

func (m *Manager) listTaps() ([]Tap, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("listing links: %w", err)
	}
	out := []Tap{}
	for _, l := range links {
		if !m.isOurTap(l) {
			continue
		}
		a := l.Attrs()
		t := Tap{Name: a.Name, State: a.OperState.String(), Pool: a.Alias == poolAlias}
		t.VMID, _ = strings.CutPrefix(a.Alias, vmAliasPrefix)
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// isOurTap reports whether l is a tap that banger created: a tuntap whose
// name has TapPrefix followed by the generated suffix, and whose alias is
// banger's or empty (a crash right after creation leaves it empty).
func (m *Manager) isOurTap(l netlink.Link) bool {
	a := l.Attrs()
	suffix, ok := strings.CutPrefix(a.Name, m.cfg.TapPrefix)
	if !ok || len(suffix) != tapSuffixLen || l.Type() != "tuntap" {
		return false
	}
	if _, err := hex.DecodeString(suffix); err != nil {
		return false
	}
	return a.Alias == "" || a.Alias == poolAlias || strings.HasPrefix(a.Alias, vmAliasPrefix)
}

// createTap makes a persistent tap with the given alias, attached to the
// bridge and up. A half-made tap is deleted again.
func (m *Manager) createTap(ctx context.Context, alias string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	br, err := m.bridge()
	if err != nil {
		return "", err
	}
	if br == nil {
		return "", fmt.Errorf("creating tap: bridge %s does not exist (EnsureBridge first)", m.cfg.BridgeName)
	}
	var suffix [tapSuffixLen / 2]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		return "", fmt.Errorf("naming tap: %w", err)
	}
	la := netlink.NewLinkAttrs()
	la.Name = m.cfg.TapPrefix + hex.EncodeToString(suffix[:])
	tap := &netlink.Tuntap{
		LinkAttrs: la,
		Mode:      netlink.TUNTAP_MODE_TAP,
		Flags:     netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR,
		Owner:     m.cfg.TapOwner,
		Group:     m.cfg.TapGroup,
	}
	if err := netlink.LinkAdd(tap); err != nil {
		return "", fmt.Errorf("creating tap %s: %w", la.Name, err)
	}
	l, err := netlink.LinkByName(la.Name)
	if err == nil {
		err = m.setupTap(l, br, alias)
	}
	if err != nil {
		if l != nil {
			_ = netlink.LinkDel(l)
		}
		return "", fmt.Errorf("setting up tap %s: %w", la.Name, err)
	}
	return la.Name, nil
}

func (m *Manager) setupTap(l, br netlink.Link, alias string) error {
	if err := netlink.LinkSetAlias(l, alias); err != nil {
		return fmt.Errorf("marking: %w", err)
	}
	if err := netlink.LinkSetMaster(l, br); err != nil {
		return fmt.Errorf("attaching to %s: %w", m.cfg.BridgeName, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("bringing up: %w", err)
	}
	return nil
}

func (m *Manager) deleteTap(l netlink.Link) error {
	if err := netlink.LinkDel(l); err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("deleting tap %s: %w", l.Attrs().Name, err)
	}
	return nil
}
