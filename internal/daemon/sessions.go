package daemon

import (
	"net/http"
	"strconv"
	"syscall"
	"time"

	"banger/internal/api"
	"banger/internal/store"
)

func (s *Server) sessionRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/vms/{name}/sessions", s.handleSessionList)
	mux.HandleFunc("POST /v1/vms/{name}/sessions", s.handleSessionStart)
	mux.HandleFunc("GET /v1/vms/{name}/sessions/{session}", s.handleSessionGet)
	mux.HandleFunc("POST /v1/vms/{name}/sessions/{session}/stop", s.handleSessionStop)
	mux.HandleFunc("POST /v1/vms/{name}/sessions/{session}/resize", s.handleSessionResize)
	mux.HandleFunc("GET /v1/vms/{name}/sessions/{session}/logs", s.handleSessionLogs)
}

// sessionVM is the VM a session request names; a missing one is written
// as the error.
func (s *Server) sessionVM(w http.ResponseWriter, r *http.Request) (store.VM, bool) {
	v, err := s.vms.get(r.Context(), r.PathValue("name"))
	if err != nil {
		writeErr(w, err)
		return v, false
	}
	return v, true
}

func (s *Server) handleSessionList(w http.ResponseWriter, r *http.Request) {
	v, ok := s.sessionVM(w, r)
	if !ok {
		return
	}
	list, err := s.sessions.List(r.Context(), v)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, list)
}

func (s *Server) handleSessionStart(w http.ResponseWriter, r *http.Request) {
	var req api.StartSessionRequest
	if err := decode(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	v, ok := s.sessionVM(w, r)
	if !ok {
		return
	}
	sess, err := s.sessions.Start(r.Context(), v, req)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, sess)
}

func (s *Server) handleSessionGet(w http.ResponseWriter, r *http.Request) {
	v, ok := s.sessionVM(w, r)
	if !ok {
		return
	}
	sess, err := s.sessions.Get(r.Context(), v, r.PathValue("session"))
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, sess)
}

func (s *Server) handleSessionStop(w http.ResponseWriter, r *http.Request) {
	var req api.StopSessionRequest
	if err := decode(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	v, ok := s.sessionVM(w, r)
	if !ok {
		return
	}
	sig := syscall.Signal(req.Signal)
	if sig == 0 {
		sig = syscall.SIGTERM
	}
	if sig < 1 || sig > 64 {
		writeErr(w, api.Errorf(api.InvalidArgument, "signal %d: want 1 to 64", req.Signal))
		return
	}
	timeout := time.Duration(req.TimeoutSeconds) * time.Second
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	sess, err := s.sessions.Stop(r.Context(), v, r.PathValue("session"), sig, timeout)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, sess)
}

func (s *Server) handleSessionResize(w http.ResponseWriter, r *http.Request) {
	var req api.ResizeSessionRequest
	if err := decode(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	v, ok := s.sessionVM(w, r)
	if !ok {
		return
	}
	if req.Rows == 0 || req.Cols == 0 {
		writeErr(w, api.Errorf(api.InvalidArgument, "resize to %dx%d: rows and cols must be at least 1", req.Rows, req.Cols))
		return
	}
	if err := s.sessions.Resize(r.Context(), v, r.PathValue("session"), req.Rows, req.Cols); err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]uint16{"rows": req.Rows, "cols": req.Cols})
}

// handleSessionLogs sends the host's copy of one output stream
// (stream=stdout|stderr), from its oldest kept byte or, with from=end,
// only what comes next; with follow=true it goes on until the session
// ends or the client leaves.
func (s *Server) handleSessionLogs(w http.ResponseWriter, r *http.Request) {
	v, ok := s.sessionVM(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	stream := q.Get("stream")
	if stream == "" {
		stream = "stdout"
	}
	follow, _ := strconv.ParseBool(q.Get("follow"))
	fromEnd := q.Get("from") == "end"
	name := r.PathValue("session")
	if _, err := s.sessions.Get(r.Context(), v, name); err != nil {
		writeErr(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.WriteHeader(http.StatusOK)
	fw := flushWriter{w}
	fw.Flush()
	if err := s.sessions.Logs(r.Context(), v, name, stream, fromEnd, follow, fw); err != nil {
		s.log.Debug("session logs", "vm", v.Name, "session", name, "err", err)
	}
}

// flushWriter flushes after each write, so a follower sees output as it
// comes.
type flushWriter struct{ w http.ResponseWriter }

func (f flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	f.Flush()
	return n, err
}

func (f flushWriter) Flush() {
	if fl, ok := f.w.(http.Flusher); ok {
		fl.Flush()
	}
}
