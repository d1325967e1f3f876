package agent

import (
	"bytes"
	"context"
	"encoding/hex"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/guest"
)

// testAgent is an agent served in-process over a unix socketpair.
type testAgent struct {
	srv      *Server
	client   *guest.Client
	hostConn net.Conn // the host's end of the transport
	powered  chan struct{}
}

func testLogger(t *testing.T) *slog.Logger {
	t.Helper()
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// socketPair returns the two ends of a connected unix stream socketpair.
func socketPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var conns [2]net.Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	return conns[0], conns[1]
}

// startAgent serves a fresh agent with the given protocol version (0: the
// current one) and connects a client to it.
func startAgent(t *testing.T, version int) *testAgent {
	t.Helper()
	return startAgentWith(t, version, nil)
}

// startAgentWith is startAgent with configure (if not nil) run on the
// server before it serves.
func startAgentWith(t *testing.T, version int, configure func(*Server)) *testAgent {
	t.Helper()
	hostConn, guestConn := socketPair(t)
	ta := &testAgent{hostConn: hostConn, powered: make(chan struct{})}
	ta.srv = newTestServer(t, func() error { close(ta.powered); return nil })
	if version != 0 {
		ta.srv.version = version
	}
	if configure != nil {
		configure(ta.srv)
	}
	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() { served <- ta.srv.ServeConn(ctx, guestConn, "test") }()
	c, err := guest.NewClient(hostConn, testKey, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ta.client = c
	t.Cleanup(func() {
		c.Close()
		cancel()
		select {
		case <-served:
		case <-time.After(10 * time.Second):
			t.Error("agent session did not end")
		}
	})
	return ta
}

// testKey is the agent key of test servers.
var testKey = bytes.Repeat([]byte{0x42}, guest.KeySize)

// newTestServer is NewServer with testKey in a key file of its own.
func newTestServer(t *testing.T, powerOff func() error) *Server {
	t.Helper()
	s := NewServer(testLogger(t), powerOff)
	// Never the host's clock, network, hostname or sshd.
	s.root = t.TempDir()
	s.sys = (&recordedSystem{}).system()
	s.sessionDir = filepath.Join(t.TempDir(), "sessions")
	t.Cleanup(func() { killSessions(t, s) })
	s.keyFile = filepath.Join(t.TempDir(), "agent.key")
	if err := os.WriteFile(s.keyFile, []byte(hex.EncodeToString(testKey)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

// callCtx is a context that fails a test which would otherwise hang.
func callCtx(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// processGone waits until pid no longer exists.
func processGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if err := unix.Kill(pid, 0); err == unix.ESRCH {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("process %d still exists", pid)
}
