package agent

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/internal/guest"
)

// logBuffer is a slog handler target tests can read.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// hello runs a Hello with key over a fresh connection to an agent served
// by ServeConn, and returns the client's error and the agent's.
func helloConn(t *testing.T, s *Server, key []byte) (error, error) {
	t.Helper()
	hostConn, guestConn := socketPair(t)
	served := make(chan error, 1)
	go func() { served <- s.ServeConn(t.Context(), guestConn, "test peer") }()
	c, err := guest.NewClient(hostConn, key, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	_, herr := c.Hello(callCtx(t, 10*time.Second))
	c.Close()
	select {
	case serr := <-served:
		return herr, serr
	case <-time.After(10 * time.Second):
		t.Fatal("agent still serving after the host left")
	}
	return herr, nil
}

func TestServeConnAuthenticates(t *testing.T) {
	logs := &logBuffer{}
	s := newTestServer(t, nil)
	s.logger = slog.New(slog.NewTextHandler(logs, nil))

	if herr, serr := helloConn(t, s, testKey); herr != nil || serr != nil {
		t.Fatalf("right key: hello %v, agent %v", herr, serr)
	}
	wrong := bytes.Repeat([]byte{1}, guest.KeySize)
	herr, serr := helloConn(t, s, wrong)
	if !errors.Is(herr, guest.ErrUnauthenticated) || !errors.Is(serr, guest.ErrUnauthenticated) {
		t.Fatalf("wrong key: hello %v, agent %v; want both unauthenticated", herr, serr)
	}
	if !strings.Contains(logs.String(), "refused an unauthenticated host") || !strings.Contains(logs.String(), "test peer") {
		t.Errorf("refusal not logged with its peer:\n%s", logs)
	}

	// No key file: every host is refused, the right key too.
	os.Remove(s.keyFile)
	if herr, _ := helloConn(t, s, testKey); !errors.Is(herr, guest.ErrUnauthenticated) {
		t.Fatalf("agent without key: hello %v, want unauthenticated", herr)
	}
	// A key that appears later is used without a restart.
	os.WriteFile(s.keyFile, []byte(strings.Repeat("42", guest.KeySize)), 0o600)
	if herr, serr := helloConn(t, s, testKey); herr != nil || serr != nil {
		t.Fatalf("key written later: hello %v, agent %v", herr, serr)
	}
}

// TestServeConnHandshakeTimeout: a peer that connects and says nothing
// is dropped.
func TestServeConnHandshakeTimeout(t *testing.T) {
	s := newTestServer(t, nil)
	hostConn, guestConn := socketPair(t)
	defer hostConn.Close()
	old := handshakeTimeout
	handshakeTimeout = 200 * time.Millisecond
	t.Cleanup(func() { handshakeTimeout = old })
	done := make(chan error, 1)
	go func() { done <- s.ServeConn(t.Context(), guestConn, "silent") }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a silent peer kept the handshake open")
	}
}

// TestPortRefusesWrongKeyThenServes: on the virtio-serial path a host with
// the wrong key gets nothing (the exec it would send never runs), and the
// port still serves the right host afterwards.
func TestPortRefusesWrongKeyThenServes(t *testing.T) {
	port := &fakePort{}
	servePort(t, port.open)
	time.Sleep(300 * time.Millisecond)
	c, err := guest.NewClient(port.connect(t), bytes.Repeat([]byte{9}, guest.KeySize), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Exec(callCtx(t, 10*time.Second), guest.ExecRequest{Argv: []string{"touch", filepath.Join(t.TempDir(), "x")}}, nil, io.Discard, io.Discard)
	c.Close()
	if !errors.Is(err, guest.ErrUnauthenticated) {
		t.Fatalf("exec with the wrong key = %v, want unauthenticated", err)
	}
	time.Sleep(100 * time.Millisecond)
	useAgent(t, port.connect(t), 0)
}

func TestReadKeyFile(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"short": "abcd", "not hex": strings.Repeat("zz", guest.KeySize), "huge": strings.Repeat("42", 1<<20),
	} {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
		os.WriteFile(p, []byte(content), 0o600)
		if _, err := ReadKeyFile(p); err == nil {
			t.Errorf("%s key accepted", name)
		}
	}
}

// TestServeConnBoundsHandshakes: silent peers cannot pile up; once
// maxHandshakes are waiting, more are closed at once, and the right host
// is served again when they go.
func TestServeConnBoundsHandshakes(t *testing.T) {
	s := newTestServer(t, nil)
	var silent []net.Conn
	for range maxHandshakes {
		h, g := socketPair(t)
		silent = append(silent, h)
		go s.ServeConn(t.Context(), g, "silent")
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(s.handshakes) < maxHandshakes && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	_, g := socketPair(t)
	if err := s.ServeConn(t.Context(), g, "one too many"); err == nil || !strings.Contains(err.Error(), "too many") {
		t.Fatalf("connection past the limit: %v", err)
	}
	for _, h := range silent {
		h.Close()
	}
	for len(s.handshakes) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if herr, serr := helloConn(t, s, testKey); herr != nil || serr != nil {
		t.Fatalf("after the silent peers left: hello %v, agent %v", herr, serr)
	}
}
