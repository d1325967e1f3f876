package client

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"banger/internal/api"
	"banger/internal/guest"
)

// acpDaemon answers GET /v1/vms/dev with vm and serves exec like the
// daemon spliced to an agent: req gets the exec request; pid 0 answers as
// an agent that could not start the command.
func acpDaemon(t *testing.T, vm api.VM, pid int, req *guest.ExecRequest, serve func(fw *guest.FrameWriter, r *bufio.Reader)) *Client {
	t.Helper()
	return fakeDaemon(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			json.NewEncoder(w).Encode(vm)
			return
		}
		conn, rw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + StreamUpgrade + "\r\n\r\n")
		rw.Flush()
		f, err := guest.ReadFrame(rw.Reader)
		var gr guest.Request
		if err != nil || guest.DecodeJSON(f, guest.FrameRequest, &gr) != nil || gr.Exec == nil {
			t.Errorf("first frame %v, %v; want the exec request", f.Type, err)
			return
		}
		*req = *gr.Exec
		fw := guest.NewFrameWriter(conn)
		fw.WriteJSON(guest.FrameResponse, guest.Response{PID: pid})
		serve(fw, rw.Reader)
	}))
}

// opencode acp runs in the VM's workspace with stdin's bytes as they are
// read, and its output and exit status come back as they are.
func TestACPBridgesBytesAndStatus(t *testing.T) {
	var req guest.ExecRequest
	vm := api.VM{Name: "dev", Workspace: &api.WorkspaceSource{HostPath: "/h/repo", GuestPath: "/root/repo"}}
	c := acpDaemon(t, vm, 9, &req, func(fw *guest.FrameWriter, r *bufio.Reader) {
		var in []byte
		for {
			f, err := guest.ReadFrame(r)
			if err != nil || f.Type == guest.FrameEOF {
				break
			}
			in = append(in, f.Payload...)
		}
		fw.WriteFrame(guest.FrameStdout, in)
		fw.WriteFrame(guest.FrameStderr, []byte("log line\n"))
		fw.WriteJSON(guest.FrameExit, guest.ExitStatus{Code: 3})
	})
	msg := "{\"jsonrpc\":\"2.0\",\"id\":1}\n{\"partial\":" // no trailing newline: not line-buffered
	var out, errOut bytes.Buffer
	code, err := c.ACP(t.Context(), "dev", ACPOptions{Stdio: Stdio{In: strings.NewReader(msg), Out: &out, Err: &errOut}})
	if err != nil || code != 3 || out.String() != msg || errOut.String() != "log line\n" {
		t.Fatalf("code %d err %v stdout %q stderr %q", code, err, out.String(), errOut.String())
	}
	if strings.Join(req.Argv, " ") != "opencode acp" || req.Dir != "/root/repo" || req.TTY ||
		len(req.Env) != 1 || !strings.HasPrefix(req.Env[0], "PATH=/root/.opencode/bin:") {
		t.Errorf("exec request %+v", req)
	}
}

// Without a workspace opencode runs in /root; --cwd wins over both.
func TestACPDir(t *testing.T) {
	for _, tc := range []struct {
		vm   api.VM
		dir  string
		want string
	}{
		{api.VM{Name: "dev"}, "", "/root"},
		{api.VM{Name: "dev", Workspace: &api.WorkspaceSource{GuestPath: "/root/repo"}}, "/srv", "/srv"},
	} {
		var req guest.ExecRequest
		c := acpDaemon(t, tc.vm, 9, &req, func(fw *guest.FrameWriter, r *bufio.Reader) {
			fw.WriteJSON(guest.FrameExit, guest.ExitStatus{Code: 0})
		})
		if _, err := c.ACP(t.Context(), "dev", ACPOptions{Dir: tc.dir}); err != nil || req.Dir != tc.want {
			t.Errorf("dir %q: ran in %q (%v), want %q", tc.dir, req.Dir, err, tc.want)
		}
	}
}

// An opencode the agent cannot start is an error saying so and how to
// install it, with 127; nothing ran.
func TestACPOpencodeMissing(t *testing.T) {
	var req guest.ExecRequest
	c := acpDaemon(t, api.VM{Name: "dev"}, 0, &req, func(fw *guest.FrameWriter, r *bufio.Reader) {
		fw.WriteFrame(guest.FrameStderr, []byte("sh: opencode: not found\n"))
		fw.WriteJSON(guest.FrameExit, guest.ExitStatus{Code: 127})
	})
	var out bytes.Buffer
	code, err := c.ACP(t.Context(), "dev", ACPOptions{Stdio: Stdio{In: strings.NewReader("x"), Out: &out, Err: &out}})
	var ne *NoOpencodeError
	if !errors.As(err, &ne) || code != ExitNoOpencode || out.Len() != 0 {
		t.Fatalf("code %d err %v output %q", code, err, out.String())
	}
	for _, want := range []string{"opencode is not installed in vm dev", "sh: opencode: not found",
		"banger vm exec dev -- sh -c 'curl -fsSL https://opencode.ai/install | bash'", "npm i -g opencode-ai"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}
