package store

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// Every committed VM change is heard once, with the VM's name; a failed
// write is not heard at all.
func TestOnVMChange(t *testing.T) {
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "state.db"))
	var got []VMChange
	s.OnVMChange(func(c VMChange) { got = append(got, c) })

	v := VM{ID: "id1", Name: "web1", State: "created"}
	if err := s.CreateVM(ctx, v); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateVM(ctx, VM{ID: "id2", Name: "web1", State: "created"}); !errors.Is(err, ErrExist) {
		t.Fatalf("second web1: %v, want ErrExist", err)
	}
	v.State = "running"
	if err := s.UpdateVM(ctx, v); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteVM(ctx, v.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteVM(ctx, v.ID); !errors.Is(err, ErrNotExist) {
		t.Fatalf("second delete: %v, want ErrNotExist", err)
	}
	want := []VMChange{
		{Action: VMCreated, ID: "id1", Name: "web1", State: "created"},
		{Action: VMUpdated, ID: "id1", Name: "web1", State: "running"},
		{Action: VMDeleted, ID: "id1", Name: "web1"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("changes heard (-want +got):\n%s", diff)
	}
}
