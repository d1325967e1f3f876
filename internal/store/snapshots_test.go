package store

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// Snapshots round-trip every field, take unique names, are found by name
// or id, finish together with their VM's new layer, and go.
func TestSnapshotCRUD(t *testing.T) {
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "state.db"))
	if err := s.CreateVM(ctx, VM{ID: "vm1", Name: "web", State: "running", Layer: "a.qcow2"}); err != nil {
		t.Fatal(err)
	}
	sn := Snapshot{ID: "s1", Name: "snap", State: "creating", Kind: "user", SourceVM: "web", Image: "deb", Kernel: "k",
		VMM: "qemu", VMMVersion: "7.2", VCPUs: 2, MemoryMiB: 512, DiskBytes: 1 << 30, Layer: "a.qcow2", Dir: "/d/s1",
		Spec: `{"id":"vm1"}`, Meta: `{"next":"b.qcow2"}`}
	if err := s.CreateSnapshot(ctx, sn); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateSnapshot(ctx, Snapshot{ID: "s2", Name: "snap", State: "creating"}); !errors.Is(err, ErrExist) {
		t.Errorf("a second snapshot called snap: %v, want ErrExist", err)
	}
	for _, key := range []string{"snap", "s1"} {
		got, err := s.SnapshotByName(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(sn, got, cmpopts.IgnoreFields(Snapshot{}, "CreatedAt")); diff != "" || got.CreatedAt.IsZero() {
			t.Errorf("by %s (-want +got):\n%s", key, diff)
		}
	}
	sn.State = "ready"
	if err := s.FinishSnapshot(ctx, sn, "vm1", "b.qcow2"); err != nil {
		t.Fatal(err)
	}
	if v, _ := s.VMByName(ctx, "web"); v.Layer != "b.qcow2" {
		t.Errorf("vm layer after finish: %q", v.Layer)
	}
	if err := s.FinishSnapshot(ctx, sn, "nope", "c.qcow2"); !errors.Is(err, ErrNotExist) {
		t.Errorf("finish with a missing vm: %v", err)
	}
	if got, _ := s.SnapshotByName(ctx, "snap"); got.State != "ready" {
		t.Errorf("state %q after a finish that failed on the vm, want the earlier ready", got.State)
	}
	if names, _ := s.SnapshotsUsingImage(ctx, "deb", "warm"); len(names) != 1 || names[0] != "snap" {
		t.Errorf("snapshots of image deb: %v", names)
	}
	if names, _ := s.SnapshotsUsingKernel(ctx, "k"); len(names) != 1 {
		t.Errorf("snapshots of kernel k: %v", names)
	}
	if list, _ := s.ListSnapshots(ctx); len(list) != 1 {
		t.Errorf("list: %v", list)
	}
	if err := s.DeleteSnapshot(ctx, "s1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SnapshotByName(ctx, "snap"); !errors.Is(err, ErrNotExist) {
		t.Errorf("after delete: %v", err)
	}
	if err := s.DeleteSnapshot(ctx, "s1"); !errors.Is(err, ErrNotExist) {
		t.Errorf("second delete: %v", err)
	}
}
