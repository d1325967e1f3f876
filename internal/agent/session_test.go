package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"banger/internal/guest"
)

func TestSessionPipeTwoAttaches(t *testing.T) {
	ta := startAgent(t, 0)
	info := ta.start(t, guest.SessionStartRequest{Name: "echo", Argv: []string{"cat"}, StdinMode: guest.StdinPipe})
	if info.State != guest.SessionRunning || info.PID == 0 || info.StdinMode != guest.StdinPipe || info.Dir != "/root" {
		t.Errorf("start info = %+v", info)
	}
	a1, _ := ta.attach(t, guest.SessionAttachRequest{Name: "echo", Follow: true, Input: true})
	a2, i2 := ta.attach(t, guest.SessionAttachRequest{Name: "echo", Follow: true, Input: true})
	if i2.Attached != 2 {
		t.Errorf("second attach sees %d attached, want 2", i2.Attached)
	}
	if _, err := a1.Write([]byte("from one\n")); err != nil {
		t.Fatal(err)
	}
	var o1, o2 sessionOutput
	recvUntil(t, a2, &o2, stdoutHas("from one\n"))
	if _, err := a2.Write([]byte("from two\n")); err != nil {
		t.Fatal(err)
	}
	want := "from one\nfrom two\n"
	recvUntil(t, a1, &o1, stdoutHas(want))
	recvUntil(t, a2, &o2, stdoutHas(want))
	if o1.stdout.String() != want || o2.stdout.String() != want {
		t.Errorf("attaches saw %q and %q, want %q each", o1.stdout.String(), o2.stdout.String(), want)
	}

	// Detaching leaves the session running, and it can be attached again.
	a1.Close()
	a2.Close()
	ta.waitSession(t, "echo", func(s guest.SessionInfo) bool { return s.Attached == 0 })
	a3, i3 := ta.attach(t, guest.SessionAttachRequest{Name: "echo", Follow: true, Input: true})
	if i3.State != guest.SessionRunning || i3.StdoutBytes != int64(len(want)) {
		t.Errorf("re-attach info = %+v", i3)
	}
	var o3 sessionOutput
	if _, err := a3.Write([]byte("again\n")); err != nil {
		t.Fatal(err)
	}
	recvUntil(t, a3, &o3, stdoutHas(want+"again\n"))
	if o3.stdout.String() != want+"again\n" {
		t.Errorf("re-attach from 0 saw %q", o3.stdout.String())
	}
}

// TestSessionOutlivesConnection: a session goes on when the host's
// whole connection drops, and a new connection reaches it.
func TestSessionOutlivesConnection(t *testing.T) {
	ta := startAgent(t, 0)
	ta.start(t, guest.SessionStartRequest{Name: "s", Argv: []string{"cat"}})
	st, _ := ta.attach(t, guest.SessionAttachRequest{Name: "s", Follow: true, Input: true})
	if _, err := st.Write([]byte("before\n")); err != nil {
		t.Fatal(err)
	}
	var o sessionOutput
	recvUntil(t, st, &o, stdoutHas("before\n"))
	ta.hostConn.Close()
	if _, err := st.Recv(); !errors.Is(err, guest.ErrConnectionLost) {
		t.Errorf("Recv after the connection dropped = %v, want ErrConnectionLost", err)
	}

	c := connect(t, ta.srv)
	list, err := c.SessionList(callCtx(t, 5*time.Second))
	if err != nil || len(list) != 1 || list[0].State != guest.SessionRunning {
		t.Fatalf("list on a new connection = %+v, %v", list, err)
	}
	st2, _, err := c.SessionAttach(callCtx(t, 10*time.Second), guest.SessionAttachRequest{Name: "s", Follow: true, Input: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	if _, err := st2.Write([]byte("after\n")); err != nil {
		t.Fatal(err)
	}
	var o2 sessionOutput
	recvUntil(t, st2, &o2, stdoutHas("before\nafter\n"))
}

func TestSessionOffsetsAndOrder(t *testing.T) {
	ta := startAgent(t, 0)
	// The sleeps make the order of the writes certain.
	script := `echo one; sleep 0.1; echo err1 >&2; sleep 0.1; echo two; read line; echo "got $line"; sleep 0.1; echo err2 >&2`
	ta.start(t, guest.SessionStartRequest{Name: "ord", Argv: []string{"sh", "-c", script}})
	ta.waitSession(t, "ord", func(s guest.SessionInfo) bool { return s.StdoutBytes == 8 && s.StderrBytes == 5 })

	// From the end: only what comes next.
	tail, info := ta.attach(t, guest.SessionAttachRequest{Name: "ord", StdoutOffset: -1, StderrOffset: -1, Follow: true, Input: true})
	if info.StdoutBytes != 8 || info.StderrBytes != 5 {
		t.Errorf("attach info = %+v", info)
	}
	if _, err := tail.Write([]byte("it\n")); err != nil {
		t.Fatal(err)
	}
	o := recvAll(t, tail)
	if diff := cmp.Diff([]string{"stdout:got it\n", "stderr:err2\n"}, o.order); diff != "" {
		t.Errorf("from the end (-want +got):\n%s", diff)
	}
	if o.exit == nil || o.exit.Code != 0 {
		t.Errorf("exit = %+v", o.exit)
	}

	// From 0 after the exit: everything, in the order it was written.
	all, _ := ta.attach(t, guest.SessionAttachRequest{Name: "ord", Follow: true})
	o = recvAll(t, all)
	want := []string{"stdout:one\n", "stderr:err1\n", "stdout:two\ngot it\n", "stderr:err2\n"}
	if diff := cmp.Diff(want, o.order); diff != "" {
		t.Errorf("from 0 (-want +got):\n%s", diff)
	}
	if o.exit == nil || o.exit.Code != 0 {
		t.Errorf("exit = %+v", o.exit)
	}

	// From the middle of each stream.
	mid, _ := ta.attach(t, guest.SessionAttachRequest{Name: "ord", StdoutOffset: 4, StderrOffset: 5, Follow: true})
	o = recvAll(t, mid)
	if o.stdout.String() != "two\ngot it\n" || o.stderr.String() != "err2\n" {
		t.Errorf("from 4/5: stdout %q stderr %q", o.stdout.String(), o.stderr.String())
	}

	// Past the end.
	_, _, err := ta.client.SessionAttach(callCtx(t, 5*time.Second), guest.SessionAttachRequest{Name: "ord", StdoutOffset: 1000})
	var re *guest.RemoteError
	if !errors.As(err, &re) || re.Kind != guest.KindInvalid || !strings.Contains(err.Error(), "stdout offset 1000 is past the 15 bytes written") {
		t.Errorf("attach past the end: %v", err)
	}
}

func TestSessionStreamChoice(t *testing.T) {
	ta := startAgent(t, 0)
	ta.start(t, guest.SessionStartRequest{Name: "both", Argv: []string{"sh", "-c", "echo out; echo err >&2; echo out2; echo err2 >&2"}})
	ta.waitSession(t, "both", exited)
	for _, tt := range []struct {
		name           string
		stdout, stderr bool
		want           [2]string
	}{
		{"stderr only", false, true, [2]string{"", "err\nerr2\n"}},
		{"stdout only", true, false, [2]string{"out\nout2\n", ""}},
		{"both", true, true, [2]string{"out\nout2\n", "err\nerr2\n"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st, _ := ta.attach(t, guest.SessionAttachRequest{Name: "both", Stdout: tt.stdout, Stderr: tt.stderr, Follow: true})
			o := recvAll(t, st)
			if got := [2]string{o.stdout.String(), o.stderr.String()}; got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestSessionExitAndSignal(t *testing.T) {
	ta := startAgent(t, 0)
	ta.start(t, guest.SessionStartRequest{Name: "three", Argv: []string{"sh", "-c", "exit 3"}, StdinMode: guest.StdinNull})
	info := ta.waitSession(t, "three", exited)
	if info.Exit == nil || *info.Exit != (guest.ExitStatus{Code: 3}) || info.EndedAt.Before(info.StartedAt) {
		t.Errorf("exited info = %+v", info)
	}

	ta.start(t, guest.SessionStartRequest{Name: "sleeper", Argv: []string{"sh", "-c", "echo ready; exec sleep 60"}})
	st, _ := ta.attach(t, guest.SessionAttachRequest{Name: "sleeper", Follow: true})
	var o sessionOutput
	recvUntil(t, st, &o, stdoutHas("ready"))
	if _, err := ta.client.SessionControl(callCtx(t, 5*time.Second),
		guest.SessionControlRequest{Name: "sleeper", Signal: int(syscall.SIGTERM)}); err != nil {
		t.Fatal(err)
	}
	recvUntil(t, st, &o, func(o *sessionOutput) bool { return o.exit != nil })
	want := guest.ExitStatus{Code: 143, Signal: 15}
	if *o.exit != want {
		t.Errorf("FrameExit = %+v, want %+v", *o.exit, want)
	}
	info = ta.waitSession(t, "sleeper", exited)
	if *info.Exit != want {
		t.Errorf("listed exit = %+v, want %+v", *info.Exit, want)
	}
	// Signalling an exited session says so.
	_, err := ta.client.SessionControl(callCtx(t, 5*time.Second), guest.SessionControlRequest{Name: "sleeper", Signal: 9})
	if err == nil || !strings.Contains(err.Error(), `session "sleeper" has exited (exit code 143)`) {
		t.Errorf("signalling an exited session: %v", err)
	}
}

func TestSessionNoFollow(t *testing.T) {
	ta := startAgent(t, 0)
	ta.start(t, guest.SessionStartRequest{Name: "nf", Argv: []string{"sh", "-c", "echo hello; echo oops >&2; exec sleep 60"}})
	ta.waitSession(t, "nf", func(s guest.SessionInfo) bool { return s.StdoutBytes == 6 && s.StderrBytes == 5 })
	st, info := ta.attach(t, guest.SessionAttachRequest{Name: "nf"})
	if info.State != guest.SessionRunning {
		t.Errorf("info = %+v", info)
	}
	o := recvAll(t, st)
	if !o.eof || o.exit != nil || o.stdout.String() != "hello\n" || o.stderr.String() != "oops\n" {
		t.Errorf("no-follow attach: eof %v exit %v stdout %q stderr %q", o.eof, o.exit, o.stdout.String(), o.stderr.String())
	}
}

func TestSessionTTYResize(t *testing.T) {
	ta := startAgent(t, 0)
	script := `stty -echo; test -t 0 && echo "tty $TERM"; stty size; read a; stty size; read b; stty size`
	ta.start(t, guest.SessionStartRequest{Name: "tty", Argv: []string{"sh", "-c", script},
		StdinMode: guest.StdinTTY, Rows: 30, Cols: 100})
	st, _ := ta.attach(t, guest.SessionAttachRequest{Name: "tty", Follow: true, Input: true})
	var o sessionOutput
	recvUntil(t, st, &o, stdoutHas("tty xterm-256color\r\n30 100\r\n"))
	if err := st.Resize(50, 132); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write([]byte("\n")); err != nil {
		t.Fatal(err)
	}
	recvUntil(t, st, &o, stdoutHas("50 132\r\n"))
	if _, err := ta.client.SessionControl(callCtx(t, 5*time.Second),
		guest.SessionControlRequest{Name: "tty", Rows: 40, Cols: 90}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write([]byte("\n")); err != nil {
		t.Fatal(err)
	}
	recvUntil(t, st, &o, func(o *sessionOutput) bool { return o.exit != nil })
	if want := "tty xterm-256color\r\n30 100\r\n50 132\r\n40 90\r\n"; o.stdout.String() != want || o.stderr.Len() != 0 {
		t.Errorf("tty output %q (stderr %q), want %q", o.stdout.String(), o.stderr.String(), want)
	}
}

func TestSessionNames(t *testing.T) {
	ta := startAgent(t, 0)
	ta.start(t, guest.SessionStartRequest{Name: "taken", Argv: []string{"sleep", "60"}})
	_, err := ta.client.SessionStart(callCtx(t, 5*time.Second), guest.SessionStartRequest{Name: "taken", Argv: []string{"true"}})
	if !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), `session "taken" is running already`) {
		t.Errorf("taken name: %v", err)
	}

	// An exited session's name is taken over, with fresh output.
	ta.start(t, guest.SessionStartRequest{Name: "reused", Argv: []string{"sh", "-c", "echo old; echo old >&2"}})
	ta.waitSession(t, "reused", exited)
	old, _ := ta.attach(t, guest.SessionAttachRequest{Name: "reused", Follow: true})
	ta.start(t, guest.SessionStartRequest{Name: "reused", Argv: []string{"echo", "new"}})
	info := ta.waitSession(t, "reused", exited)
	if info.StdoutBytes != 4 || info.StderrBytes != 0 {
		t.Errorf("reused session info = %+v", info)
	}
	st, _ := ta.attach(t, guest.SessionAttachRequest{Name: "reused", Follow: true})
	if o := recvAll(t, st); o.stdout.String() != "new\n" || o.stderr.Len() != 0 {
		t.Errorf("reused session output %q %q", o.stdout.String(), o.stderr.String())
	}
	// An attach to the session it replaced still reads the old output.
	if o := recvAll(t, old); o.stdout.String() != "old\n" || o.stderr.String() != "old\n" {
		t.Errorf("old attach read %q %q", o.stdout.String(), o.stderr.String())
	}
	list, err := ta.client.SessionList(callCtx(t, 5*time.Second))
	if err != nil || len(list) != 2 || list[0].Name != "taken" || list[1].Name != "reused" {
		t.Errorf("list = %+v, %v", list, err)
	}

	for _, name := range []string{"", "-a", ".hidden", "a/b", "..", "a b", "ü", strings.Repeat("a", 65)} {
		_, err := ta.client.SessionStart(callCtx(t, 5*time.Second), guest.SessionStartRequest{Name: name, Argv: []string{"true"}})
		var re *guest.RemoteError
		if !errors.As(err, &re) || re.Kind != guest.KindInvalid || !strings.Contains(err.Error(), "bad session name") {
			t.Errorf("name %q: %v", name, err)
		}
	}
	if _, err := ta.client.SessionStart(callCtx(t, 5*time.Second),
		guest.SessionStartRequest{Name: strings.Repeat("a", 64), Argv: []string{"true"}}); err != nil {
		t.Errorf("64-character name: %v", err)
	}
	assertSessionDir(t, ta.srv, "reused", "taken", strings.Repeat("a", 64))
}

func TestSessionStartErrors(t *testing.T) {
	ta := startAgent(t, 0)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "data"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	ta.start(t, guest.SessionStartRequest{Name: "ok", Argv: []string{"true"}})
	tests := []struct {
		name string
		req  guest.SessionStartRequest
		is   error
		msg  string
	}{
		{"not found", guest.SessionStartRequest{Name: "x", Argv: []string{"no-such-command-xyz"}},
			fs.ErrNotExist, `session "x": command no-such-command-xyz: not found (install it in the guest or give its full path)`},
		{"not found by path", guest.SessionStartRequest{Name: "x", Argv: []string{dir + "/nope"}},
			fs.ErrNotExist, "command " + dir + "/nope: not found"},
		{"not executable", guest.SessionStartRequest{Name: "x", Argv: []string{dir + "/data"}},
			nil, `session "x": cannot execute ` + dir + "/data: Permission denied"},
		{"missing cwd", guest.SessionStartRequest{Name: "x", Argv: []string{"true"}, Dir: "/no/such/dir"},
			fs.ErrNotExist, "working directory /no/such/dir does not exist in the guest"},
		{"empty argv", guest.SessionStartRequest{Name: "x"}, nil, "empty command"},
		{"bad stdin mode", guest.SessionStartRequest{Name: "x", Argv: []string{"true"}, StdinMode: "socket"},
			nil, `bad stdin mode "socket" (want pipe, tty or null)`},
		{"name of an exited session, command not found", guest.SessionStartRequest{Name: "ok", Argv: []string{"no-such-command-xyz"}},
			fs.ErrNotExist, "not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ta.client.SessionStart(callCtx(t, 5*time.Second), tt.req)
			if err == nil || !strings.Contains(err.Error(), tt.msg) || (tt.is != nil && !errors.Is(err, tt.is)) {
				t.Errorf("error = %v, want %q (is %v)", err, tt.msg, tt.is)
			}
		})
	}
	// Nothing was made, and the exited session kept its record.
	list, err := ta.client.SessionList(callCtx(t, 5*time.Second))
	if err != nil || len(list) != 1 || list[0].Name != "ok" || list[0].Argv[0] != "true" {
		t.Errorf("list = %+v, %v", list, err)
	}
	assertSessionDir(t, ta.srv, "ok")
}

func TestSessionNullInput(t *testing.T) {
	ta := startAgent(t, 0)
	ta.start(t, guest.SessionStartRequest{Name: "null", Argv: []string{"sh", "-c", "readlink /proc/self/fd/0; exec sleep 60"},
		StdinMode: guest.StdinNull})
	st, _ := ta.attach(t, guest.SessionAttachRequest{Name: "null", Follow: true, Input: true})
	var o sessionOutput
	recvUntil(t, st, &o, stdoutHas("\n"))
	if o.stdout.String() != "/dev/null\n" {
		t.Errorf("stdin is %q, want /dev/null", o.stdout.String())
	}
	if _, err := st.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	_, err := st.Recv()
	var re *guest.RemoteError
	if !errors.As(err, &re) || re.Kind != guest.KindInvalid || !strings.Contains(err.Error(), `session "null" has no stdin (stdin mode null): input is refused`) {
		t.Errorf("input in null mode: %v", err)
	}
	_, err = ta.client.SessionControl(callCtx(t, 5*time.Second), guest.SessionControlRequest{Name: "null", CloseStdin: true})
	if err == nil || !strings.Contains(err.Error(), "has no stdin to close") {
		t.Errorf("closing null stdin: %v", err)
	}
	// An attach without Input may not write either; the session goes on.
	ro, _ := ta.attach(t, guest.SessionAttachRequest{Name: "null", Follow: true})
	if _, err := ro.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := recvErr(ro); err == nil || !strings.Contains(err.Error(), "attached without input") {
		t.Errorf("input without Input: %v", err)
	}
	ta.waitSession(t, "null", func(s guest.SessionInfo) bool { return s.State == guest.SessionRunning && s.Attached == 0 })
}

func TestSessionControl(t *testing.T) {
	ta := startAgent(t, 0)
	ta.start(t, guest.SessionStartRequest{Name: "cat", Argv: []string{"cat"}})
	st, _ := ta.attach(t, guest.SessionAttachRequest{Name: "cat", Follow: true, Input: true})
	if _, err := st.Write([]byte("last\n")); err != nil {
		t.Fatal(err)
	}
	ctl := func(req guest.SessionControlRequest) (guest.SessionInfo, error) {
		req.Name = "cat"
		return ta.client.SessionControl(callCtx(t, 5*time.Second), req)
	}
	for _, tt := range []struct {
		req guest.SessionControlRequest
		msg string
	}{
		{guest.SessionControlRequest{Signal: 99}, "bad signal 99 (want 1 to 64)"},
		{guest.SessionControlRequest{Rows: 10, Cols: 10}, `session "cat" has no tty to resize (stdin mode pipe)`},
		// A bad part refuses the whole request: stdin stays open.
		{guest.SessionControlRequest{CloseStdin: true, Signal: -1}, "bad signal -1"},
	} {
		if _, err := ctl(tt.req); err == nil || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("control %+v: %v, want %q", tt.req, err, tt.msg)
		}
	}
	info, err := ctl(guest.SessionControlRequest{})
	if err != nil || info.State != guest.SessionRunning || info.Attached != 1 {
		t.Errorf("empty control = %+v, %v", info, err)
	}
	if _, err := ctl(guest.SessionControlRequest{CloseStdin: true}); err != nil {
		t.Fatal(err)
	}
	o := recvAll(t, st)
	if o.stdout.String() != "last\n" || o.exit == nil || o.exit.Code != 0 {
		t.Errorf("after closing stdin: stdout %q exit %+v", o.stdout.String(), o.exit)
	}
	_, err = ta.client.SessionControl(callCtx(t, 5*time.Second), guest.SessionControlRequest{Name: "nope", Signal: 9})
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), `no session "nope" in the guest (there are: cat)`) {
		t.Errorf("unknown session: %v", err)
	}
	_, _, err = ta.client.SessionAttach(callCtx(t, 5*time.Second), guest.SessionAttachRequest{Name: "nope"})
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("attaching to an unknown session: %v", err)
	}
}

func TestSessionBigOutput(t *testing.T) {
	ta := startAgent(t, 0)
	const script = `seq 1 600000; seq 1 100000 >&2; seq 600001 900000`
	want, err := exec.Command("sh", "-c", script).Output()
	if err != nil {
		t.Fatal(err)
	}
	wantErr, err := exec.Command("seq", "1", "100000").Output()
	if err != nil {
		t.Fatal(err)
	}
	ta.start(t, guest.SessionStartRequest{Name: "big", Argv: []string{"sh", "-c", script}})
	live, _ := ta.attach(t, guest.SessionAttachRequest{Name: "big", Follow: true})
	o := recvAll(t, live)
	if !bytes.Equal(o.stdout.Bytes(), want) || !bytes.Equal(o.stderr.Bytes(), wantErr) {
		t.Fatalf("live attach got %d+%d bytes, want %d+%d equal ones", o.stdout.Len(), o.stderr.Len(), len(want), len(wantErr))
	}
	if o.exit == nil || o.exit.Code != 0 {
		t.Errorf("exit = %+v", o.exit)
	}
	replay, _ := ta.attach(t, guest.SessionAttachRequest{Name: "big", Follow: true})
	o = recvAll(t, replay)
	if !bytes.Equal(o.stdout.Bytes(), want) || !bytes.Equal(o.stderr.Bytes(), wantErr) {
		t.Fatalf("replay got %d+%d bytes, want %d+%d equal ones", o.stdout.Len(), o.stderr.Len(), len(want), len(wantErr))
	}
	onDisk, err := os.ReadFile(filepath.Join(ta.srv.sessionDir, "big", "stdout"))
	if err != nil || !bytes.Equal(onDisk, want) {
		t.Errorf("stdout file: %d bytes, %v", len(onDisk), err)
	}
}

// TestSessionOrderCap: with the write order capped, old output is still
// all there, stream by stream, and the recent order is kept.
func TestSessionOrderCap(t *testing.T) {
	defer func(n int) { maxRuns = n }(maxRuns)
	maxRuns = 4
	ta := startAgent(t, 0)
	var script strings.Builder
	var wantOut, wantErr strings.Builder
	for i := range 8 {
		fmt.Fprintf(&script, "echo o%d; sleep 0.05; echo e%d >&2; sleep 0.05; ", i, i)
		fmt.Fprintf(&wantOut, "o%d\n", i)
		fmt.Fprintf(&wantErr, "e%d\n", i)
	}
	ta.start(t, guest.SessionStartRequest{Name: "cap", Argv: []string{"sh", "-c", script.String()}})
	ta.waitSession(t, "cap", exited)
	st, _ := ta.attach(t, guest.SessionAttachRequest{Name: "cap", Follow: true})
	o := recvAll(t, st)
	if o.stdout.String() != wantOut.String() || o.stderr.String() != wantErr.String() {
		t.Errorf("stdout %q stderr %q", o.stdout.String(), o.stderr.String())
	}
	// The four runs kept: o6 e6 o7 e7.
	if !strings.HasSuffix(strings.Join(o.order, ""), "stdout:o6\nstderr:e6\nstdout:o7\nstderr:e7\n") {
		t.Errorf("recent order lost: %q", o.order)
	}
}
