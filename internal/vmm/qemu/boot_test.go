package qemu

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"banger/internal/vmm"
)

// startVM boots spec and kills the VM at cleanup.
func startVM(t *testing.T, d *Driver, spec vmm.Spec) vmm.Machine {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	m, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { m.Kill() })
	return m
}

// assertGone checks that QEMU and its sockets are gone.
func assertGone(t *testing.T, m vmm.Machine, spec vmm.Spec) {
	t.Helper()
	select {
	case <-m.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done not closed")
	}
	if pid := m.Handle().PID; pidAlive(pid) {
		t.Errorf("qemu pid %d still running", pid)
	}
	for _, name := range []string{qmpSocketName, agentSocketName, pidFileName} {
		if _, err := os.Stat(filepath.Join(spec.Dir, name)); err == nil {
			t.Errorf("%s left behind", name)
		}
	}
}

// agentHello dials the agent channel and reads the guest's first line.
func agentHello(ctx context.Context, t *testing.T, m vmm.Machine) (net.Conn, string) {
	t.Helper()
	conn, err := m.DialAgent(ctx)
	if err != nil {
		t.Fatalf("DialAgent: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	if d, ok := ctx.Deadline(); ok {
		conn.SetReadDeadline(d)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatalf("reading from agent channel: %v", err)
	}
	return conn, strings.TrimSpace(line)
}

func TestBootKernelPanicEndsQEMU(t *testing.T) {
	k := needBoot(t)
	spec := testSpec(t, k, "") // no initrd, no root: the kernel panics
	m := startVM(t, New(Options{}), spec)
	select {
	case <-m.Done():
	case <-time.After(60 * time.Second):
		t.Fatal("qemu still running 60s after boot; panic=1 with -no-reboot should end it")
	}
	log, _ := os.ReadFile(spec.ConsoleLog)
	for _, want := range []string{"Linux version", "tsc_early_khz=", "Kernel panic"} {
		if !strings.Contains(string(log), want) {
			t.Errorf("console log lacks %q", want)
		}
	}
	assertGone(t, m, spec)
}

func TestBootAgentChannelDrivesAndPowerOff(t *testing.T) {
	k := needBoot(t)
	spec := testSpec(t, k, needInitrd(t, k))
	for i, size := range []int64{1 << 20, 2 << 20} {
		p := filepath.Join(spec.Dir, "disk"+string(rune('a'+i))+".img")
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		os.Truncate(p, size)
		spec.Drives = append(spec.Drives, vmm.Drive{ID: "d" + string(rune('a'+i)), Path: p, ReadOnly: i == 1})
	}
	m := startVM(t, New(Options{}), spec)

	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	conn, hello := agentHello(ctx, t, m)
	if hello != "hello-from-guest" {
		t.Fatalf("agent channel said %q, want hello-from-guest", hello)
	}
	p := m.(vmm.Pauser)
	if err := p.Pause(ctx); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	if err := p.Resume(ctx); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	log, _ := os.ReadFile(spec.ConsoleLog)
	var blocks []string
	for _, l := range strings.Split(string(log), "\n") {
		if strings.HasPrefix(l, "BLOCK ") {
			blocks = append(blocks, strings.TrimSpace(l))
		}
	}
	// vda is the first drive (1 MiB = 2048 sectors, rw); vdb the second, ro.
	if diff := cmp.Diff([]string{"BLOCK vda 2048 0", "BLOCK vdb 4096 1"}, blocks); diff != "" {
		t.Errorf("guest block devices (-want +got):\n%s", diff)
	}
	// The guest echoes the line to its console, then powers off.
	if _, err := conn.Write([]byte("poweroff\n")); err != nil {
		t.Fatalf("writing to agent channel: %v", err)
	}
	select {
	case <-m.Done():
	case <-ctx.Done():
		t.Fatal("guest poweroff did not end qemu")
	}
	log, _ = os.ReadFile(spec.ConsoleLog)
	if !strings.Contains(string(log), "GOT poweroff") {
		t.Errorf("console lacks the line sent over the agent channel")
	}
	assertGone(t, m, spec)
	if _, err := m.DialAgent(ctx); !errors.Is(err, vmm.ErrNotRunning) {
		t.Errorf("DialAgent after exit: %v, want ErrNotRunning", err)
	}
	if err := m.Kill(); err != nil {
		t.Errorf("Kill after exit: %v, want nil", err)
	}
}

func TestShutdownKillsIgnoringGuest(t *testing.T) {
	k := needBoot(t)
	spec := testSpec(t, k, needInitrd(t, k))
	m := startVM(t, New(Options{}), spec)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	if err := waitConsole(ctx, spec.ConsoleLog, "BANGER-INIT-READY"); err != nil {
		t.Fatalf("waiting for init: %v", err)
	}
	// Busybox init has no ACPI handler: the power button is ignored, so
	// Shutdown must fall back to killing QEMU when its ctx is done.
	sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
	defer scancel()
	if err := m.Shutdown(sctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	assertGone(t, m, spec)
	if err := m.Shutdown(ctx); err != nil {
		t.Errorf("second Shutdown: %v, want nil", err)
	}
}

func TestShutdownGracefulPowerButton(t *testing.T) {
	k := needBoot(t)
	spec := testSpec(t, k, needInitrd(t, k))
	spec.Cmdline = "banger.test.acpi"
	m := startVM(t, New(Options{}), spec)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	if err := waitConsole(ctx, spec.ConsoleLog, "POWER-WATCH"); err != nil {
		t.Fatalf("waiting for init: %v", err)
	}
	if err := m.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if ctx.Err() != nil {
		t.Fatal("Shutdown only returned after its ctx was done")
	}
	log, _ := os.ReadFile(spec.ConsoleLog)
	if !strings.Contains(string(log), "POWER-BUTTON") {
		t.Errorf("guest did not see the ACPI power button")
	}
	assertGone(t, m, spec)
}

func TestAdoptAfterDaemonRestart(t *testing.T) {
	k := needBoot(t)
	spec := testSpec(t, k, needInitrd(t, k))
	m1 := startVM(t, New(Options{}), spec)
	h := m1.Handle()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	// The first daemon goes away: its QMP connection closes with it.
	m1.(*Machine).qmp.close()

	d2 := New(Options{}) // a new daemon
	other := spec
	other.Dir = t.TempDir()
	if _, err := d2.Adopt(ctx, other, h); !errors.Is(err, vmm.ErrNotRunning) {
		t.Errorf("Adopt with another VM's dir: %v, want ErrNotRunning", err)
	}
	self := h
	self.PID = os.Getpid()
	if _, err := d2.Adopt(ctx, spec, self); !errors.Is(err, vmm.ErrNotRunning) {
		t.Errorf("Adopt of a non-qemu pid: %v, want ErrNotRunning", err)
	}

	m2, err := d2.Adopt(ctx, spec, h)
	if err != nil {
		t.Fatalf("Adopt: %v", err)
	}
	if diff := cmp.Diff(h, m2.Handle()); diff != "" {
		t.Errorf("adopted handle (-want +got):\n%s", diff)
	}
	if _, hello := agentHello(ctx, t, m2); hello != "hello-from-guest" {
		t.Errorf("agent channel of adopted vm said %q", hello)
	}
	if err := m2.(vmm.Pauser).Pause(ctx); err != nil {
		t.Errorf("Pause through adopted qmp: %v", err)
	}
	sctx, scancel := context.WithTimeout(ctx, time.Second)
	defer scancel()
	if err := m2.Shutdown(sctx); err != nil {
		t.Fatalf("Shutdown of adopted vm: %v", err)
	}
	assertGone(t, m2, spec)
	select {
	case <-m1.Done(): // the original child was reaped, not left a zombie
	case <-time.After(5 * time.Second):
		t.Error("first machine's Done not closed")
	}
	if _, err := d2.Adopt(ctx, spec, h); !errors.Is(err, vmm.ErrNotRunning) {
		t.Errorf("Adopt after exit: %v, want ErrNotRunning", err)
	}
}

func TestStartQEMUExitsAtOnce(t *testing.T) {
	k := needBoot(t)
	spec := testSpec(t, k, "")
	spec.Kernel = filepath.Join(spec.Dir, "no-such-kernel")
	_, err := New(Options{}).Start(t.Context(), spec)
	if err == nil {
		t.Fatal("Start with a missing kernel succeeded")
	}
	if !errors.Is(err, vmm.ErrNotRunning) || !strings.Contains(err.Error(), "no-such-kernel") {
		t.Errorf("error %q should wrap ErrNotRunning and quote QEMU's complaint", err)
	}
	for _, name := range []string{qmpSocketName, agentSocketName, pidFileName} {
		if _, err := os.Stat(filepath.Join(spec.Dir, name)); err == nil {
			t.Errorf("%s left behind", name)
		}
	}
}

func TestStartCancelledLeavesNothing(t *testing.T) {
	k := needBoot(t)
	spec := testSpec(t, k, "")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := New(Options{}).Start(ctx, spec); !errors.Is(err, context.Canceled) {
		t.Fatalf("Start with a cancelled ctx: %v, want context.Canceled", err)
	}
	for _, name := range []string{qmpSocketName, agentSocketName, pidFileName} {
		if _, err := os.Stat(filepath.Join(spec.Dir, name)); err == nil {
			t.Errorf("%s left behind", name)
		}
	}
}
