package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"banger/internal/guest"
	buildversion "banger/internal/version"
)

func TestHello(t *testing.T) {
	ta := startAgent(t, 0)
	info, err := ta.client.Hello(callCtx(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if info.ProtocolVersion != guest.ProtocolVersion || info.AgentVersion != buildversion.String() {
		t.Errorf("versions = %d %q", info.ProtocolVersion, info.AgentVersion)
	}
	if info.KernelRelease == "" || info.Hostname == "" {
		t.Errorf("missing kernel or hostname: %+v", info)
	}
}

func TestHelloVersionMismatch(t *testing.T) {
	ta := startAgent(t, guest.ProtocolVersion+98)
	_, err := ta.client.Hello(callCtx(t, 10*time.Second))
	if !errors.Is(err, guest.ErrVersionMismatch) {
		t.Fatalf("Hello error = %v, want a version mismatch", err)
	}
	want := fmt.Sprintf("guest agent speaks protocol v%d, bangerd speaks v%d; rebuild the image with this banger",
		guest.ProtocolVersion+98, guest.ProtocolVersion)
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
	// Other requests are refused too, plainly.
	_, err = ta.client.Exec(callCtx(t, 10*time.Second), guest.ExecRequest{Argv: []string{"true"}}, nil, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "protocol") {
		t.Errorf("Exec error = %v, want a protocol error", err)
	}
}

func TestExecExitCodes(t *testing.T) {
	ta := startAgent(t, 0)
	tests := []struct {
		name string
		argv []string
		want int
	}{
		{"zero", []string{"true"}, 0},
		{"one", []string{"false"}, 1},
		{"fortytwo", []string{"sh", "-c", "exit 42"}, 42},
		{"sigkill", []string{"sh", "-c", "kill -KILL $$"}, 137},
		{"sigterm", []string{"sh", "-c", "kill -TERM $$"}, 143},
		{"absolute path", []string{"/bin/sh", "-c", "exit 3"}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, err := ta.client.Exec(callCtx(t, 10*time.Second), guest.ExecRequest{Argv: tt.argv}, nil, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			if code != tt.want {
				t.Errorf("exit code = %d, want %d", code, tt.want)
			}
		})
	}
}

func TestExecOutput(t *testing.T) {
	ta := startAgent(t, 0)
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/data", []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir+"/script", []byte("echo script \"$@\"\nexit 5\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		req        guest.ExecRequest
		stdin      string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{name: "separate streams",
			req:        guest.ExecRequest{Argv: []string{"sh", "-c", "echo out; echo err >&2; echo out2"}},
			wantStdout: "out\nout2\n", wantStderr: "err\n"},
		{name: "stdin passthrough",
			req: guest.ExecRequest{Argv: []string{"cat"}}, stdin: "hello\nworld\n", wantStdout: "hello\nworld\n"},
		{name: "env and cwd",
			req:        guest.ExecRequest{Argv: []string{"sh", "-c", `echo "$FOO $HOME"; pwd`}, Env: []string{"FOO=bar"}, Dir: dir},
			wantStdout: "bar /root\n" + dir + "\n"},
		{name: "not found",
			req:      guest.ExecRequest{Argv: []string{"no-such-command-xyz", "arg"}},
			wantCode: 127, wantStderr: "sh: no-such-command-xyz: not found\n"},
		{name: "not found by path",
			req:      guest.ExecRequest{Argv: []string{dir + "/nope"}},
			wantCode: 127, wantStderr: "sh: " + dir + "/nope: not found\n"},
		{name: "not executable",
			req:      guest.ExecRequest{Argv: []string{dir + "/data"}},
			wantCode: 126, wantStderr: "sh: " + dir + "/data: Permission denied\n"},
		{name: "script without #!",
			req:      guest.ExecRequest{Argv: []string{dir + "/script", "a", "b"}},
			wantCode: 5, wantStdout: "script a b\n"},
		{name: "not an executable format",
			req:      guest.ExecRequest{Argv: []string{"/dev/null"}},
			wantCode: 126, wantStderr: "sh: /dev/null: Permission denied\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code, err := ta.client.Exec(callCtx(t, 10*time.Second), tt.req, strings.NewReader(tt.stdin), &stdout, &stderr)
			if err != nil {
				t.Fatal(err)
			}
			got := []any{code, stdout.String(), stderr.String()}
			want := []any{tt.wantCode, tt.wantStdout, tt.wantStderr}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("exec (-want +got):\n%s", diff)
			}
		})
	}
}

func TestExecMissingCwd(t *testing.T) {
	ta := startAgent(t, 0)
	_, err := ta.client.Exec(callCtx(t, 10*time.Second),
		guest.ExecRequest{Argv: []string{"true"}, Dir: "/no/such/dir"}, nil, nil, nil)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "working directory /no/such/dir does not exist") {
		t.Errorf("error = %v, want a missing working directory", err)
	}
}

func TestExecLargeStdin(t *testing.T) {
	ta := startAgent(t, 0)
	in := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	var out bytes.Buffer
	code, err := ta.client.Exec(callCtx(t, 30*time.Second), guest.ExecRequest{Argv: []string{"cat"}},
		bytes.NewReader(in), &out, nil)
	if err != nil || code != 0 {
		t.Fatalf("exec = %d, %v", code, err)
	}
	if !bytes.Equal(out.Bytes(), in) {
		t.Errorf("got %d bytes back, want %d equal ones", out.Len(), len(in))
	}
}

func TestExecTTY(t *testing.T) {
	ta := startAgent(t, 0)
	var out bytes.Buffer
	req := guest.ExecRequest{Argv: []string{"sh", "-c", `test -t 0 && test -t 1 && echo "is a tty $TERM"; stty size`},
		TTY: true, Rows: 30, Cols: 100}
	code, err := ta.client.Exec(callCtx(t, 10*time.Second), req, nil, &out, nil)
	if err != nil || code != 0 {
		t.Fatalf("exec = %d, %v (output %q)", code, err, out.String())
	}
	if want := "is a tty xterm-256color\r\n30 100\r\n"; out.String() != want {
		t.Errorf("output = %q, want %q", out.String(), want)
	}
}

func TestExecTTYResizeAndStdin(t *testing.T) {
	ta := startAgent(t, 0)
	s, err := ta.client.OpenExec(callCtx(t, 10*time.Second), guest.ExecRequest{
		Argv: []string{"sh", "-c", "stty -echo; echo ready; read line; echo \"got $line\"; stty size; exit 7"},
		TTY:  true, Rows: 24, Cols: 80})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var out bytes.Buffer
	waitFor(t, s, &out, "ready")
	if err := s.Resize(50, 132); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the resize frame goes first
	if _, err := s.Write([]byte("hi there\n")); err != nil {
		t.Fatal(err)
	}
	st, err := s.Wait(&out, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Code != 7 || !strings.Contains(out.String(), "got hi there\r\n50 132\r\n") {
		t.Errorf("exit %d, output %q", st.Code, out.String())
	}
}

// waitFor reads stdout frames into out until it contains s.
func waitFor(t *testing.T, s *guest.ExecStream, out *bytes.Buffer, want string) {
	t.Helper()
	for !strings.Contains(out.String(), want) {
		f, err := s.Recv()
		if err != nil {
			t.Fatalf("waiting for %q: %v (output %q)", want, err, out.String())
		}
		if f.Type == guest.FrameExit {
			t.Fatalf("exited while waiting for %q (output %q)", want, out.String())
		}
		out.Write(f.Payload)
	}
}

func TestExecSignal(t *testing.T) {
	ta := startAgent(t, 0)
	tests := []struct {
		name string
		sig  syscall.Signal
		want int
		out  string
	}{
		{"trapped TERM", syscall.SIGTERM, 3, "got TERM"},
		{"INT kills", syscall.SIGINT, 130, ""},
		{"KILL kills", syscall.SIGKILL, 137, ""},
	}
	script := `echo ready; exec sleep 30`
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			argv := []string{"sh", "-c", script}
			if tt.out != "" {
				argv = []string{"sh", "-c", `trap 'echo got TERM; exit 3' TERM; echo ready; while :; do sleep 0.05; done`}
			}
			s, err := ta.client.OpenExec(callCtx(t, 10*time.Second), guest.ExecRequest{Argv: argv})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			var out bytes.Buffer
			waitFor(t, s, &out, "ready")
			if err := s.Signal(tt.sig); err != nil {
				t.Fatal(err)
			}
			st, err := s.Wait(&out, nil)
			if err != nil {
				t.Fatal(err)
			}
			if st.Code != tt.want || !strings.Contains(out.String(), tt.out) {
				t.Errorf("exit %+v output %q, want code %d and %q", st, out.String(), tt.want, tt.out)
			}
		})
	}
}

func TestExecConcurrent(t *testing.T) {
	ta := startAgent(t, 0)
	const n = 12
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			var out bytes.Buffer
			code, err := ta.client.Exec(callCtx(t, 20*time.Second),
				guest.ExecRequest{Argv: []string{"sh", "-c", fmt.Sprintf("sleep 0.5; echo %d", i)}}, nil, &out, nil)
			switch {
			case err != nil:
				errs[i] = err
			case code != 0 || out.String() != fmt.Sprintf("%d\n", i):
				errs[i] = fmt.Errorf("exec %d = %d %q", i, code, out.String())
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > n*500*time.Millisecond/2 {
		t.Errorf("%d concurrent 0.5 s execs took %v: not running in parallel", n, d)
	}
}

func TestExecConnectionDrop(t *testing.T) {
	ta := startAgent(t, 0)
	s, err := ta.client.OpenExec(callCtx(t, 30*time.Second), guest.ExecRequest{Argv: []string{"sleep", "60"}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := s.Wait(nil, nil)
		done <- err
	}()
	time.Sleep(200 * time.Millisecond)
	ta.hostConn.Close() // the transport goes away under the session
	select {
	case err := <-done:
		if !errors.Is(err, guest.ErrConnectionLost) {
			t.Errorf("Wait error = %v, want ErrConnectionLost", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("exec did not end after the connection dropped")
	}
	processGone(t, s.PID())
	if _, err := ta.client.Hello(callCtx(t, 5*time.Second)); err == nil {
		t.Error("Hello on a dropped connection succeeded")
	}
}

func TestExecContextCancel(t *testing.T) {
	ta := startAgent(t, 0)
	ctx, cancel := context.WithCancel(t.Context())
	pids := make(chan int, 1)
	go func() {
		time.Sleep(300 * time.Millisecond)
		cancel()
	}()
	s, err := ta.client.OpenExec(ctx, guest.ExecRequest{Argv: []string{"sleep", "60"}})
	if err != nil {
		t.Fatal(err)
	}
	pids <- s.PID()
	start := time.Now()
	_, err = s.Wait(nil, nil)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Wait error = %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("cancel took %v", d)
	}
	processGone(t, <-pids)
	// The session survives a cancelled call.
	if _, err := ta.client.Hello(callCtx(t, 5*time.Second)); err != nil {
		t.Errorf("Hello after cancel: %v", err)
	}
}

func TestShutdown(t *testing.T) {
	ta := startAgent(t, 0)
	if err := ta.client.Shutdown(callCtx(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ta.powered:
	case <-time.After(5 * time.Second):
		t.Fatal("power off was not called")
	}
}
