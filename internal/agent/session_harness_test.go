package agent

import (
	"bytes"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"banger/internal/guest"
)

// killSessions kills what the test's sessions left running and waits for
// the agent to record their ends.
func killSessions(t *testing.T, s *Server) {
	s.sessions.mu.Lock()
	var all []*session
	for _, ss := range s.sessions.byName {
		all = append(all, ss)
	}
	s.sessions.mu.Unlock()
	for _, ss := range all {
		if ss.running() {
			_ = unix.Kill(-ss.info.PID, unix.SIGKILL)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, ss := range all {
		for ss.running() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if ss.running() {
			t.Errorf("session %s still running after SIGKILL", ss.info.Name)
		}
	}
}

// sessionOutput is what an attach received.
type sessionOutput struct {
	stdout, stderr bytes.Buffer
	order          []string // "stdout:..." / "stderr:..." per run of frames of one stream
	exit           *guest.ExitStatus
	eof            bool
}

func (o *sessionOutput) add(t *testing.T, f guest.Frame) {
	t.Helper()
	switch f.Type {
	case guest.FrameStdout:
		o.stdout.Write(f.Payload)
		o.addOrder("stdout:", f.Payload)
	case guest.FrameStderr:
		o.stderr.Write(f.Payload)
		o.addOrder("stderr:", f.Payload)
	case guest.FrameExit:
		var st guest.ExitStatus
		if err := guest.DecodeJSON(f, guest.FrameExit, &st); err != nil {
			t.Fatal(err)
		}
		o.exit = &st
	case guest.FrameEOF:
		o.eof = true
	default:
		t.Fatalf("unexpected %v frame", f.Type)
	}
}

func (o *sessionOutput) addOrder(stream string, p []byte) {
	if n := len(o.order); n > 0 && strings.HasPrefix(o.order[n-1], stream) {
		o.order[n-1] += string(p)
		return
	}
	o.order = append(o.order, stream+string(p))
}

// recvUntil reads frames into o until done(o), failing if the stream
// ends first.
func recvUntil(t *testing.T, st *guest.SessionStream, o *sessionOutput, done func(*sessionOutput) bool) {
	t.Helper()
	for !done(o) {
		f, err := st.Recv()
		if err != nil {
			t.Fatalf("recv: %v (stdout %q, stderr %q)", err, o.stdout.String(), o.stderr.String())
		}
		o.add(t, f)
		if (o.exit != nil || o.eof) && !done(o) {
			t.Fatalf("stream ended (exit %v, eof %v) before the wanted output: stdout %q, stderr %q",
				o.exit, o.eof, o.stdout.String(), o.stderr.String())
		}
	}
}

// recvAll reads until FrameExit or FrameEOF and checks that Recv then
// says io.EOF.
func recvAll(t *testing.T, st *guest.SessionStream) *sessionOutput {
	t.Helper()
	o := &sessionOutput{}
	recvUntil(t, st, o, func(o *sessionOutput) bool { return o.exit != nil || o.eof })
	if _, err := st.Recv(); err != io.EOF {
		t.Errorf("Recv after the end = %v, want io.EOF", err)
	}
	return o
}

func stdoutHas(s string) func(*sessionOutput) bool {
	return func(o *sessionOutput) bool { return strings.Contains(o.stdout.String(), s) }
}

func (ta *testAgent) start(t *testing.T, req guest.SessionStartRequest) guest.SessionInfo {
	t.Helper()
	info, err := ta.client.SessionStart(callCtx(t, 10*time.Second), req)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

func (ta *testAgent) attach(t *testing.T, req guest.SessionAttachRequest) (*guest.SessionStream, guest.SessionInfo) {
	t.Helper()
	st, info, err := ta.client.SessionAttach(callCtx(t, 30*time.Second), req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st, info
}

// waitSession polls the session list until cond holds for name.
func (ta *testAgent) waitSession(t *testing.T, name string, cond func(guest.SessionInfo) bool) guest.SessionInfo {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var last guest.SessionInfo
	for time.Now().Before(deadline) {
		list, err := ta.client.SessionList(callCtx(t, 5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range list {
			if s.Name == name {
				last = s
				if cond(s) {
					return s
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("session %s: condition not met; last seen %+v", name, last)
	return last
}

func exited(s guest.SessionInfo) bool { return s.State == guest.SessionExited }

// connect serves a second connection of srv's and returns its client.
func connect(t *testing.T, srv *Server) *guest.Client {
	t.Helper()
	hostConn, guestConn := socketPair(t)
	go func() { _ = srv.ServeConn(t.Context(), guestConn, "test2") }()
	c, err := guest.NewClient(hostConn, testKey, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// assertSessionDir checks that the session directory holds exactly the
// named sessions' directories.
func assertSessionDir(t *testing.T, s *Server, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(s.sessionDir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	slices.Sort(names)
	if diff := cmp.Diff(names, got); diff != "" {
		t.Errorf("session directory (-want +got):\n%s", diff)
	}
}

// recvErr reads frames until an error.
func recvErr(st *guest.SessionStream) (int, error) {
	n := 0
	for {
		if _, err := st.Recv(); err != nil {
			return n, err
		}
		n++
	}
}
