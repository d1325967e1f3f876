package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func open(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestMigrationsApplyOnceAndReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	s := open(t, path)
	v, err := s.SchemaVersion(ctx)
	if err != nil || v != len(migrations) {
		t.Fatalf("schema version = %d, %v; want %d", v, err, len(migrations))
	}
	if err := s.CreateVM(ctx, VM{ID: "id1", Name: "a", State: "stopped"}); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s2 := open(t, path)
	if _, err := s2.VMByName(ctx, "a"); err != nil {
		t.Fatalf("data lost across reopen: %v", err)
	}
	v, _ = s2.SchemaVersion(ctx)
	if v != len(migrations) {
		t.Fatalf("schema version after reopen = %d", v)
	}
}

func TestNewerSchemaIsRefused(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	s := open(t, path)
	if _, err := s.db.ExecContext(ctx, `INSERT INTO schema_migrations(version) VALUES (999)`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err := Open(ctx, path)
	if err == nil {
		t.Fatal("opening a database from a newer banger succeeded")
	}
	if want := "upgrade banger"; !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not say %q", err, want)
	}
}

func TestVMNameTakenTwice(t *testing.T) {
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "state.db"))
	if err := s.CreateVM(ctx, VM{ID: "1", Name: "dev", State: "stopped"}); err != nil {
		t.Fatal(err)
	}
	err := s.CreateVM(ctx, VM{ID: "2", Name: "dev", State: "stopped"})
	if !errors.Is(err, ErrExist) {
		t.Fatalf("second create: %v, want ErrExist", err)
	}
	if _, err := s.VMByName(ctx, "nope"); !errors.Is(err, ErrNotExist) {
		t.Fatalf("missing vm: %v, want ErrNotExist", err)
	}
}

// Two Store handles on one file (as two processes would have) write
// concurrently; every write lands exactly once.
func TestConcurrentWriters(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	a, b := open(t, path), open(t, path)
	const n = 40
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := 0; i < n; i++ {
		for j, s := range []*Store{a, b} {
			wg.Add(1)
			go func(i, j int, s *Store) {
				defer wg.Done()
				// Both handles race for the same names: exactly one wins each.
				err := s.CreateVM(ctx, VM{ID: fmt.Sprintf("%d-%d", i, j), Name: fmt.Sprintf("vm%d", i), State: "stopped"})
				if err != nil && !errors.Is(err, ErrExist) {
					errs <- err
				}
			}(i, j, s)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent write: %v", err)
	}
	vms, err := a.ListVMs(ctx)
	if err != nil || len(vms) != n {
		t.Fatalf("got %d vms (%v), want %d", len(vms), err, n)
	}
}
