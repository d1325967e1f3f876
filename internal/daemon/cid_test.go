package daemon

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"testing"

	"banger/internal/store"
	"banger/internal/vmm"
)

// cidDriver refuses the first refuse context ids it is given, like
// vhost-vsock when another VM on the host holds them.
type cidDriver struct {
	refuse map[uint32]bool
	tried  []uint32
}

func (d *cidDriver) Name() string           { return "fake" }
func (d *cidDriver) Features() vmm.Features { return vmm.Features{} }
func (d *cidDriver) Adopt(context.Context, vmm.Spec, vmm.Handle) (vmm.Machine, error) {
	return nil, vmm.ErrNotRunning
}
func (d *cidDriver) Start(_ context.Context, s vmm.Spec) (vmm.Machine, error) {
	d.tried = append(d.tried, s.VsockCID)
	if d.refuse[s.VsockCID] {
		return nil, vmm.ErrCIDInUse
	}
	return fakeMachine{}, nil
}

type fakeMachine struct{}

func (fakeMachine) Handle() vmm.Handle                          { return vmm.Handle{} }
func (fakeMachine) DialAgent(context.Context) (net.Conn, error) { return nil, vmm.ErrNotRunning }
func (fakeMachine) Shutdown(context.Context) error              { return nil }
func (fakeMachine) Kill() error                                 { return nil }
func (fakeMachine) Done() <-chan struct{}                       { return nil }

func TestBootVMMRetriesTakenCIDs(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	m := newVMManager(vmParts{store: st})
	for _, id := range []string{"a", "b"} {
		st.CreateVM(ctx, store.VM{ID: id, Name: id, State: "created"})
	}
	// vm a holds 3; the host refuses 4 and 5 (other VMs outside banger).
	if _, err := st.AllocateCID(ctx, "a", nil); err != nil {
		t.Fatal(err)
	}
	d := &cidDriver{refuse: map[uint32]bool{4: true, 5: true}}
	var spec vmm.Spec
	if _, err := m.bootVMM(ctx, d, store.VM{ID: "b", Name: "b"}, &spec); err != nil {
		t.Fatal(err)
	}
	if spec.VsockCID != 6 || len(d.tried) != 3 {
		t.Fatalf("started with cid %d after trying %v; want 6 after 4, 5", spec.VsockCID, d.tried)
	}
	v, _ := st.VMByName(ctx, "b")
	if v.VsockCID != 6 {
		t.Fatalf("stored cid %d, want 6 (kept for the next start)", v.VsockCID)
	}
	// A host that refuses everything ends in an error, not a loop.
	all := &cidDriver{refuse: map[uint32]bool{}}
	for c := uint32(3); c < 100; c++ {
		all.refuse[c] = true
	}
	if _, err := m.bootVMM(ctx, all, store.VM{ID: "b", Name: "b"}, &spec); !errors.Is(err, vmm.ErrCIDInUse) {
		t.Fatalf("every cid refused: %v", err)
	}
}
