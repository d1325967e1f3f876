package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
)

func TestAllocateCID(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	// Two handles on one database stand for concurrent requests (and
	// for two processes).
	a, b := open(t, path), open(t, path)
	const n = 12
	for i := range n {
		if err := a.CreateVM(ctx, VM{ID: fmt.Sprintf("vm%d", i), Name: fmt.Sprintf("vm%d", i), State: "created"}); err != nil {
			t.Fatal(err)
		}
	}
	got := make([]uint32, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			s := a
			if i%2 == 1 {
				s = b
			}
			got[i], errs[i] = s.AllocateCID(ctx, fmt.Sprintf("vm%d", i), nil)
		}(i)
	}
	wg.Wait()
	seen := map[uint32]int{}
	for i, c := range got {
		if errs[i] != nil {
			t.Fatalf("vm%d: %v", i, errs[i])
		}
		if c < MinCID {
			t.Fatalf("vm%d got reserved cid %d", i, c)
		}
		if other, dup := seen[c]; dup {
			t.Fatalf("cid %d given to both vm%d and vm%d", c, other, i)
		}
		seen[c] = i
	}

	// A restart (a new daemon, a new handle) finds the same ids.
	a.Close()
	c := open(t, path)
	for i := range n {
		id := fmt.Sprintf("vm%d", i)
		again, err := c.AllocateCID(ctx, id, nil)
		if err != nil || again != got[i] {
			t.Fatalf("%s after reopen: cid %d, %v; want %d", id, again, err, got[i])
		}
		if v, _ := c.VMByName(ctx, id); v.VsockCID != got[i] {
			t.Fatalf("%s record shows cid %d, want %d", id, v.VsockCID, got[i])
		}
	}

	// Deleting a VM frees its id for the next VM.
	if err := c.DeleteVM(ctx, "vm0"); err != nil {
		t.Fatal(err)
	}
	c.CreateVM(ctx, VM{ID: "new", Name: "new", State: "created"})
	if cid, err := c.AllocateCID(ctx, "new", nil); err != nil || cid != got[0] {
		t.Fatalf("new vm got cid %d, %v; want the freed %d", cid, err, got[0])
	}

	// An id the host refused is replaced by one no VM holds, and the
	// new one is kept.
	old := got[5]
	cid, err := c.AllocateCID(ctx, "vm5", map[uint32]bool{old: true})
	if err != nil || cid == old {
		t.Fatalf("vm5 after its cid was refused: %d, %v", cid, err)
	}
	for i, g := range got {
		if i != 5 && i != 0 && g == cid {
			t.Fatalf("vm5's new cid %d is vm%d's", cid, i)
		}
	}
	if again, _ := c.AllocateCID(ctx, "vm5", nil); again != cid {
		t.Fatalf("vm5's replacement cid not kept: %d then %d", cid, again)
	}

	if _, err := c.AllocateCID(ctx, "nosuch", nil); !errors.Is(err, ErrNotExist) {
		t.Fatalf("cid for a missing vm: %v", err)
	}
}

// TestCIDMigrationKeepsOldVMs: a database made before vsock ids existed
// opens with its VMs intact and without ids, which they get on demand.
func TestCIDMigrationKeepsOldVMs(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	saved := migrations
	migrations = saved[:2]
	old, err := Open(ctx, path)
	migrations = saved
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.db.ExecContext(ctx, `INSERT INTO vms (id, name, state, created_at, updated_at) VALUES ('o', 'old', 'stopped', 1, 1)`); err != nil {
		t.Fatal(err)
	}
	old.Close()
	s := open(t, path)
	v, err := s.VMByName(ctx, "old")
	if err != nil || v.VsockCID != 0 {
		t.Fatalf("old vm after migration: %+v, %v", v, err)
	}
	if cid, err := s.AllocateCID(ctx, "o", nil); err != nil || cid != MinCID {
		t.Fatalf("old vm's cid: %d, %v", cid, err)
	}
}
