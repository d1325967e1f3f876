package session

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/guest"
	"banger/internal/store"
)

// adoptRig is a Manager over a real store and the real agent (serving on
// this host, over a pipe), with one running VM.
type adoptRig struct {
	m  *Manager
	vm store.VM
	cl *guest.Client
}

func newAdoptRig(t *testing.T) *adoptRig {
	t.Helper()
	ctx := t.Context()
	dir, err := os.MkdirTemp("", "bgs") // short: socket paths are bounded
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	st, err := store.Open(ctx, filepath.Join(dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	vm := store.VM{ID: "0123456789abcdef", Name: "v1", State: api.StateRunning, Image: "img", Kernel: "k", VMM: "mem",
		VCPUs: 1, MemoryMiB: 128, Dir: filepath.Join(dir, "vm"), Spec: "{}", Handle: "{}"}
	os.MkdirAll(vm.Dir, 0o700)
	if err := st.CreateVM(ctx, vm); err != nil {
		t.Fatal(err)
	}
	key := bytes.Repeat([]byte{0x42}, guest.KeySize)
	keyFile := filepath.Join(dir, "agent.key")
	os.WriteFile(keyFile, []byte(hex.EncodeToString(key)+"\n"), 0o600)
	srv := agent.NewServer(nil, func() error { return nil })
	srv.SetKeyFile(keyFile)
	hostConn, guestConn := net.Pipe()
	go srv.ServeConn(ctx, guestConn, "test")
	cl, err := guest.NewClient(hostConn, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	m := New(ctx, Options{
		Store:     st,
		Agent:     func(context.Context, string) (*guest.Client, error) { return cl, nil },
		Listen:    func(p string) (net.Listener, error) { return net.Listen("unix", p) },
		SocketDir: filepath.Join(dir, "run"),
		LogMax:    1 << 20,
	})
	t.Cleanup(m.Close)
	return &adoptRig{m: m, vm: vm, cl: cl}
}

// orphan starts a session in the guest as a daemon killed right after
// would have: the guest runs it, the host has no record.
func (r *adoptRig) orphan(t *testing.T, name string) {
	t.Helper()
	if _, err := r.cl.SessionStart(t.Context(), guest.SessionStartRequest{Name: name, Argv: []string{"sleep", "60"}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.cl.SessionControl(context.Background(), guest.SessionControlRequest{Name: name, Signal: int(syscall.SIGKILL)})
	})
}

func (r *adoptRig) listed(t *testing.T, name string) (api.Session, bool) {
	t.Helper()
	list, err := r.m.List(t.Context(), r.vm)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range list {
		if s.Name == name {
			return s, true
		}
	}
	return api.Session{}, false
}

// A session the guest runs with no record (its daemon was killed between
// the two) is adopted by the next daemon's Restore: listed, running, and
// stoppable; a start of its name is then a conflict that says so.
func TestRestoreAdoptsUnrecordedSessions(t *testing.T) {
	r := newAdoptRig(t)
	r.orphan(t, "orphan")
	r.m.Restore(t.Context(), func(string) bool { return true })
	deadline := time.Now().Add(5 * time.Second)
	for {
		if s, ok := r.listed(t, "orphan"); ok {
			if s.State != api.SessionRunning {
				t.Fatalf("adopted session: %+v", s)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the unrecorded session was never adopted")
		}
		time.Sleep(20 * time.Millisecond)
	}
	_, err := r.m.Start(t.Context(), r.vm, api.StartSessionRequest{Name: "orphan", Argv: []string{"true"}})
	if api.CodeOf(err) != api.Conflict {
		t.Fatalf("start of an adopted name: %v, want a conflict", err)
	}
	if _, err := r.m.Stop(t.Context(), r.vm, "orphan", syscall.SIGKILL, 5*time.Second); err != nil {
		t.Fatalf("stopping the adopted session: %v", err)
	}
}

// Without a Restore (the guest did not answer in time), a start of the
// name the guest holds adopts it then: the start fails as a conflict whose
// hint says how to reach it, and the session is listed.
func TestStartAdoptsWhatTheGuestHolds(t *testing.T) {
	r := newAdoptRig(t)
	r.orphan(t, "taken")
	_, err := r.m.Start(t.Context(), r.vm, api.StartSessionRequest{Name: "taken", Argv: []string{"true"}})
	var ae *api.Error
	if api.CodeOf(err) != api.Conflict || !errors.As(err, &ae) || ae.Hint == "" {
		t.Fatalf("start of a name the guest holds: %v, want a conflict with a hint", err)
	}
	if s, ok := r.listed(t, "taken"); !ok || s.State != api.SessionRunning {
		t.Fatalf("after the start: listed %v, %+v; want it adopted, running", ok, s)
	}
	// Another name starts as usual.
	if _, err := r.m.Start(t.Context(), r.vm, api.StartSessionRequest{Name: "fresh", Argv: []string{"sleep", "60"}}); err != nil {
		t.Fatal(err)
	}
	r.m.Stop(t.Context(), r.vm, "fresh", syscall.SIGKILL, 5*time.Second)
}
