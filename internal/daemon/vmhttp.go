package daemon

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"banger/internal/api"
	"banger/internal/guest"
	"banger/internal/vmm"
)

func (s *Server) vmRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/vms", s.handleList)
	mux.HandleFunc("POST /v1/vms", s.handleCreate)
	mux.HandleFunc("GET /v1/vms/{name}", s.handleInspect)
	mux.HandleFunc("DELETE /v1/vms/{name}", s.handleDelete)
	mux.HandleFunc("POST /v1/vms/{name}/start", s.handleStart)
	mux.HandleFunc("POST /v1/vms/{name}/stop", s.handleStop)
	mux.HandleFunc("GET /v1/vms/{name}/logs", s.handleLogs)
	mux.HandleFunc("POST /v1/vms/{name}/exec", s.handleExec)
	s.fileRoutes(mux)
	s.netRoutes(mux)
	s.runRoutes(mux)
	s.portRoutes(mux)
	s.snapshotRoutes(mux)
}

func (s *Server) handleList(w http.ResponseWriter, r *http.Request) {
	vms, err := s.vms.list(r.Context())
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, vms)
}

func (s *Server) handleInspect(w http.ResponseWriter, r *http.Request) {
	v, err := s.vms.get(r.Context(), r.PathValue("name"))
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, s.vms.view(r.Context(), v))
}

func (s *Server) handleCreate(w http.ResponseWriter, r *http.Request) {
	var req api.CreateVMRequest
	if err := decode(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	st := newStream(w)
	vm, err := s.vms.create(r.Context(), req, st.Progress)
	logWarnings(st, vm)
	st.finish(vm, err)
}

func (s *Server) handleStart(w http.ResponseWriter, r *http.Request) {
	var req api.StartVMRequest
	if err := decode(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	st := newStream(w)
	vm, err := s.vms.start(r.Context(), r.PathValue("name"), time.Duration(req.ReadyTimeoutSeconds)*time.Second, st.Progress)
	logWarnings(st, vm)
	st.finish(vm, err)
}

// logWarnings tells the user, on the start's stream, what the start could
// not do.
func logWarnings(st *stream, vm api.VM) {
	for _, w := range vm.Warnings {
		st.Log("warning: " + w)
	}
}

func (s *Server) handleStop(w http.ResponseWriter, r *http.Request) {
	var req api.StopVMRequest
	if err := decode(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	vm, err := s.vms.stop(r.Context(), r.PathValue("name"), req.Force, time.Duration(req.TimeoutSeconds)*time.Second)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, vm)
}

func (s *Server) handleDelete(w http.ResponseWriter, r *http.Request) {
	force, _ := strconv.ParseBool(r.URL.Query().Get("force"))
	if err := s.vms.delete(r.Context(), r.PathValue("name"), force); err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"deleted": r.PathValue("name")})
}

// handleLogs sends the console log (its older half console.log.1 first,
// when it has rotated); with follow=true it keeps sending new output,
// across rotations, until the client leaves or the VM stops.
func (s *Server) handleLogs(w http.ResponseWriter, r *http.Request) {
	v, err := s.vms.get(r.Context(), r.PathValue("name"))
	if err != nil {
		writeErr(w, err)
		return
	}
	follow, _ := strconv.ParseBool(r.URL.Query().Get("follow"))
	path := filepath.Join(v.Dir, "console.log")
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		if !follow {
			writeErr(w, api.Errorf(api.NotFound, "vm %q has no console log yet (it has not been started)", v.Name))
			return
		}
	} else if err != nil {
		writeErr(w, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	c := &consoleFollower{w: w, path: path, f: f}
	defer c.close()
	if old, err := os.Open(vmm.RotatedPath(path)); err == nil {
		_, _ = io.Copy(w, old)
		old.Close()
	}
	fl, _ := w.(http.Flusher)
	for {
		if err := c.copyAvailable(); err != nil {
			return
		}
		if fl != nil {
			fl.Flush()
		}
		if !follow || (s.vms.machine(v.ID) == nil && c.f != nil) {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
		c.catchUp()
	}
}

// StreamUpgrade is the Upgrade token of connections that carry guest
// agent frames (exec) after the HTTP exchange.
const StreamUpgrade = "banger-agent-stream"

// handleExec upgrades the connection and splices it to a new agent
// stream. The client speaks the agent's exec frames end to end; the
// daemon only checks that the first frame is an exec request.
func (s *Server) handleExec(w http.ResponseWriter, r *http.Request) {
	v, err := s.vms.get(r.Context(), r.PathValue("name"))
	if err != nil {
		writeErr(w, err)
		return
	}
	if r.Header.Get("Upgrade") != StreamUpgrade {
		writeErr(w, api.Errorf(api.InvalidArgument, "exec needs an Upgrade: %s connection", StreamUpgrade))
		return
	}
	actx, cancel := context.WithTimeout(r.Context(), agentDialTimeout)
	a, err := s.vms.agent(actx, v)
	cancel()
	if err != nil {
		writeErr(w, fmt.Errorf("vm %q: %w", v.Name, err))
		return
	}
	stream, err := a.OpenStream(r.Context())
	if err != nil {
		writeErr(w, api.Errorf(api.Unavailable, "vm %q: %v", v.Name, err))
		return
	}
	defer stream.Close()
	hj, ok := w.(http.Hijacker)
	if !ok {
		writeErr(w, errors.New("connection cannot be upgraded"))
		return
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: %s\r\nConnection: Upgrade\r\n\r\n", StreamUpgrade)
	if err := brw.Flush(); err != nil {
		return
	}
	first, err := guest.ReadFrame(brw.Reader)
	if err != nil {
		return
	}
	var req guest.Request
	if err := guest.DecodeJSON(first, guest.FrameRequest, &req); err != nil || req.Op != guest.OpExec {
		guest.NewFrameWriter(conn).WriteError(fmt.Errorf("only exec requests may be sent on this connection"))
		return
	}
	if err := guest.WriteFrame(stream, first.Type, first.Payload); err != nil {
		return
	}
	spliceExec(conn, brw.Reader, stream, a, v.Name)
}

// spliceExec is splice for an exec stream, the agent's side copied frame
// by frame: when the stream ends before the command's exit (the guest
// stopped answering and its connection was dropped, or the VM went
// away), the client is sent an error frame that names the VM and says
// why, rather than a bare end of stream.
func spliceExec(client net.Conn, fromClient *bufio.Reader, stream net.Conn, a *guest.Client, vm string) {
	var once sync.Once
	done := make(chan struct{})
	end := func() {
		once.Do(func() {
			client.Close()
			stream.Close()
			close(done)
		})
	}
	go func() { io.Copy(stream, fromClient); end() }()
	first := true
	go func() {
		defer end()
		var readErr error
		for {
			// The first frame (the command's start) is due at once; the
			// rest come when the command writes, each sent whole.
			answer := time.Duration(0)
			if first {
				answer, first = guest.AnswerTimeout, false
			}
			f, err := guest.ReadFrameConn(stream, answer)
			if err != nil {
				readErr = err
				break
			}
			if err := guest.WriteFrame(client, f.Type, f.Payload); err != nil {
				return
			}
			if f.Type == guest.FrameExit || f.Type == guest.FrameError {
				return
			}
		}
		select {
		case <-done:
			return // the client went first
		case <-a.Done():
		case <-time.After(2 * time.Second):
		}
		var msg error
		switch reason := a.Abandoned(); {
		case reason != nil:
			msg = fmt.Errorf("%w (%w)", guest.ErrConnectionLost, reason)
		case errors.Is(readErr, guest.ErrNoAnswer):
			msg = fmt.Errorf("vm %q: %w (the guest is frozen, overloaded or misbehaving; see banger vm logs %s)", vm, readErr, vm)
		case errors.Is(readErr, guest.ErrFrameTooLarge):
			msg = fmt.Errorf("vm %q: the guest agent broke the protocol: %w", vm, readErr)
		default:
			msg = fmt.Errorf("%w (vm %q: the guest agent's stream ended before the command exited)", guest.ErrConnectionLost, vm)
		}
		guest.NewFrameWriter(client).WriteError(msg)
	}()
	<-done
}
