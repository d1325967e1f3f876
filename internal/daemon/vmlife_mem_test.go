package daemon

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/kernel"
	"banger/internal/store"
	"banger/internal/vmm"
	"banger/internal/vmm/vmmtest"
)

// The lifecycle tests run vmManager over vmmtest.MemDriver, a real SQLite
// state and a fake network, with the real guest agent served in-process
// on each machine's agent connection: every start, stop and delete
// below goes through the same code as under QEMU, minus the processes.

// fakeNet is a vmNetwork that hands out taps by name only.
type fakeNet struct {
	mu       sync.Mutex
	attached map[string]bool // VM ids with a tap
	fail     error           // attach fails with it when set
}

func (f *fakeNet) lease(ctx context.Context, vmID string) (store.Lease, error) {
	return store.Lease{}, nil
}

func (f *fakeNet) attach(ctx context.Context, vmID string) (vmm.NIC, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return vmm.NIC{}, "", f.fail
	}
	f.attached[vmID] = true
	return vmm.NIC{ID: "eth0", Tap: "tap-" + vmID[:4], MAC: "02:00:00:00:00:01"}, "banger.net=addr=10.0.0.2/24,gw=10.0.0.1", nil
}

func (f *fakeNet) detach(ctx context.Context, vmID string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.attached, vmID)
}

func (f *fakeNet) isAttached(vmID string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.attached[vmID]
}

// lifeRig is a vmManager over a MemDriver, and what a test needs to look.
type lifeRig struct {
	m   *vmManager
	d   *vmmtest.MemDriver
	st  *store.Store
	net *fakeNet
	dir string
}

// memAgent serves the real guest agent on conn, with the key the daemon
// gave the VM; a shutdown request powers the machine off unless ignore.
func memAgent(ignoreShutdown bool) func(ctx context.Context, mc *vmmtest.MemMachine, conn net.Conn) {
	return func(ctx context.Context, mc *vmmtest.MemMachine, conn net.Conn) {
		srv := agent.NewServer(nil, func() error {
			if !ignoreShutdown {
				mc.PowerOff()
			}
			return nil
		})
		srv.SetKeyFile(filepath.Join(mc.Spec().Dir, agentKeyFile))
		srv.ServeConn(ctx, conn, "test")
	}
}

func newLifeRig(t *testing.T, opts vmmtest.MemOptions) *lifeRig {
	t.Helper()
	// MemDriver, like the real drivers, wants a short VM directory.
	dir, err := os.MkdirTemp("", "bgl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	st, err := store.Open(context.Background(), filepath.Join(dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if opts.Agent == nil {
		opts.Agent = memAgent(false)
	}
	r := &lifeRig{d: vmmtest.NewMemDriver(opts), st: st, dir: dir}
	r.net = &fakeNet{attached: map[string]bool{}}
	r.m = r.manager(r.d)
	return r
}

// manager is a vmManager (a daemon) over d and the rig's state.
func (r *lifeRig) manager(d *vmmtest.MemDriver) *vmManager {
	return newVMManager(vmParts{store: r.st, net: r.net, drivers: map[string]vmm.Driver{"mem": d}, def: "mem",
		cfg: vmSettings{VMsDir: filepath.Join(r.dir, "vms")}})
}

// vm records a created VM called name, as create leaves it.
func (r *lifeRig) vm(t *testing.T, name string) store.VM {
	t.Helper()
	id := newID()
	v := store.VM{ID: id, Name: name, State: api.StateCreated, Image: "img", Kernel: "k", VMM: "mem",
		VCPUs: 1, MemoryMiB: 128, Dir: filepath.Join(r.dir, "vms", id[:6]), Spec: "{}", Handle: "{}"}
	if err := os.MkdirAll(v.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := r.st.CreateVM(context.Background(), v); err != nil {
		t.Fatal(err)
	}
	if err := r.st.UpdateVM(context.Background(), v); err != nil {
		t.Fatal(err)
	}
	return v
}

var memKernel = kernel.Bundle{Name: "k", Kernel: "/boot/vmlinuz", Initrd: "/boot/initrd"}

func nop(string, int64, int64) {}

// start boots v the way start does after reading it.
func (r *lifeRig) start(ctx context.Context, t *testing.T, v store.VM, ready time.Duration) (api.VM, error) {
	t.Helper()
	defer r.m.locks.lock(v.Name)()
	return r.m.startLocked(ctx, &v, memKernel, ready, nop)
}

func (r *lifeRig) state(t *testing.T, name string) store.VM {
	t.Helper()
	v, err := r.st.VMByName(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// eventually waits for cond, failing the test after a few seconds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func ops(d *vmmtest.MemDriver, id string) []string {
	var out []string
	for _, e := range d.Events() {
		if e.ID == id {
			out = append(out, e.Op)
		}
	}
	return out
}

// A start boots the VM, answers once its agent does, and records it
// running with the spec and handle a later daemon adopts it by; a stop
// asks the agent, the guest powers off, and the tap goes.
func TestLifeStartAndStop(t *testing.T) {
	r := newLifeRig(t, vmmtest.MemOptions{})
	ctx := t.Context()
	v := r.vm(t, "one")
	got, err := r.start(ctx, t, v, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != api.StateRunning || got.PID == 0 || got.Agent == "" {
		t.Fatalf("started vm: %+v", got)
	}
	rec := r.state(t, "one")
	if rec.State != api.StateRunning || rec.Handle == "{}" || rec.VsockCID < 3 || !r.net.isAttached(v.ID) {
		t.Fatalf("record after start: state %s handle %s cid %d tap %v", rec.State, rec.Handle, rec.VsockCID, r.net.isAttached(v.ID))
	}
	if _, err := os.Stat(filepath.Join(v.Dir, agentKeyFile)); err != nil {
		t.Errorf("no agent key made for the vm: %v", err)
	}
	if _, err := r.start(ctx, t, rec, time.Second); api.CodeOf(err) != api.Conflict {
		t.Errorf("second start of a running vm: %v, want conflict", err)
	}

	stopped, err := r.m.stop(ctx, "one", false, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if stopped.State != api.StateStopped || stopped.PID != 0 {
		t.Errorf("stopped vm: %+v", stopped)
	}
	if r.net.isAttached(v.ID) || r.m.machine(v.ID) != nil {
		t.Errorf("after stop: tap %v, machine %v", r.net.isAttached(v.ID), r.m.machine(v.ID))
	}
	if mc := r.d.Machine(v.ID); mc != nil {
		t.Errorf("the machine still runs after stop")
	}
	evs := ops(r.d, v.ID)
	if want := []string{vmmtest.OpStart, vmmtest.OpDialAgent}; len(evs) < 2 || evs[0] != want[0] || evs[1] != want[1] {
		t.Errorf("driver calls %v, want %v first", evs, want)
	}
	if last := evs[len(evs)-1]; last != vmmtest.OpExit {
		t.Errorf("driver calls %v end with %s, want exit", evs, last)
	}
}

// A guest that ignores the power-off request is killed once the stop's
// timeout passes.
func TestLifeStopKillsIgnoringGuest(t *testing.T) {
	r := newLifeRig(t, vmmtest.MemOptions{
		Agent: memAgent(true),
		Guest: func(vmm.Spec) vmmtest.MemGuest { return vmmtest.MemGuest{IgnoreShutdown: true} },
	})
	v := r.vm(t, "stubborn")
	if _, err := r.start(t.Context(), t, v, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	mc := r.d.Machine(v.ID)
	begin := time.Now()
	if _, err := r.m.stop(t.Context(), "stubborn", false, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(begin); took > 3*time.Second {
		t.Errorf("stop took %s with a 300ms timeout", took)
	}
	if how := mc.Exit(); how != "killed" {
		t.Errorf("the guest ended %q, want killed", how)
	}
	if r.state(t, "stubborn").State != api.StateStopped {
		t.Errorf("state %s, want stopped", r.state(t, "stubborn").State)
	}
}

// A VMM that will not start leaves the VM failed with the reason, and
// its tap given back.
func TestLifeStartFailsCleanly(t *testing.T) {
	r := newLifeRig(t, vmmtest.MemOptions{StartHook: func(vmm.Spec) error { return errors.New("no room for the guest") }})
	v := r.vm(t, "broken")
	if _, err := r.start(t.Context(), t, v, time.Second); err == nil {
		t.Fatal("start succeeded")
	}
	rec := r.state(t, "broken")
	if rec.State != api.StateFailed || rec.LastError == "" {
		t.Errorf("record: state %s, last error %q", rec.State, rec.LastError)
	}
	if r.net.isAttached(v.ID) || r.m.machine(v.ID) != nil {
		t.Errorf("a failed start kept its tap (%v) or machine", r.net.isAttached(v.ID))
	}
	// The network failing first leaves nothing running either.
	r.net.fail = errors.New("no taps")
	w := r.vm(t, "nonet")
	if _, err := r.start(t.Context(), t, w, time.Second); err == nil {
		t.Fatal("start without a network succeeded")
	}
	if n := len(ops(r.d, w.ID)); n != 0 {
		t.Errorf("the driver was called %d times for a vm with no network", n)
	}
}

// A guest whose agent never answers: the start times out and says so, and
// the VM stays running, marked failed, for inspection; delete removes it.
// A caller that goes away instead takes the VM down with it.
func TestLifeReadyTimeoutAndCancel(t *testing.T) {
	r := newLifeRig(t, vmmtest.MemOptions{Guest: func(vmm.Spec) vmmtest.MemGuest { return vmmtest.MemGuest{NoAgent: true} }})
	v := r.vm(t, "mute")
	_, err := r.start(t.Context(), t, v, 300*time.Millisecond)
	if api.CodeOf(err) != api.Timeout {
		t.Fatalf("start of a mute guest: %v, want a timeout", err)
	}
	if rec := r.state(t, "mute"); rec.State != api.StateFailed || r.d.Machine(v.ID) == nil {
		t.Fatalf("after the timeout: state %s, machine running %v", rec.State, r.d.Machine(v.ID) != nil)
	}
	if err := r.m.delete(t.Context(), "mute", true); err != nil {
		t.Fatal(err)
	}
	if _, err := r.st.VMByName(t.Context(), "mute"); !errors.Is(err, store.ErrNotExist) {
		t.Errorf("deleted vm's record: %v", err)
	}
	if _, err := os.Stat(v.Dir); !os.IsNotExist(err) || r.d.Machine(v.ID) != nil || r.net.isAttached(v.ID) {
		t.Errorf("after delete: dir %v, machine %v, tap %v", err, r.d.Machine(v.ID) != nil, r.net.isAttached(v.ID))
	}

	w := r.vm(t, "left")
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if _, err := r.start(ctx, t, w, 10*time.Second); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("start whose caller left: %v", err)
	}
	if rec := r.state(t, "left"); rec.State != api.StateStopped || r.d.Machine(w.ID) != nil {
		t.Errorf("after the caller left: state %s, machine running %v", rec.State, r.d.Machine(w.ID) != nil)
	}
	eventually(t, "the watcher gives the tap back", func() bool { return !r.net.isAttached(w.ID) })
}

// A VMM that ends on its own (a crash, the guest powering off) is
// recorded stopped, and its tap given back.
func TestLifeCrashIsRecorded(t *testing.T) {
	r := newLifeRig(t, vmmtest.MemOptions{})
	v := r.vm(t, "frail")
	if _, err := r.start(t.Context(), t, v, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	r.d.Machine(v.ID).Crash()
	eventually(t, "the crash is recorded", func() bool {
		rec := r.state(t, "frail")
		return rec.State == api.StateStopped && rec.Handle == "{}" && !r.net.isAttached(v.ID) && r.m.machine(v.ID) == nil
	})
	// It starts again.
	if _, err := r.start(t.Context(), t, r.state(t, "frail"), 5*time.Second); err != nil {
		t.Fatalf("restart after a crash: %v", err)
	}
}

// A new daemon adopts the machines the old one started, reaches their
// agents, and marks stopped those whose VMM went away meanwhile.
func TestLifeAdoptAfterRestart(t *testing.T) {
	r := newLifeRig(t, vmmtest.MemOptions{})
	keep, gone := r.vm(t, "keep"), r.vm(t, "gone")
	for _, v := range []store.VM{keep, gone} {
		if _, err := r.start(t.Context(), t, v, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	r.m.close() // the old daemon goes; its VMMs run on
	d2 := r.d.Restart()
	r.d.Machine(gone.ID).Crash() // while no daemon watched
	m2 := r.manager(d2)
	if err := m2.adoptAll(t.Context()); err != nil {
		t.Fatal(err)
	}
	if m2.machine(keep.ID) == nil {
		t.Fatal("the running vm was not adopted")
	}
	a, err := m2.agent(t.Context(), r.state(t, "keep"))
	if err != nil {
		t.Fatalf("agent of the adopted vm: %v", err)
	}
	if _, err := a.Hello(t.Context()); err != nil {
		t.Fatalf("hello from the adopted vm: %v", err)
	}
	if rec := r.state(t, "gone"); rec.State != api.StateStopped || m2.machine(gone.ID) != nil {
		t.Errorf("the vm whose vmm died while no daemon ran: state %s", rec.State)
	}
	if _, err := m2.stop(t.Context(), "keep", false, 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

// Lifecycle changes of one VM take turns: of two starts at once, one
// boots and the other finds it running; the name's lock is then gone.
func TestLifeConcurrentStarts(t *testing.T) {
	r := newLifeRig(t, vmmtest.MemOptions{})
	v := r.vm(t, "race")
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = r.start(t.Context(), t, v, 5*time.Second)
		}()
	}
	wg.Wait()
	ok, conflict := 0, 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case api.CodeOf(err) == api.Conflict:
			conflict++
		default:
			t.Errorf("start: %v", err)
		}
	}
	if ok != 1 || conflict != 1 {
		t.Errorf("%d starts succeeded and %d found it running, want 1 and 1", ok, conflict)
	}
	if n := len(r.d.Events()); n == 0 || r.d.Events()[0].Op != vmmtest.OpStart {
		t.Errorf("driver events %v", r.d.Events())
	}
	if n := r.m.locks.len(); n != 0 {
		t.Errorf("%d vm locks kept after the starts ended", n)
	}
}
