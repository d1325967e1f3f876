package client

import (
	"bufio"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/guest"
)

// fakeAgent answers vm exec as the daemon splices it to a guest agent:
// it upgrades the connection, answers the request with a PID, then hands
// the guest's side of the frames to serve.
func fakeAgent(t *testing.T, serve func(fw *guest.FrameWriter, r *bufio.Reader)) *Client {
	t.Helper()
	return fakeDaemon(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, rw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + StreamUpgrade + "\r\n\r\n")
		rw.Flush()
		if f, err := guest.ReadFrame(rw.Reader); err != nil || f.Type != guest.FrameRequest {
			t.Errorf("first frame %v, %v; want the request", f.Type, err)
			return
		}
		fw := guest.NewFrameWriter(conn)
		fw.WriteJSON(guest.FrameResponse, guest.Response{PID: 7})
		serve(fw, rw.Reader)
	}))
}

// A command's output and exit status come back; stdin is closed at once
// when there is none.
func TestRunCommandExit(t *testing.T) {
	c := fakeAgent(t, func(fw *guest.FrameWriter, r *bufio.Reader) {
		if f, err := guest.ReadFrame(r); err != nil || f.Type != guest.FrameEOF {
			t.Errorf("stdin frame %v, %v; want EOF", f.Type, err)
		}
		fw.WriteFrame(guest.FrameStdout, []byte("out\n"))
		fw.WriteFrame(guest.FrameStderr, []byte("err\n"))
		fw.WriteJSON(guest.FrameExit, guest.ExitStatus{Code: 42})
	})
	var stdout, stderr strings.Builder
	code, err := c.RunCommand(t.Context(), "dev", CommandOptions{Req: guest.ExecRequest{Argv: []string{"x"}},
		Stdio: Stdio{Out: &stdout, Err: &stderr}})
	if err != nil || code != 42 || stdout.String() != "out\n" || stderr.String() != "err\n" {
		t.Errorf("code %d, err %v, stdout %q, stderr %q", code, err, stdout.String(), stderr.String())
	}
}

// The first Ctrl-C reaches the command as SIGINT; a second detaches with
// 130 and says so.
func TestRunCommandCtrlC(t *testing.T) {
	gotINT := make(chan struct{})
	c := fakeAgent(t, func(fw *guest.FrameWriter, r *bufio.Reader) {
		for {
			f, err := guest.ReadFrame(r)
			if err != nil {
				return // the client went away: detached
			}
			var s guest.Signal
			if f.Type == guest.FrameSignal && guest.DecodeJSON(f, guest.FrameSignal, &s) == nil && s.Signal == int(syscall.SIGINT) {
				close(gotINT)
			}
		}
	})
	sigs := make(chan os.Signal, 1)
	var stderr strings.Builder
	type result struct {
		code int
		err  error
	}
	done := make(chan result, 1)
	go func() {
		code, err := c.RunCommand(t.Context(), "dev", CommandOptions{Req: guest.ExecRequest{Argv: []string{"x"}},
			Stdio: Stdio{Err: &stderr}, Signals: sigs})
		done <- result{code, err}
	}()
	sigs <- os.Interrupt
	select {
	case <-gotINT:
	case <-time.After(10 * time.Second):
		t.Fatal("the first Ctrl-C did not reach the command as SIGINT")
	}
	sigs <- os.Interrupt
	select {
	case r := <-done:
		if r.code != 130 || r.err != nil || !strings.Contains(stderr.String(), "detached from the command in vm dev") {
			t.Errorf("code %d, err %v, stderr %q; want 130 and the detach note", r.code, r.err, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a second Ctrl-C did not detach")
	}
}
