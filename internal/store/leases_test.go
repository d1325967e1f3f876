package store

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
)

// lowest picks the lowest free address of 10.0.0.2-10.0.0.254.
func lowest(inUse map[netip.Addr]bool) (netip.Addr, error) {
	for a := netip.MustParseAddr("10.0.0.2"); a.Less(netip.MustParseAddr("10.0.0.255")); a = a.Next() {
		if !inUse[a] {
			return a, nil
		}
	}
	return netip.Addr{}, errors.New("exhausted")
}

func TestLeasesConcurrentAndReuse(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	a, b := open(t, path), open(t, path)
	const n = 16
	var wg sync.WaitGroup
	got := make([]Lease, n)
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			s := a
			if i%2 == 1 {
				s = b
			}
			got[i], errs[i] = s.AllocateLease(ctx, fmt.Sprintf("vm%d", i), "", lowest)
		}(i)
	}
	wg.Wait()
	seen := map[netip.Addr]string{}
	for i, l := range got {
		if errs[i] != nil {
			t.Fatalf("vm%d: %v", i, errs[i])
		}
		if other, dup := seen[l.IP]; dup {
			t.Fatalf("%s given to both %s and vm%d", l.IP, other, i)
		}
		seen[l.IP] = l.VMID
	}
	// Asking again returns the same lease.
	again, _ := a.AllocateLease(ctx, "vm3", "", lowest)
	if again.IP != got[3].IP {
		t.Fatalf("second allocation for vm3 = %s, want %s", again.IP, got[3].IP)
	}
	// A released address is reused.
	if err := a.ReleaseLeases(ctx, "vm0"); err != nil {
		t.Fatal(err)
	}
	l, _ := a.AllocateLease(ctx, "new", "", lowest)
	if l.IP != got[0].IP {
		t.Fatalf("released %s not reused (got %s)", got[0].IP, l.IP)
	}
}

func TestPruneLeases(t *testing.T) {
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "state.db"))
	s.CreateVM(ctx, VM{ID: "keep", Name: "keep", State: "running"})
	s.AllocateLease(ctx, "keep", "", lowest)
	s.AllocateLease(ctx, "gone", "", lowest)
	pruned, err := s.PruneLeases(ctx)
	if err != nil || len(pruned) != 1 || pruned[0].VMID != "gone" {
		t.Fatalf("pruned %+v, %v", pruned, err)
	}
	ls, _ := s.Leases(ctx)
	if len(ls) != 1 || ls[0].VMID != "keep" {
		t.Fatalf("left %+v", ls)
	}
	if _, err := s.LeaseOf(ctx, "gone"); !errors.Is(err, ErrNotExist) {
		t.Fatalf("lease of pruned vm: %v", err)
	}
}
