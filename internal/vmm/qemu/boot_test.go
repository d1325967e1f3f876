package qemu

import (
	"bufio"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"banger/internal/vmm"
	"banger/internal/vmm/vmmtest"
)

// startVM boots spec and kills the VM at cleanup.
func startVM(t *testing.T, d *Driver, spec vmm.Spec) vmm.Machine {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	return vmmtest.Start(ctx, t, d, spec)
}

// assertGone checks that QEMU has exited and left nothing behind.
func assertGone(t *testing.T, m vmm.Machine, spec vmm.Spec) {
	t.Helper()
	vmmtest.AssertGone(t, m, spec, pidFileName)
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

// TestBootDrivesAndGuestPowerOff: the guest sees the drives in Spec order
// with their sizes and read-only flags, and a guest that powers off on
// its own ends QEMU.
func TestBootDrivesAndGuestPowerOff(t *testing.T) {
	k := needBoot(t)
	spec := testSpec(t, k, needInitrd(t, k))
	for i, size := range []int64{1 << 20, 2 << 20} {
		p := filepath.Join(filepath.Dir(spec.ConsoleLog), "disk"+string(rune('a'+i))+".img")
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
}
