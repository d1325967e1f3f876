package daemon

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"banger/internal/api"
	"banger/internal/store"
	"banger/internal/vmm"
)

// A daemon killed in the middle of a delete left the row marked deleting
// and some of the files: the next daemon finishes the delete.
func TestAdoptFinishesInterruptedDelete(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	m := newVMManager(vmParts{store: st, drivers: map[string]vmm.Driver{}, def: "qemu"})
	keep := store.VM{ID: "keep0001", Name: "keep", State: api.StateStopped, Dir: filepath.Join(dir, "vms", "keep0001"), Spec: "{}", Handle: "{}"}
	gone := store.VM{ID: "gone0001", Name: "gone", State: api.StateDeleting, Dir: filepath.Join(dir, "vms", "gone0001"), Spec: "{}", Handle: "{}"}
	for _, v := range []store.VM{keep, gone} {
		os.MkdirAll(v.Dir, 0o700)
		os.WriteFile(filepath.Join(v.Dir, "rootfs.ext4"), []byte("disk"), 0o600)
		if err := st.CreateVM(ctx, v); err != nil {
			t.Fatal(err)
		}
		if err := st.UpdateVM(ctx, v); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.adoptAll(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := st.VMByName(ctx, "gone"); !errors.Is(err, store.ErrNotExist) {
		t.Errorf("the half-deleted vm's row: %v, want gone", err)
	}
	if _, err := os.Stat(gone.Dir); !os.IsNotExist(err) {
		t.Errorf("the half-deleted vm's dir: %v, want gone", err)
	}
	if _, err := st.VMByName(ctx, "keep"); err != nil {
		t.Errorf("the other vm: %v", err)
	}
	if _, err := os.Stat(filepath.Join(keep.Dir, "rootfs.ext4")); err != nil {
		t.Errorf("the other vm's disk: %v", err)
	}
}
