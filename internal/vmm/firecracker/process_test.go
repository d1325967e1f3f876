package firecracker

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"banger/internal/vmm"
	"banger/internal/vmm/fchost"
	"banger/internal/vmm/vmmtest"
)

// TestStartFailures plays Firecracker's failure modes. Each must give a
// clear error and leave no process or socket behind.
func TestStartFailures(t *testing.T) {
	apiSpec := loadSpec(t)
	tests := []struct {
		name       string
		mode       string
		timeout    time.Duration
		wantIn     []string
		wantIs     error
		wantAPIErr bool
	}{
		{
			name: "400 with fault_message", mode: modeFault, timeout: 5 * time.Second,
			wantIn:     []string{"PUT /drives/root", "400", "Unable to create the block device"},
			wantAPIErr: true,
		},
		{
			name: "socket never appears", mode: modeNoSocket, timeout: 300 * time.Millisecond,
			wantIn: []string{"waiting for the firecracker API socket", "deadline exceeded"},
		},
		{
			name: "unsupported API version", mode: modeOldVersion, timeout: 5 * time.Second,
			wantIn: []string{"speaks API 1.5.0", fchost.MinAPIVersion, "install a newer firecracker"},
			wantIs: vmm.ErrUnavailable,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, logPath := newStandinDriver(t, tt.mode)
			d.opts.SocketTimeout = tt.timeout
			spec := testSpec(t)
			_, err := d.Start(t.Context(), spec)
			if err == nil {
				t.Fatal("Start succeeded")
			}
			t.Logf("error: %v", err)
			for _, s := range tt.wantIn {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error lacks %q", s)
				}
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error does not wrap %v", tt.wantIs)
			}
			var apiErr *APIError
			if tt.wantAPIErr && !errors.As(err, &apiErr) {
				t.Errorf("error is no *APIError")
			}
			vmmtest.AssertNoLeftovers(t, spec.Dir)
			if _, err := os.Stat(spec.Dir); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("vm directory created by Start is left behind: %v", err)
			}
			// What was sent before the failure still follows the contract.
			if reqs := readRecorded(t, logPath); len(reqs) > 0 {
				validateAll(t, apiSpec, reqs)
			}
		})
	}
}

// TestStartBadInput covers what is refused before anything is created.
func TestStartBadInput(t *testing.T) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "firecracker-noexec")
	os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644)
	exe, _ := os.Executable()
	noKVM := func() error { return fchost.CheckKVMAt(filepath.Join(dir, "no-kvm")) }
	okKVM := func() error { return nil }
	tests := []struct {
		name   string
		opts   Options
		spec   func(*vmm.Spec)
		wantIs error
		wantIn string
	}{
		{"binary not in PATH", Options{Bin: "firecracker-not-installed-here", CheckKVM: okKVM}, nil, vmm.ErrUnavailable, "install firecracker"},
		{"binary not executable", Options{Bin: notExec, CheckKVM: okKVM}, nil, vmm.ErrUnavailable, "chmod +x"},
		{"binary is a directory", Options{Bin: dir, CheckKVM: okKVM}, nil, vmm.ErrUnavailable, "is a directory"},
		{"kvm missing", Options{Bin: exe, CheckKVM: noKVM}, nil, vmm.ErrUnavailable, "modprobe kvm_intel"},
		{"jailer missing", Options{Bin: exe, JailerBin: filepath.Join(dir, "jailer"), CheckKVM: okKVM}, nil, vmm.ErrUnavailable, "jailer_bin"},
		{"too many vcpus", Options{Bin: exe, CheckKVM: okKVM}, func(s *vmm.Spec) { s.VCPUs = 64 }, nil, "1 to 32 vcpus"},
		{"root not first", Options{Bin: exe, CheckKVM: okKVM}, func(s *vmm.Spec) { s.Drives[0].Root, s.Drives[1].Root = false, true }, nil, "must be the first drive"},
		{"bad drive id", Options{Bin: exe, CheckKVM: okKVM}, func(s *vmm.Spec) { s.Drives[0].ID = "root/../x" }, nil, "drive id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := testSpec(t)
			if tt.spec != nil {
				tt.spec(&spec)
			}
			_, err := New(tt.opts).Start(t.Context(), spec)
			if err == nil {
				t.Fatal("Start succeeded")
			}
			t.Logf("error: %v", err)
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error does not wrap %v", tt.wantIs)
			}
			if !strings.Contains(err.Error(), tt.wantIn) {
				t.Errorf("error lacks %q", tt.wantIn)
			}
			if _, err := os.Stat(spec.Dir); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("vm directory was created: %v", err)
			}
		})
	}
}

// TestAdoptNonChild starts a stand-in that is not a child of this
// process, the way a restarted daemon finds firecracker, adopts it and
// stops it; exit is seen through the pidfd.
func TestAdoptNonChild(t *testing.T) {
	d, _ := newStandinDriver(t, modeOK)
	spec := testSpec(t)
	os.MkdirAll(spec.Dir, 0o700)
	sock := filepath.Join(spec.Dir, APISocketName)
	// sh starts the stand-in in the background and exits: the stand-in is
	// reparented away from this test process.
	out, err := exec.Command("sh", "-c", `setsid "$0" --api-sock "$1" --id adopt >/dev/null 2>&1 & echo $!`, d.opts.Bin, sock).Output()
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	t.Cleanup(func() { killPID(pid) })
	waitSocket(t, sock)

	h := vmm.Handle{Driver: Name, PID: pid, Data: map[string]string{dataAPISock: sock, dataCmdlineArg: sock, dataVersion: "1.16.1"}}
	m, err := d.Adopt(t.Context(), spec, h)
	if err != nil {
		t.Fatalf("Adopt: %v", err)
	}
	if got := m.Handle(); got.PID != pid || got.Data[dataAPISock] != sock {
		t.Errorf("Handle of adopted machine = %+v", got)
	}
	// The stand-in was never started, so Ctrl-Alt-Del is refused: Shutdown
	// falls back to a kill, and Done must still close for a non-child.
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := m.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	vmmtest.WaitDone(t, m)
	vmmtest.AssertNoLeftovers(t, spec.Dir)
}

// TestAdoptPausedResumesOnShutdown: a machine adopted while paused knows
// it, so its Shutdown resumes the guest before Ctrl-Alt-Del, which a
// paused guest could not act on.
func TestAdoptPausedResumesOnShutdown(t *testing.T) {
	d, logPath := newStandinDriver(t, modeOK)
	spec := testSpec(t)
	m, err := d.Start(t.Context(), spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Kill() })
	if err := m.(vmm.Pauser).Pause(t.Context()); err != nil {
		t.Fatal(err)
	}
	m2, err := New(d.opts).Adopt(t.Context(), spec, m.Handle())
	if err != nil {
		t.Fatal(err)
	}
	if !m2.(*machine).paused {
		t.Error("adopted machine does not know it is paused")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := m2.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if ctx.Err() != nil {
		t.Error("Shutdown of the paused machine returned only once its ctx was done")
	}
	got := calls(readRecorded(t, logPath))
	if want := []string{"PATCH /vm Paused", "GET /", "PATCH /vm Resumed", "PUT /actions SendCtrlAltDel"}; !slices.Equal(got[len(got)-len(want):], want) {
		t.Errorf("requests end with %q, want %q", got, want)
	}
	for _, mm := range []vmm.Machine{m, m2} {
		vmmtest.WaitDone(t, mm)
	}
	vmmtest.AssertNoLeftovers(t, spec.Dir)
}

func TestClientFaultMessage(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "api.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	s := newStandin(modeOK, "")
	srv := &http.Server{Handler: s}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	c := NewClient(sock)
	err = c.Action(t.Context(), ActionInstanceStart)
	var apiErr *APIError
	if !errors.As(err, &apiErr) {
		t.Fatalf("Action = %v, want *APIError", err)
	}
	want := "PUT /actions: firecracker answered 400: Cannot start microvm without kernel configuration."
	if err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}
	info, err := c.Instance(t.Context())
	if err != nil || info.State != "Not started" {
		t.Errorf("Instance = %+v, %v", info, err)
	}
	if got := len(s.reqs); got != 2 {
		t.Errorf("stand-in recorded %d requests, want 2", got)
	}
	srv.Close()
	if _, err := c.Version(t.Context()); err == nil || !strings.Contains(err.Error(), "GET /version") {
		t.Errorf("Version on a closed socket = %v, want an error naming the request", err)
	}
}

func waitSocket(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !live(path) {
		if time.Now().After(deadline) {
			t.Fatalf("%s never appeared", path)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func killPID(pid int) {
	if p, err := os.FindProcess(pid); err == nil {
		p.Kill()
	}
}

// TestAdoptSilentAPI adopts a process that is the right firecracker but
// whose API does not answer: Adopt fails and leaves the process alone.
func TestAdoptSilentAPI(t *testing.T) {
	d, _ := newStandinDriver(t, modeNoSocket)
	spec := testSpec(t)
	sock := filepath.Join(spec.Dir, APISocketName)
	cmd := exec.Command(d.opts.Bin, "--api-sock", sock)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// Until the child has exec'd, /proc shows the test binary's command
	// line and Adopt rightly calls the pid someone else's.
	for deadline := time.Now().Add(5 * time.Second); vmm.CheckCmdline(cmd.Process.Pid, "", sock) != nil; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("stand-in never showed --api-sock %s: %v", sock, vmm.CheckCmdline(cmd.Process.Pid, "", sock))
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	h := vmm.Handle{Driver: Name, PID: cmd.Process.Pid, Data: map[string]string{dataAPISock: sock, dataCmdlineArg: sock}}
	if _, err := d.Adopt(ctx, spec, h); err == nil || !strings.Contains(err.Error(), "api of pid") {
		t.Fatalf("Adopt = %v, want an error about the API", err)
	}
	if err := vmm.CheckCmdline(cmd.Process.Pid, "", sock); err != nil {
		t.Errorf("Adopt disturbed the process: %v", err)
	}
}
