package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
)

type sessionInfo struct {
	Name, State, Socket, Reason string
	Warning                     string
	StdinMode                   string `json:"stdin_mode"`
	StdoutBytes                 int64  `json:"stdout_bytes"`
	PID                         int
	ExitCode                    *int `json:"exit_code"`
	Attached                    int
}

func (e *env) sessions(vm string) map[string]sessionInfo {
	e.t.Helper()
	var list []sessionInfo
	if err := json.Unmarshal([]byte(e.ok("vm", "session", "list", vm, "--json")), &list); err != nil {
		e.t.Fatal(err)
	}
	out := map[string]sessionInfo{}
	for _, s := range list {
		out[s.Name] = s
	}
	return out
}

// attachPipe is a `vm session attach` with its stdin and stdout as pipes.
type attachPipe struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	out   *bufio.Reader
	errs  *strings.Builder
	close func()
}

func (e *env) attach(vm, name string) *attachPipe {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	c := e.cmd(ctx, "vm", "session", "attach", vm, name)
	in, _ := c.StdinPipe()
	out, _ := c.StdoutPipe()
	var errs strings.Builder
	c.Stderr = &errs
	if err := c.Start(); err != nil {
		e.t.Fatal(err)
	}
	return &attachPipe{cmd: c, in: in, out: bufio.NewReader(out), errs: &errs, close: cancel}
}

// roundTrip sends line and waits for want on the attach's stdout.
func (a *attachPipe) roundTrip(t *testing.T, line, want string) {
	t.Helper()
	if _, err := io.WriteString(a.in, line+"\n"); err != nil {
		t.Fatalf("writing %q: %v", line, err)
	}
	got := make(chan string, 1)
	go func() {
		l, _ := a.out.ReadString('\n')
		got <- l
	}()
	select {
	case l := <-got:
		if strings.TrimSpace(l) != want {
			t.Fatalf("sent %q, got %q, want %q (attach stderr: %s)", line, l, want, a.errs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("sent %q, no answer in 30 s (attach stderr: %s)", line, a.errs.String())
	}
}

// wait waits for the attach to end and returns its exit code.
func (a *attachPipe) wait(t *testing.T) int {
	t.Helper()
	defer a.close()
	err := a.cmd.Wait()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	} else if err != nil {
		t.Fatalf("attach: %v", err)
	}
	return 0
}

// echoSession is a line-echo program that also writes to stderr.
const echoSession = `echo started >&2; while read l; do echo "echo:$l"; echo "err:$l" >&2; [ "$l" = quit ] && exit 7; done`

// A pipe-mode session outlives its attaches and a daemon SIGKILL; logs
// keep stdout and stderr apart; stop ends it and list shows its exit.
func TestSessionPipeAttachLogsRestart(t *testing.T) {
	e := bootEnv(t)
	e.ok("vm", "create", "--image", "fixture", "--name", "s1")
	out := e.ok("vm", "session", "start", "s1", "--name", "echo", "--", "sh", "-c", echoSession)
	mustContain(t, "start output", out, "socket:")

	a := e.attach("s1", "echo")
	a.roundTrip(t, "one", "echo:one")
	a.roundTrip(t, "two", "echo:two")
	// A second client at once: both see output, input interleaves.
	b := e.attach("s1", "echo")
	b.roundTrip(t, "three", "echo:three")
	if l, _ := a.out.ReadString('\n'); strings.TrimSpace(l) != "echo:three" {
		t.Fatalf("the first client did not see the second one's output: %q", l)
	}
	b.in.Close()
	if code := b.wait(t); code != 0 {
		t.Fatalf("detach by EOF: exit %d, stderr %s", code, b.errs.String())
	}
	a.in.Close()
	a.wait(t)
	if s := e.sessions("s1")["echo"]; s.State != "running" || s.PID == 0 {
		t.Fatalf("after detaching: %+v", s)
	}

	// Again, after the detach, and straight through the socket as any
	// host tool would.
	sock := e.sessions("s1")["echo"].Socket
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(conn, "four\n")
	if l, _ := bufio.NewReader(conn).ReadString('\n'); l != "echo:four\n" {
		t.Fatalf("through the socket: %q", l)
	}
	conn.Close()

	r := e.banger("vm", "session", "logs", "s1", "echo", "--stream", "stderr")
	if r.code != 0 || !strings.Contains(r.stdout, "err:four") || strings.Contains(r.stdout, "echo:") || r.stderr != "" {
		t.Fatalf("logs --stream stderr: code %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}

	// The daemon dies; the session goes on, and its logs and socket come
	// back with the next daemon.
	if err := syscall.Kill(e.daemonPID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if s := e.sessions("s1")["echo"]; s.State != "running" {
		t.Fatalf("after a daemon restart: %+v", s)
	}
	a = e.attach("s1", "echo")
	a.roundTrip(t, "five", "echo:five")
	a.cmd.Process.Signal(os.Interrupt) // Ctrl-C outside a raw terminal detaches
	if code := a.wait(t); code != 0 || !strings.Contains(a.errs.String(), "detached") {
		t.Fatalf("Ctrl-C on a pipe attach: exit %d, stderr %q", code, a.errs.String())
	}
	// The host copy follows the guest's within moments.
	var logs string
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if logs = e.ok("vm", "session", "logs", "s1", "echo", "--stream", "stdout"); strings.Contains(logs, "echo:five") {
			break
		}
	}
	for _, w := range []string{"echo:one", "echo:four", "echo:five"} {
		mustContain(t, "stdout log after restart", logs, w)
	}

	// An attach that ends with the session gets its exit code.
	a = e.attach("s1", "echo")
	io.WriteString(a.in, "quit\n")
	if code := a.wait(t); code != 7 {
		t.Fatalf("attach when the session exits 7: code %d, stderr %s", code, a.errs.String())
	}
	s := e.sessions("s1")["echo"]
	if s.State != "exited" || s.ExitCode == nil || *s.ExitCode != 7 || s.Socket != "" {
		t.Fatalf("after quit: %+v", s)
	}
	mustContain(t, "attach to an exited session", e.fails("vm", "session", "attach", "s1", "echo"), "exited with code 7", "session logs")
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatalf("the socket of an exited session is still there: %v", err)
	}

	// stop: a session that ignores TERM is killed after the timeout.
	e.ok("vm", "session", "start", "s1", "--name", "stubborn", "--stdin-mode", "null", "--", "sh", "-c", "trap '' TERM; echo ready; exec sleep 1000")
	// Stop only once the trap is set: a TERM before it would just end it.
	for deadline := time.Now().Add(15 * time.Second); !strings.Contains(e.ok("vm", "session", "logs", "s1", "stubborn"), "ready"); time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the stubborn session never said ready")
		}
	}
	start := time.Now()
	mustContain(t, "stop", e.ok("vm", "session", "stop", "s1", "stubborn", "--timeout", "2s"), "exited")
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("stop took %s", d)
	}
	if s := e.sessions("s1")["stubborn"]; s.ExitCode == nil || *s.ExitCode != 128+9 {
		t.Fatalf("killed session: %+v, exit %v", s, derefInt(s.ExitCode))
	}
}

// Bad input: unknown VM and session, a taken name, a missing command,
// bad modes; and a VM stopped under a session marks it lost, keeps its
// logs and ends its attaches.
func TestSessionBadInputAndVMStop(t *testing.T) {
	e := bootEnv(t)
	e.ok("vm", "create", "--image", "fixture", "--name", "s2")
	mustContain(t, "unknown vm", e.fails("vm", "session", "list", "nope"), "nope")
	e.ok("vm", "session", "start", "s2", "--name", "cat", "--", "cat")
	mustContain(t, "unknown session", e.fails("vm", "session", "attach", "s2", "nope"), `"nope"`, "cat")
	mustContain(t, "taken name", e.fails("vm", "session", "start", "s2", "--name", "cat", "--", "true"), `"cat"`, "already runs")
	mustContain(t, "missing command", e.fails("vm", "session", "start", "s2", "--name", "x", "--", "no-such-cmd"), "no-such-cmd")
	mustContain(t, "bad mode", e.fails("vm", "session", "start", "s2", "--name", "y", "--stdin-mode", "file", "--", "true"), "pipe, tty or null")
	mustContain(t, "bad name", e.fails("vm", "session", "start", "s2", "--name", "a/b", "--", "true"), "a/b")
	mustContain(t, "bad signal", e.fails("vm", "session", "stop", "s2", "cat", "--signal", "NOPE"), "NOPE")
	if got := e.sessions("s2"); len(got) != 1 {
		t.Fatalf("failed starts left records: %+v", got)
	}

	a := e.attach("s2", "cat")
	a.roundTrip(t, "ping", "ping")
	e.ok("vm", "stop", "s2")
	done := make(chan int, 1)
	go func() { done <- a.wait(t) }()
	select {
	case code := <-done:
		if code == 0 {
			t.Fatalf("attach ended with 0 when its VM stopped; stderr %s", a.errs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("attach did not end when the VM stopped")
	}
	s := e.sessions("s2")["cat"]
	if s.State != "lost" || s.Reason == "" {
		t.Fatalf("session of a stopped vm: %+v", s)
	}
	mustContain(t, "logs of a lost session", e.ok("vm", "session", "logs", "s2", "cat"), "ping")
	mustContain(t, "attach to a lost session", e.fails("vm", "session", "attach", "s2", "cat"), "lost", "session logs")
	e.ok("vm", "delete", "s2")
	if _, err := os.Stat(e.home + "/state/run/sessions/s2"); !os.IsNotExist(err) {
		t.Fatalf("socket dir of a deleted vm: %v", err)
	}
}

// A tty session sees the attaching terminal's size, and a resize.
func TestSessionTTYResize(t *testing.T) {
	e := bootEnv(t)
	e.ok("vm", "create", "--image", "fixture", "--name", "s3")
	e.ok("vm", "session", "start", "s3", "--name", "tty", "--stdin-mode", "tty", "--", "sh", "-c", "while read l; do echo size=$(stty size); done")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := e.cmd(ctx, "vm", "session", "attach", "s3", "tty")
	ptm, err := pty.StartWithSize(c, &pty.Winsize{Rows: 30, Cols: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer ptm.Close()
	var seen strings.Builder
	lines := make(chan string, 64)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := ptm.Read(buf)
			if n > 0 {
				seen.Write(buf[:n])
				lines <- seen.String()
			}
			if err != nil {
				close(lines)
				return
			}
		}
	}()
	waitFor := func(want string) {
		t.Helper()
		deadline := time.After(30 * time.Second)
		for {
			select {
			case s, ok := <-lines:
				if strings.Contains(s, want) {
					return
				}
				if !ok {
					t.Fatalf("attach ended before %q; saw %q", want, seen.String())
				}
			case <-deadline:
				t.Fatalf("no %q in 30 s; saw %q", want, seen.String())
			}
		}
	}
	time.Sleep(time.Second) // the attach sends its size first
	ptm.Write([]byte("a\r"))
	waitFor("size=30 100")
	pty.Setsize(ptm, &pty.Winsize{Rows: 40, Cols: 120})
	time.Sleep(time.Second)
	ptm.Write([]byte("b\r"))
	waitFor("size=40 120")
	ptm.Write([]byte{0x1d}) // Ctrl-] detaches
	waitFor("detached")
	c.Wait()
	if s := e.sessions("s3")["tty"]; s.State != "running" {
		t.Fatalf("after detaching from a tty session: %+v", s)
	}
}

func derefInt(p *int) any {
	if p == nil {
		return nil
	}
	return *p
}
