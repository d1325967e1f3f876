package vmmtest_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"banger/internal/vmm"
	"banger/internal/vmm/vmmtest"
)

// ignoreShutdown on a spec's command line makes the pretend guest ignore
// Shutdown (through MemOptions.Guest).
const ignoreShutdown = "test.ignore-shutdown"

func newMem(opts vmmtest.MemOptions) *vmmtest.MemDriver {
	opts.Guest = func(s vmm.Spec) vmmtest.MemGuest {
		return vmmtest.MemGuest{IgnoreShutdown: strings.Contains(s.Cmdline, ignoreShutdown)}
	}
	return vmmtest.NewMemDriver(opts)
}

func memSpec(t *testing.T) vmm.Spec {
	dir := t.TempDir()
	return vmm.Spec{
		ID: "vm-" + filepath.Base(dir), Name: t.Name(), Dir: filepath.Join(dir, "vm"),
		VCPUs: 1, MemoryMiB: 64, Kernel: filepath.Join(dir, "vmlinux"),
		ConsoleLog: filepath.Join(dir, "console.log"), VsockCID: 3,
	}
}

// TestMemDriverSuite runs the behaviour suite against MemDriver. Every
// case applies but ExitAtOnce: there is no VMM process to exit (a failing
// Start is MemOptions.StartHook, see TestMemStartHook). The guest's Ready
// line, agent answer and ignoring of Shutdown are the pretend guest's, so
// those cases pin MemDriver's model of a guest, not a real one.
func TestMemDriverSuite(t *testing.T) {
	vmmtest.Run(t, vmmtest.Harness{
		Name:     "mem",
		Features: vmm.Features{Snapshots: true, Pause: true, Accel: vmm.AccelKVM, Transport: vmm.TransportVsock},
		New:      func(*testing.T) vmm.Driver { return newMem(vmmtest.MemOptions{}) },
		Spec: func(t *testing.T, g vmmtest.Guest) vmm.Spec {
			s := memSpec(t)
			if g == vmmtest.IgnoresShutdown {
				s.Cmdline = ignoreShutdown
			}
			return s
		},
		Ready: "vmmtest: guest ",
		Agent: vmmtest.Echo,
		Restart: func(_ *testing.T, old vmm.Driver, _ vmm.Machine) vmm.Driver {
			return old.(*vmmtest.MemDriver).Restart()
		},
		BadAdopts: func(t *testing.T, spec vmm.Spec, h vmm.Handle) map[string]vmmtest.Adoption {
			other := spec
			other.Dir = t.TempDir()
			return map[string]vmmtest.Adoption{"another vm's dir": {Spec: other, Handle: h}}
		},
		Unavailable: func(*testing.T) vmm.Driver { return newMem(vmmtest.MemOptions{Unavailable: "no pretend host"}) },
		GuestCID: func(_ *testing.T, m vmm.Machine) (uint32, bool) {
			return m.(*vmmtest.MemMachine).Spec().VsockCID, true
		},
		Crash: func(_ *testing.T, m vmm.Machine) { m.(*vmmtest.MemMachine).Crash() },
		Skip: map[string]string{
			"ExitAtOnce": "MemDriver has no VMM process to exit; a failing Start is MemOptions.StartHook",
		},
	})
}

func ops(events []vmmtest.Event) []string {
	var out []string
	for _, e := range events {
		s := e.Op
		if e.Detail != "" {
			s += " " + e.Detail
		}
		out = append(out, s)
	}
	return out
}

func TestMemRecords(t *testing.T) {
	d := newMem(vmmtest.MemOptions{})
	ctx := t.Context()
	spec := memSpec(t)
	mc, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	m := d.Machine(spec.ID)
	if m == nil || m.Handle().PID != mc.Handle().PID {
		t.Fatalf("Machine(%q) = %v, want the started machine", spec.ID, m)
	}
	conn, err := mc.DialAgent(ctx)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	mc.(vmm.Pauser).Pause(ctx)
	if !m.Paused() {
		t.Error("Paused after Pause = false")
	}
	mc.(vmm.Pauser).Resume(ctx)
	if err := mc.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	want := []string{"start", "dial-agent", "pause", "resume", "shutdown", "exit powered off"}
	events := d.Events()
	if diff := cmp.Diff(want, ops(events)); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(spec, events[0].Spec); diff != "" {
		t.Errorf("spec of the start event (-want +got):\n%s", diff)
	}
	if m.Exit() != "powered off" || d.Machine(spec.ID) != nil {
		t.Errorf("after Shutdown: Exit %q, Machine %v", m.Exit(), d.Machine(spec.ID))
	}
}

func TestMemStartHook(t *testing.T) {
	fail := errors.New("firecracker exited during start: simulated crash")
	calls := 0
	d := newMem(vmmtest.MemOptions{StartHook: func(vmm.Spec) error {
		if calls++; calls == 1 {
			return fmt.Errorf("%w: %w", fail, vmm.ErrNotRunning)
		}
		return nil
	}})
	spec := memSpec(t)
	if _, err := d.Start(t.Context(), spec); !errors.Is(err, fail) || !errors.Is(err, vmm.ErrNotRunning) {
		t.Fatalf("Start = %v, want the hook's error", err)
	}
	if d.Machine(spec.ID) != nil {
		t.Error("a failed start left a machine")
	}
	if _, err := d.Start(t.Context(), spec); err != nil {
		t.Fatalf("second Start: %v", err)
	}
	events := d.Events()
	if diff := cmp.Diff([]string{"start-failed", "start"}, ops(events)); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	if !errors.Is(events[0].Err, fail) {
		t.Errorf("start-failed event has error %v", events[0].Err)
	}
}

func TestMemCIDs(t *testing.T) {
	d := newMem(vmmtest.MemOptions{})
	d.HoldCID(7)
	spec := memSpec(t)
	spec.VsockCID = 7
	if _, err := d.Start(t.Context(), spec); !errors.Is(err, vmm.ErrCIDInUse) {
		t.Fatalf("Start with a held cid = %v, want ErrCIDInUse", err)
	}
	spec.VsockCID = 8
	if _, err := d.Start(t.Context(), spec); err != nil {
		t.Fatal(err)
	}
	// The same dir twice is a daemon bug the real drivers trip on too.
	spec.VsockCID = 9
	if _, err := d.Start(t.Context(), spec); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second Start in the same dir = %v, want a refusal", err)
	}
	// Without AF_VSOCK context ids are the guest's own business.
	serial := newMem(vmmtest.MemOptions{Transport: vmm.TransportVirtioSerial})
	serial.HoldCID(7)
	spec = memSpec(t)
	spec.VsockCID = 7
	if _, err := serial.Start(t.Context(), spec); err != nil {
		t.Fatalf("Start with virtio-serial and a held cid: %v", err)
	}
}

func TestMemGuestAgent(t *testing.T) {
	t.Run("no agent", func(t *testing.T) {
		d := vmmtest.NewMemDriver(vmmtest.MemOptions{Guest: func(vmm.Spec) vmmtest.MemGuest { return vmmtest.MemGuest{NoAgent: true} }})
		m, err := d.Start(t.Context(), memSpec(t))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		if _, err := m.DialAgent(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("DialAgent = %v, want it to retry until ctx is done", err)
		}
	})
	t.Run("slow agent", func(t *testing.T) {
		const delay = 100 * time.Millisecond
		d := vmmtest.NewMemDriver(vmmtest.MemOptions{Guest: func(vmm.Spec) vmmtest.MemGuest { return vmmtest.MemGuest{AgentDelay: delay} }})
		begin := time.Now()
		m, err := d.Start(t.Context(), memSpec(t))
		if err != nil {
			t.Fatal(err)
		}
		conn, err := m.DialAgent(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		conn.Close()
		if el := time.Since(begin); el < delay {
			t.Errorf("DialAgent connected after %s, before the agent was up", el)
		}
	})
	t.Run("agent powers off, crash breaks connections", func(t *testing.T) {
		d := vmmtest.NewMemDriver(vmmtest.MemOptions{Agent: func(ctx context.Context, m *vmmtest.MemMachine, conn net.Conn) {
			io.WriteString(conn, "hello\n")
			if line, _ := bufio.NewReader(conn).ReadString('\n'); line == "poweroff\n" {
				m.PowerOff()
			}
			<-ctx.Done()
		}})
		spec := memSpec(t)
		m, _ := d.Start(t.Context(), spec)
		conn, err := m.DialAgent(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		other, err := m.DialAgent(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		other.SetDeadline(time.Now().Add(5 * time.Second))
		br := bufio.NewReader(other)
		if line, err := br.ReadString('\n'); line != "hello\n" {
			t.Fatalf("second connection read %q, %v; want hello", line, err)
		}
		io.WriteString(conn, "poweroff\n")
		<-m.Done()
		if got := m.(*vmmtest.MemMachine).Exit(); got != "powered off" {
			t.Errorf("Exit = %q", got)
		}
		// The second connection breaks with the machine.
		if b, err := io.ReadAll(br); err != nil || len(b) > 0 {
			t.Errorf("second connection read %q, %v after power-off; want EOF", b, err)
		}
		if _, err := m.DialAgent(t.Context()); !errors.Is(err, vmm.ErrNotRunning) {
			t.Errorf("DialAgent after power-off = %v", err)
		}
	})
}
