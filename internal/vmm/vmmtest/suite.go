package vmmtest

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"banger/internal/prereq"
	"banger/internal/vmm"
)

// Guest is how the guest of a test Spec behaves.
type Guest int

const (
	// Cooperative guests power off when Shutdown asks (ACPI power
	// button, Ctrl-Alt-Del).
	Cooperative Guest = iota
	// IgnoresShutdown guests ignore Shutdown's request: only a kill ends
	// them.
	IgnoresShutdown
)

// Adoption is a spec and handle given to Adopt.
type Adoption struct {
	Spec   vmm.Spec
	Handle vmm.Handle
}

// Harness is what Run needs to know about one driver on this host. New,
// Spec, Ready and Agent are required; the rest have defaults or, when
// nil, skip the case that needs them.
type Harness struct {
	// Name is what Driver.Name and Handle.Driver say.
	Name string
	// Features is what Features of a driver from New says.
	Features vmm.Features
	// New returns a driver as a daemon constructs it.
	New func(t *testing.T) vmm.Driver
	// Spec returns a bootable spec whose guest behaves as g, with a Dir
	// that does not exist yet. It skips t when the host cannot boot one.
	// Run sets VsockCID itself, unique among the machines of the run.
	Spec func(t *testing.T, g Guest) vmm.Spec
	// Ready is a line the guest writes to its console once it is up and,
	// when Cooperative, ready for a shutdown request.
	Ready string
	// Agent exchanges a few bytes with the guest agent over conn, the
	// first connection DialAgent gave for a machine, and says what was
	// wrong when the guest's side did not answer as it should.
	Agent func(ctx context.Context, conn net.Conn) error
	// Restart returns the driver of a new daemon once the old one, which
	// started m, has gone (what it held open on m is closed). Default:
	// New.
	Restart func(t *testing.T, old vmm.Driver, m vmm.Machine) vmm.Driver
	// BadAdopts adds driver-specific adoptions of the running machine h
	// that Adopt must refuse with vmm.ErrNotRunning.
	BadAdopts func(t *testing.T, spec vmm.Spec, h vmm.Handle) map[string]Adoption
	// Unavailable returns a driver that cannot run on this host (its VMM
	// binary is missing).
	Unavailable func(t *testing.T) vmm.Driver
	// ExitAtOnce returns a driver and spec whose VMM exits during Start,
	// and a piece of what the VMM says about why.
	ExitAtOnce func(t *testing.T) (vmm.Driver, vmm.Spec, string)
	// GuestCID returns the vsock context id the guest of m was given, and
	// false when it has no vsock device.
	GuestCID func(t *testing.T, m vmm.Machine) (uint32, bool)
	// Crash ends m's VMM from outside the driver. Default: SIGKILL to
	// Handle().PID.
	Crash func(t *testing.T, m vmm.Machine)
	// RunFiles are names in Spec.Dir that must be gone once the VMM has
	// exited. Sockets in Spec.Dir always must.
	RunFiles []string
	// BootTimeout bounds a boot up to Ready and the agent's answer.
	// Default 60s.
	BootTimeout time.Duration
	// Skip names cases that do not apply to this driver, with the reason.
	Skip map[string]string
}

// Run runs the behaviour suite against the driver h describes, one
// subtest per case.
func Run(t *testing.T, h Harness) {
	if h.BootTimeout <= 0 {
		h.BootTimeout = 60 * time.Second
	}
	s := &suite{h: h}
	cases := []struct {
		name string
		run  func(*testing.T)
	}{
		{"Identity", s.identity},
		{"BadSpec", s.badSpec},
		{"Unavailable", s.unavailable},
		{"StartCancelled", s.startCancelled},
		{"ExitAtOnce", s.exitAtOnce},
		{"Boot", s.boot},
		{"ShutdownCooperative", s.shutdownCooperative},
		{"ShutdownKillsIgnoringGuest", s.shutdownKillsIgnoringGuest},
		{"AdoptAfterRestart", s.adoptAfterRestart},
		{"TwoAtOnce", s.twoAtOnce},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if why, ok := h.Skip[c.name]; ok {
				prereq.ByDesign(t, "%s", why)
			}
			c.run(t)
		})
	}
}

type suite struct{ h Harness }

// cids hands out vsock context ids, from a random base so that runs in
// parallel processes on one host rarely meet.
var (
	cidBase = 1000 + rand.Uint32N(1<<24)
	cidNext atomic.Uint32
)

func nextCID() uint32 { return cidBase + cidNext.Add(1) }

func (s *suite) start(ctx context.Context, t *testing.T, d vmm.Driver, g Guest) (vmm.Machine, vmm.Spec) {
	t.Helper()
	m, spec, err := s.tryStart(ctx, t, d, s.h.Spec(t, g))
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	return m, spec
}

// tryStart gives spec a fresh vsock context id, another one while the
// host says it is taken, starts it and kills it at cleanup. It is safe to
// call from several goroutines.
func (s *suite) tryStart(ctx context.Context, t *testing.T, d vmm.Driver, spec vmm.Spec) (vmm.Machine, vmm.Spec, error) {
	for range 5 {
		spec.VsockCID = nextCID()
		m, err := d.Start(ctx, spec)
		if errors.Is(err, vmm.ErrCIDInUse) {
			continue
		}
		if err != nil {
			return nil, spec, err
		}
		t.Cleanup(func() { m.Kill() })
		return m, spec, nil
	}
	return nil, spec, errors.New("every vsock cid tried was taken on the host")
}

// waitReady waits for the Ready line on the machine's console.
func (s *suite) waitReady(ctx context.Context, t *testing.T, m vmm.Machine, spec vmm.Spec) {
	t.Helper()
	for {
		b, _ := os.ReadFile(spec.ConsoleLog)
		if strings.Contains(string(b), s.h.Ready) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("console never said %q: %v\n%s", s.h.Ready, ctx.Err(), tail(b))
		case <-m.Done():
			t.Fatalf("the vmm exited before the console said %q\n%s", s.h.Ready, tail(b))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func tail(b []byte) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(len(lines)-10, 0):], "\n")
}

// agent dials the machine's agent and runs the harness's exchange.
func (s *suite) agent(ctx context.Context, t *testing.T, m vmm.Machine) {
	t.Helper()
	conn, err := m.DialAgent(ctx)
	if err != nil {
		t.Fatalf("DialAgent: %v", err)
	}
	defer conn.Close()
	if d, ok := ctx.Deadline(); ok {
		conn.SetDeadline(d)
	}
	if err := s.h.Agent(ctx, conn); err != nil {
		t.Fatalf("guest agent: %v", err)
	}
}

func (s *suite) crash(t *testing.T, m vmm.Machine) {
	t.Helper()
	if s.h.Crash != nil {
		s.h.Crash(t, m)
		return
	}
	if err := syscall.Kill(m.Handle().PID, syscall.SIGKILL); err != nil {
		t.Fatalf("killing the vmm from outside: %v", err)
	}
}

// assertEnded checks what a machine whose VMM has exited answers.
func (s *suite) assertEnded(ctx context.Context, t *testing.T, m vmm.Machine) {
	t.Helper()
	if _, err := m.DialAgent(ctx); !errors.Is(err, vmm.ErrNotRunning) {
		t.Errorf("DialAgent after exit = %v, want ErrNotRunning", err)
	}
	if err := m.Kill(); err != nil {
		t.Errorf("Kill after exit = %v, want nil", err)
	}
	if err := m.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown after exit = %v, want nil", err)
	}
}

// assertGone checks that m's VMM has exited and left nothing behind.
func (s *suite) assertGone(t *testing.T, m vmm.Machine, spec vmm.Spec) {
	t.Helper()
	AssertGone(t, m, spec, s.h.RunFiles...)
}

func (s *suite) assertNoLeftovers(t *testing.T, spec vmm.Spec) {
	t.Helper()
	AssertNoLeftovers(t, spec.Dir, s.h.RunFiles...)
}
