package network

import (
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
)

// tapView is a Tap plus whether it sits on the bridge and is up.
type tapView struct {
	VMID      string
	Pool      bool
	OnBridge  bool
	AdminUp   bool
	Persisted bool
}

func viewTaps(m *Manager) (map[string]tapView, error) {
	taps, err := m.listTaps()
	if err != nil {
		return nil, err
	}
	br, err := netlink.LinkByName(m.cfg.BridgeName)
	if err != nil {
		return nil, err
	}
	out := map[string]tapView{}
	for _, tp := range taps {
		l, err := netlink.LinkByName(tp.Name)
		if err != nil {
			return nil, err
		}
		tt, _ := l.(*netlink.Tuntap)
		out[tp.Name] = tapView{VMID: tp.VMID, Pool: tp.Pool,
			OnBridge:  l.Attrs().MasterIndex == br.Attrs().Index,
			AdminUp:   l.Attrs().Flags&net.FlagUp != 0,
			Persisted: tt != nil && !tt.NonPersist}
	}
	return out, nil
}

func TestTapsPoolAcquireReleaseReconcile(t *testing.T) {
	requireNetns(t)
	ns := newNS(t, "tap")
	m := testManager(t, nil) // PoolSize 2
	ctx := t.Context()
	ns.must(t, "EnsureBridge", func() error { return m.EnsureBridge(ctx) })

	var created int
	ns.must(t, "FillPool", func() (err error) { created, err = m.FillPool(ctx); return err })
	if created != 2 {
		t.Fatalf("FillPool created %d taps, want 2", created)
	}
	ns.must(t, "FillPool again", func() (err error) { created, err = m.FillPool(ctx); return err })
	if created != 0 {
		t.Fatalf("second FillPool created %d taps, want 0", created)
	}
	var pool []string
	ns.must(t, "ListTaps", func() error {
		taps, err := m.ListTaps(ctx)
		for _, tp := range taps {
			pool = append(pool, tp.Name)
		}
		return err
	})

	// Two VMs take the two spares; a third gets a new tap; a retried
	// acquire returns the tap the VM already has.
	names := map[string]string{}
	for _, vm := range []string{"vm-a", "vm-b", "vm-c", "vm-a"} {
		ns.must(t, "AcquireTap "+vm, func() error {
			name, err := m.AcquireTap(ctx, vm)
			if prev, ok := names[vm]; ok && prev != name {
				t.Errorf("AcquireTap(%s) again = %s, want %s", vm, name, prev)
			}
			names[vm] = name
			return err
		})
	}
	got := []string{names["vm-a"], names["vm-b"]}
	sort.Strings(got)
	if diff := cmp.Diff(pool, got); diff != "" {
		t.Errorf("vm-a and vm-b should take the pool taps (-pool +got):\n%s", diff)
	}
	var view map[string]tapView
	ns.must(t, "view", func() (err error) { view, err = viewTaps(m); return err })
	want := map[string]tapView{}
	for vm, name := range names {
		want[name] = tapView{VMID: vm, OnBridge: true, AdminUp: true, Persisted: true}
	}
	if diff := cmp.Diff(want, view); diff != "" {
		t.Fatalf("taps after acquires (-want +got):\n%s", diff)
	}

	checkReconcile(t, ns, m, names)
}

// checkReconcile refills the pool, adds a tap left unmarked by a crash and
// a foreign tap, then reconciles keeping only vm-a: vm-b, vm-c and the
// orphan go; spares, vm-a's tap and the foreign tap stay.
func checkReconcile(t *testing.T, ns *testNS, m *Manager, names map[string]string) {
	t.Helper()
	ctx := t.Context()
	ns.must(t, "FillPool", func() error { _, err := m.FillPool(ctx); return err })
	ns.ip(t, "tuntap", "add", "bgtapdeadbeef", "mode", "tap")
	ns.ip(t, "tuntap", "add", "othertap0", "mode", "tap") // not banger's: left alone
	var removed []Tap
	ns.must(t, "Reconcile", func() (err error) {
		removed, err = m.Reconcile(ctx, map[string]bool{"vm-a": true})
		return err
	})
	var gotRemoved []string
	for _, r := range removed {
		gotRemoved = append(gotRemoved, r.VMID+"="+r.Name)
	}
	wantRemoved := []string{"=bgtapdeadbeef", "vm-b=" + names["vm-b"], "vm-c=" + names["vm-c"]}
	sort.Strings(gotRemoved)
	sort.Strings(wantRemoved)
	if diff := cmp.Diff(wantRemoved, gotRemoved); diff != "" {
		t.Errorf("Reconcile removed (-want +got):\n%s", diff)
	}
	var view map[string]tapView
	ns.must(t, "view", func() (err error) { view, err = viewTaps(m); return err })
	pools, vms := 0, 0
	for _, v := range view {
		if v.Pool {
			pools++
		} else if v.VMID == "vm-a" {
			vms++
		} else {
			t.Errorf("unexpected tap left: %+v", v)
		}
	}
	if pools != 2 || vms != 1 {
		t.Errorf("after Reconcile: %d spares and %d vm-a taps, want 2 and 1", pools, vms)
	}
	ns.ip(t, "link", "show", "othertap0") // fails the test if it was removed
}

// TestReleaseTap: a released tap is gone, releasing again is fine, and a
// link that is not banger's is refused.
func TestReleaseTap(t *testing.T) {
	requireNetns(t)
	ns := newNS(t, "rel")
	m := testManager(t, func(c *Config) { c.PoolSize = 0 })
	ctx := t.Context()
	ns.must(t, "EnsureBridge", func() error { return m.EnsureBridge(ctx) })
	var name string
	ns.must(t, "AcquireTap", func() (err error) { name, err = m.AcquireTap(ctx, "vm-a"); return err })
	ns.ip(t, "tuntap", "add", "othertap0", "mode", "tap")
	ns.must(t, "ReleaseTap", func() error { return m.ReleaseTap(ctx, name) })
	ns.must(t, "ReleaseTap again", func() error { return m.ReleaseTap(ctx, name) })
	if err := ns.do(func() error { _, err := netlink.LinkByName(name); return err }); err == nil {
		t.Errorf("tap %s still exists after ReleaseTap", name)
	}
	err := ns.do(func() error { return m.ReleaseTap(ctx, "othertap0") })
	if !errors.Is(err, ErrNotOurs) {
		t.Errorf("ReleaseTap(othertap0) = %v, want ErrNotOurs", err)
	}
	ns.ip(t, "link", "show", "othertap0") // fails the test if it was removed
}

func TestAcquireTapNeedsBridge(t *testing.T) {
	requireNetns(t)
	ns := newNS(t, "nobr")
	m := testManager(t, func(c *Config) { c.PoolSize = 0 })
	err := ns.do(func() error { _, err := m.AcquireTap(t.Context(), "vm-x"); return err })
	if err == nil {
		t.Fatal("AcquireTap without a bridge succeeded")
	}
	t.Logf("refused: %v", err)
	if out := ns.ip(t, "-br", "link"); len(out) == 0 || containsTap(out) {
		t.Errorf("links after refused AcquireTap: %s", out)
	}
}

func containsTap(ipOut string) bool { return strings.Contains(ipOut, DefaultTapPrefix) }

// TestAcquireTapConcurrent runs 8 acquires at once (pool of 2): every VM
// gets its own tap.
func TestAcquireTapConcurrent(t *testing.T) {
	requireNetns(t)
	ns := newNS(t, "conc")
	m := testManager(t, nil)
	ctx := t.Context()
	ns.must(t, "EnsureBridge", func() error { return m.EnsureBridge(ctx) })
	ns.must(t, "FillPool", func() error { _, err := m.FillPool(ctx); return err })
	type result struct {
		vm, tap string
		err     error
	}
	results := make(chan result, 8)
	for i := range 8 {
		vm := fmt.Sprintf("vm-%d", i)
		go func() {
			var name string
			err := ns.do(func() (err error) { name, err = m.AcquireTap(ctx, vm); return err })
			results <- result{vm, name, err}
		}()
	}
	seen := map[string]string{}
	for range 8 {
		r := <-results
		if r.err != nil {
			t.Fatalf("AcquireTap(%s): %v", r.vm, r.err)
		}
		if other, dup := seen[r.tap]; dup {
			t.Fatalf("%s and %s both got tap %s", r.vm, other, r.tap)
		}
		seen[r.tap] = r.vm
	}
	var taps []Tap
	ns.must(t, "ListTaps", func() (err error) { taps, err = m.ListTaps(ctx); return err })
	if len(taps) != 8 {
		t.Fatalf("ListTaps = %d taps, want 8: %+v", len(taps), taps)
	}
	for _, tp := range taps {
		if seen[tp.Name] != tp.VMID {
			t.Errorf("tap %s belongs to %q, want %q", tp.Name, tp.VMID, seen[tp.Name])
		}
	}
}
