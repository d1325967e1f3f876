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

func (m *vmManager) routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/vms", m.handleList)
	mux.HandleFunc("POST /v1/vms", m.handleCreate)
	mux.HandleFunc("GET /v1/vms/{name}", m.handleInspect)
	mux.HandleFunc("DELETE /v1/vms/{name}", m.handleDelete)
	mux.HandleFunc("POST /v1/vms/{name}/start", m.handleStart)
	mux.HandleFunc("POST /v1/vms/{name}/stop", m.handleStop)
	mux.HandleFunc("GET /v1/vms/{name}/logs", m.handleLogs)
	mux.HandleFunc("POST /v1/vms/{name}/exec", m.handleExec)
	m.fileRoutes(mux)
	m.runRoutes(mux)
}

func (m *vmManager) handleList(w http.ResponseWriter, r *http.Request) {
	vms, err := m.s.store.ListVMs(r.Context())
	if err != nil {
		writeErr(w, err)
		return
	}
	out := []api.VM{}
	for _, v := range vms {
		out = append(out, m.view(v))
	}
	writeJSON(w, http.StatusOK, out)
}

func (m *vmManager) handleInspect(w http.ResponseWriter, r *http.Request) {
	v, err := m.get(r.Context(), r.PathValue("name"))
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, m.view(v))
}

func (m *vmManager) handleCreate(w http.ResponseWriter, r *http.Request) {
	var req api.CreateVMRequest
	if err := decode(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	st := newStream(w)
	vm, err := m.create(r.Context(), req, st.Progress)
	st.finish(vm, err)
}

func (m *vmManager) handleStart(w http.ResponseWriter, r *http.Request) {
	var req api.StartVMRequest
	if err := decode(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	st := newStream(w)
	vm, err := m.start(r.Context(), r.PathValue("name"), time.Duration(req.ReadyTimeoutSeconds)*time.Second, st.Progress)
	st.finish(vm, err)
}

func (m *vmManager) handleStop(w http.ResponseWriter, r *http.Request) {
	var req api.StopVMRequest
	if err := decode(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	vm, err := m.stop(r.Context(), r.PathValue("name"), req.Force, time.Duration(req.TimeoutSeconds)*time.Second)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, vm)
}

func (m *vmManager) handleDelete(w http.ResponseWriter, r *http.Request) {
	force, _ := strconv.ParseBool(r.URL.Query().Get("force"))
	if err := m.delete(r.Context(), r.PathValue("name"), force); err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"deleted": r.PathValue("name")})
}

// handleLogs sends the console log (its older half console.log.1 first,
// when it has rotated); with follow=true it keeps sending new output,
// across rotations, until the client leaves or the VM stops.
func (m *vmManager) handleLogs(w http.ResponseWriter, r *http.Request) {
	v, err := m.get(r.Context(), r.PathValue("name"))
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
		if !follow || (m.machine(v.ID) == nil && c.f != nil) {
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
func (m *vmManager) handleExec(w http.ResponseWriter, r *http.Request) {
	v, err := m.get(r.Context(), r.PathValue("name"))
	if err != nil {
		writeErr(w, err)
		return
	}
	if r.Header.Get("Upgrade") != StreamUpgrade {
		writeErr(w, api.Errorf(api.InvalidArgument, "exec needs an Upgrade: %s connection", StreamUpgrade))
		return
	}
	actx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	a, err := m.agent(actx, v.ID)
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
	splice(conn, brw.Reader, stream)
}

// splice copies both ways until either side ends, then closes both.
func splice(client net.Conn, fromClient *bufio.Reader, agent net.Conn) {
	var once sync.Once
	done := make(chan struct{})
	end := func() {
		once.Do(func() {
			client.Close()
			agent.Close()
			close(done)
		})
	}
	go func() { io.Copy(agent, fromClient); end() }()
	go func() { io.Copy(client, agent); end() }()
	<-done
}
