package vmmtest

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"banger/internal/prereq"
	"banger/internal/vmm"
)

// identity: Name and Features are what the harness says, with known
// values.
func (s *suite) identity(t *testing.T) {
	d := s.h.New(t)
	if d.Name() != s.h.Name {
		t.Errorf("Name = %q, want %q", d.Name(), s.h.Name)
	}
	f := d.Features()
	if diff := cmp.Diff(s.h.Features, f); diff != "" {
		t.Errorf("Features (-want +got):\n%s", diff)
	}
	switch f.Accel {
	case vmm.AccelKVM, vmm.AccelTCG:
	default:
		t.Errorf("Features.Accel %q is none of kvm, tcg", f.Accel)
	}
	switch f.Transport {
	case vmm.TransportVirtioSerial, vmm.TransportVsock, vmm.TransportHybridVsock:
	default:
		t.Errorf("Features.Transport %q is no known agent transport", f.Transport)
	}
}

// badSpec: Start refuses a spec it cannot boot, saying what is wrong,
// before it creates anything.
func (s *suite) badSpec(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*vmm.Spec)
		want   string // in the error
	}{
		{"no kernel", func(s *vmm.Spec) { s.Kernel = "" }, "kernel"},
		{"no vcpus", func(s *vmm.Spec) { s.VCPUs = 0 }, "vcpu"},
		{"no memory", func(s *vmm.Spec) { s.MemoryMiB = 0 }, "memory"},
		{"no dir", func(s *vmm.Spec) { s.Dir = "" }, "dir"},
		{"dir too long for a socket path", func(s *vmm.Spec) {
			s.Dir = filepath.Join(filepath.Dir(s.Dir), strings.Repeat("d", 120))
		}, "too long"},
	}
	d := s.h.New(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := s.h.Spec(t, Cooperative)
			spec.VsockCID = nextCID()
			tt.modify(&spec)
			m, err := d.Start(t.Context(), spec)
			if err == nil {
				m.Kill()
				t.Fatal("Start succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not name the problem (%q)", err, tt.want)
			}
			if spec.Dir != "" {
				if _, err := os.Stat(spec.Dir); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("Start of a bad spec created the vm dir: %v", err)
				}
			}
			s.assertNoLeftovers(t, spec)
		})
	}
}

// unavailable: a driver that cannot run here says so with
// vmm.ErrUnavailable, in Check and in Start, before it creates anything.
func (s *suite) unavailable(t *testing.T) {
	if s.h.Unavailable == nil {
		prereq.ByDesign(t, "the harness makes no unavailable driver")
	}
	spec := s.h.Spec(t, Cooperative)
	spec.VsockCID = nextCID()
	d := s.h.Unavailable(t)
	if c, ok := d.(vmm.Checker); ok {
		if err := c.Check(t.Context()); !errors.Is(err, vmm.ErrUnavailable) {
			t.Errorf("Check = %v, want ErrUnavailable", err)
		}
		if err := s.h.New(t).(vmm.Checker).Check(t.Context()); err != nil {
			t.Errorf("Check of a driver that can run here = %v, want nil", err)
		}
	}
	m, err := d.Start(t.Context(), spec)
	if err == nil {
		m.Kill()
		t.Fatal("Start succeeded")
	}
	if !errors.Is(err, vmm.ErrUnavailable) {
		t.Errorf("Start = %v, want ErrUnavailable", err)
	}
	if _, err := os.Stat(spec.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Start on an unusable host created the vm dir: %v", err)
	}
}

// startCancelled: Start with a done ctx fails with the ctx's error and
// leaves no process or socket.
func (s *suite) startCancelled(t *testing.T) {
	spec := s.h.Spec(t, Cooperative)
	spec.VsockCID = nextCID()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	m, err := s.h.New(t).Start(ctx, spec)
	if err == nil {
		m.Kill()
		t.Fatal("Start with a cancelled ctx succeeded")
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Start with a cancelled ctx = %v, want context.Canceled", err)
	}
	s.assertNoLeftovers(t, spec)
}

// exitAtOnce: a VMM that exits during Start makes Start fail with
// vmm.ErrNotRunning and the VMM's own words, leaving nothing behind.
func (s *suite) exitAtOnce(t *testing.T) {
	if s.h.ExitAtOnce == nil {
		prereq.ByDesign(t, "the harness has no VMM that exits at once")
	}
	d, spec, complaint := s.h.ExitAtOnce(t)
	spec.VsockCID = nextCID()
	ctx, cancel := context.WithTimeout(t.Context(), s.h.BootTimeout)
	defer cancel()
	m, err := d.Start(ctx, spec)
	if err == nil {
		m.Kill()
		t.Fatal("Start succeeded")
	}
	if !errors.Is(err, vmm.ErrNotRunning) || !strings.Contains(err.Error(), complaint) {
		t.Errorf("Start = %q, want it to wrap ErrNotRunning and quote the VMM (%q)", err, complaint)
	}
	s.assertNoLeftovers(t, spec)
}

// boot: a machine reaches its console marker and agent, offers what its
// features say, and once its VMM dies from outside nothing is left.
func (s *suite) boot(t *testing.T) {
	d := s.h.New(t)
	ctx, cancel := context.WithTimeout(t.Context(), s.h.BootTimeout)
	defer cancel()
	m, spec := s.start(ctx, t, d, Cooperative)
	h := m.Handle()
	if h.Driver != s.h.Name || h.PID <= 0 {
		t.Errorf("Handle = %+v, want driver %q and a pid", h, s.h.Name)
	}
	s.waitReady(ctx, t, m, spec)
	s.agent(ctx, t, m)
	s.checkOptional(ctx, t, d.Features(), m)

	s.crash(t, m)
	s.assertGone(t, m, spec)
	s.assertEnded(ctx, t, m)
}

// checkOptional checks that the optional interfaces m implements are the
// ones the driver's features promise, and that they work.
func (s *suite) checkOptional(ctx context.Context, t *testing.T, f vmm.Features, m vmm.Machine) {
	t.Helper()
	p, ok := m.(vmm.Pauser)
	switch {
	case ok != f.Pause:
		t.Errorf("machine implements vmm.Pauser: %v, but Features.Pause is %v", ok, f.Pause)
	case ok:
		if err := p.Pause(ctx); err != nil {
			t.Errorf("Pause: %v", err)
		}
		if err := p.Resume(ctx); err != nil {
			t.Errorf("Resume: %v", err)
		}
	}
	sn, ok := m.(vmm.Snapshotter)
	switch {
	case ok != f.Snapshots:
		t.Errorf("machine implements vmm.Snapshotter: %v, but Features.Snapshots is %v", ok, f.Snapshots)
	case ok:
		if err := sn.Snapshot(ctx, t.TempDir()); err != nil {
			t.Errorf("Snapshot: %v", err)
		}
	}
}

// shutdownCooperative: Shutdown of a guest that takes the request
// returns once it powered off, before its ctx is done.
func (s *suite) shutdownCooperative(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), s.h.BootTimeout)
	defer cancel()
	m, spec := s.start(ctx, t, s.h.New(t), Cooperative)
	s.waitReady(ctx, t, m, spec)
	if err := m.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if ctx.Err() != nil {
		t.Error("Shutdown returned only once its ctx was done: the guest did not power off")
	}
	s.assertGone(t, m, spec)
	s.assertEnded(ctx, t, m)
}

// shutdownKillsIgnoringGuest: Shutdown of a guest that ignores the
// request kills the VMM once its ctx is done, and returns nil.
func (s *suite) shutdownKillsIgnoringGuest(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), s.h.BootTimeout)
	defer cancel()
	m, spec := s.start(ctx, t, s.h.New(t), IgnoresShutdown)
	s.waitReady(ctx, t, m, spec)
	const grace = time.Second
	begin := time.Now()
	sctx, scancel := context.WithTimeout(ctx, grace)
	defer scancel()
	if err := m.Shutdown(sctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if el := time.Since(begin); el < grace {
		t.Errorf("Shutdown returned after %s, before its ctx was done", el)
	}
	s.assertGone(t, m, spec)
	s.assertEnded(ctx, t, m)
}

// adoptAfterRestart: a new daemon refuses handles that are not the
// machine's, adopts the one that is, drives the guest through it, and
// sees the machine gone after its shutdown.
func (s *suite) adoptAfterRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), s.h.BootTimeout)
	defer cancel()
	d1 := s.h.New(t)
	m1, spec := s.start(ctx, t, d1, Cooperative)
	h := m1.Handle()
	s.waitReady(ctx, t, m1, spec)
	d2 := s.h.New(t)
	if s.h.Restart != nil {
		d2 = s.h.Restart(t, d1, m1)
	}

	for name, a := range s.badAdoptions(t, spec, h) {
		m, err := d2.Adopt(ctx, a.Spec, a.Handle)
		if !errors.Is(err, vmm.ErrNotRunning) {
			t.Errorf("Adopt (%s) = %v, want ErrNotRunning", name, err)
		}
		if err == nil {
			m.Kill()
		}
	}

	m2, err := d2.Adopt(ctx, spec, h)
	if err != nil {
		t.Fatalf("Adopt: %v", err)
	}
	if diff := cmp.Diff(h, m2.Handle()); diff != "" {
		t.Errorf("adopted handle (-want +got):\n%s", diff)
	}
	s.agent(ctx, t, m2)
	if p, ok := m2.(vmm.Pauser); ok {
		if err := p.Pause(ctx); err != nil {
			t.Errorf("Pause of the adopted machine: %v", err)
		}
		if err := p.Resume(ctx); err != nil {
			t.Errorf("Resume of the adopted machine: %v", err)
		}
	}
	if err := m2.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown of the adopted machine: %v", err)
	}
	if ctx.Err() != nil {
		t.Error("Shutdown of the adopted machine returned only once its ctx was done")
	}
	s.assertGone(t, m2, spec)
	WaitDone(t, m1) // the first daemon's child was reaped, not left a zombie
	if _, err := d2.Adopt(ctx, spec, h); !errors.Is(err, vmm.ErrNotRunning) {
		t.Errorf("Adopt after exit = %v, want ErrNotRunning", err)
	}
}

// badAdoptions are handles of the running machine h that Adopt must
// refuse.
func (s *suite) badAdoptions(t *testing.T, spec vmm.Spec, h vmm.Handle) map[string]Adoption {
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	with := func(driver string, pid int) Adoption {
		a := Adoption{Spec: spec, Handle: h}
		a.Handle.Driver, a.Handle.PID = driver, pid
		return a
	}
	bad := map[string]Adoption{
		"another driver's handle":  with("not-"+s.h.Name, h.PID),
		"no pid":                   with(h.Driver, 0),
		"pid of another program":   with(h.Driver, os.Getpid()),
		"pid of an exited process": with(h.Driver, dead.Process.Pid),
	}
	if s.h.BadAdopts != nil {
		for name, a := range s.h.BadAdopts(t, spec, h) {
			bad[name] = a
		}
	}
	return bad
}

// twoAtOnce: two machines started at the same time run side by side, each
// with its own vsock context id and agent; with AF_VSOCK the host's ids
// are guarded.
func (s *suite) twoAtOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), s.h.BootTimeout)
	defer cancel()
	d := s.h.New(t)
	var ms [2]vmm.Machine
	var specs [2]vmm.Spec
	var errs [2]error
	var wg sync.WaitGroup
	for i := range ms {
		specs[i] = s.h.Spec(t, Cooperative)
		wg.Go(func() { ms[i], specs[i], errs[i] = s.tryStart(ctx, t, d, specs[i]) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Start of machine %d: %v", i, err)
		}
	}
	if ms[0].Handle().PID == ms[1].Handle().PID {
		t.Errorf("both machines have pid %d", ms[0].Handle().PID)
	}
	for i, m := range ms {
		s.waitReady(ctx, t, m, specs[i])
		s.agent(ctx, t, m)
	}
	s.checkGuestCIDs(t, ms[:], specs[:])
	if d.Features().Transport == vmm.TransportVsock {
		s.checkHostCIDs(ctx, t, d, specs[0].VsockCID)
	}
	for _, m := range ms {
		wg.Go(func() {
			if err := m.Kill(); err != nil {
				t.Errorf("Kill: %v", err)
			}
		})
	}
	wg.Wait()
	for i, m := range ms {
		s.assertGone(t, m, specs[i])
	}
}

// checkGuestCIDs checks that each guest with a vsock device got its
// spec's context id: non-zero and so unique across the machines.
func (s *suite) checkGuestCIDs(t *testing.T, ms []vmm.Machine, specs []vmm.Spec) {
	t.Helper()
	if s.h.GuestCID == nil {
		t.Log("the harness cannot see guest context ids: not checked")
		return
	}
	seen := map[uint32]int{}
	for i, m := range ms {
		cid, ok := s.h.GuestCID(t, m)
		if !ok {
			t.Logf("machine %d has no vsock device: its cid is not checked", i)
			continue
		}
		if cid != specs[i].VsockCID || cid < 3 {
			t.Errorf("guest %d has vsock cid %d, want its spec's %d", i, cid, specs[i].VsockCID)
		}
		if j, dup := seen[cid]; dup {
			t.Errorf("guests %d and %d share vsock cid %d", j, i, cid)
		}
		seen[cid] = i
	}
}

// checkHostCIDs: with AF_VSOCK, a context id below 3 is refused, and so
// is one a running machine holds, with vmm.ErrCIDInUse.
func (s *suite) checkHostCIDs(ctx context.Context, t *testing.T, d vmm.Driver, held uint32) {
	t.Helper()
	for _, cid := range []uint32{0, 2, held} {
		spec := s.h.Spec(t, Cooperative)
		spec.VsockCID = cid
		m, err := d.Start(ctx, spec)
		if err == nil {
			m.Kill()
			t.Errorf("Start with vsock cid %d succeeded", cid)
			continue
		}
		if cid == held && !errors.Is(err, vmm.ErrCIDInUse) {
			t.Errorf("Start with the cid of a running machine = %v, want ErrCIDInUse", err)
		}
		if cid < 3 && !strings.Contains(err.Error(), "cid") {
			t.Errorf("Start with vsock cid %d = %q, want it to name the cid", cid, err)
		}
		s.assertNoLeftovers(t, spec)
	}
}

// start starts a machine whose guest behaves as g and kills it at cleanup.
