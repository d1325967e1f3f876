package daemon

import (
	"fmt"
	"net/http"
	"path"
	"strings"

	"banger/internal/api"
	"banger/internal/guest"
)

// runRoutes registers the endpoints vm run, ssh and workspaces use.
func (s *Server) runRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/vms/{name}/ssh", s.handleSSHInfo)
	mux.HandleFunc("PUT /v1/vms/{name}/workspace", s.handlePutWorkspace)
	mux.HandleFunc("GET /v1/vms/{name}/workspace", s.handleGetWorkspace)
	mux.HandleFunc("PUT /v1/vms/{name}/workspace/source", s.handleSetWorkspaceSource)
}

// handleSSHInfo tells a client where the VM's sshd is and which host key
// to pin.
func (s *Server) handleSSHInfo(w http.ResponseWriter, r *http.Request) {
	v, err := s.vms.get(r.Context(), r.PathValue("name"))
	if err != nil {
		writeErr(w, err)
		return
	}
	key, err := hostKey(v)
	if err != nil {
		writeErr(w, api.Errorf(api.NotFound, "%v", err))
		return
	}
	view := s.vms.view(r.Context(), v)
	if view.IP == "" {
		writeErr(w, api.Errorf(api.Conflict, "vm %q has no address", v.Name).WithHint("start it with banger vm start "+v.Name))
		return
	}
	writeJSON(w, http.StatusOK, api.SSHInfo{Name: v.Name, IP: view.IP, Port: 22, User: "root", HostKey: key})
}

// guestDir checks the dir query parameter: an absolute, clean guest path
// other than /.
func guestDir(r *http.Request) (string, error) {
	d := r.URL.Query().Get("dir")
	if d == "" || d[0] != '/' || path.Clean(d) == "/" {
		return "", api.Errorf(api.InvalidArgument, "guest path %q: give an absolute directory other than /", d)
	}
	return path.Clean(d), nil
}

// handlePutWorkspace extracts the request body, a tar stream, under dir.
func (s *Server) handlePutWorkspace(w http.ResponseWriter, r *http.Request) {
	dir, err := guestDir(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	a, err := s.agentFor(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	if err := a.PutTar(r.Context(), dir, r.Body); err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, api.WorkspaceResult{Dir: dir})
}

// handleGetWorkspace streams dir as a tar made by the guest's tar. If the
// guest's tar fails after the answer started, the response is aborted so
// the client sees a broken stream rather than a short archive.
func (s *Server) handleGetWorkspace(w http.ResponseWriter, r *http.Request) {
	dir, err := guestDir(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	a, err := s.agentFor(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	code, err := a.Exec(r.Context(), guest.ExecRequest{Argv: []string{"test", "-d", dir}}, nil, nil, nil)
	if err != nil {
		writeErr(w, err)
		return
	}
	if code != 0 {
		writeErr(w, api.Errorf(api.NotFound, "%s is not a directory in vm %q", dir, r.PathValue("name")))
		return
	}
	tar, err := a.OpenExec(r.Context(), guest.ExecRequest{Argv: []string{"tar", "-C", dir, "-cf", "-", "."}})
	if err != nil {
		writeErr(w, err)
		return
	}
	defer tar.Close()
	tar.CloseStdin()
	w.Header().Set("Content-Type", "application/x-tar")
	stderr := &cappedBuffer{max: maxGuestStderr}
	st, err := tar.Wait(w, stderr)
	if err == nil && st.Code != 0 {
		err = fmt.Errorf("guest tar exited %d: %s", st.Code, strings.TrimSpace(stderr.String()))
	}
	if err != nil {
		s.log.Warn("workspace export broke off", "vm", r.PathValue("name"), "dir", dir, "err", err)
		panic(http.ErrAbortHandler)
	}
}

// maxGuestStderr is how much of a guest command's stderr the daemon keeps
// for an error message.
const maxGuestStderr = 4 << 10

// cappedBuffer keeps the first max bytes written to it and counts the
// rest: the guest decides how much it writes, the daemon how much it
// keeps.
type cappedBuffer struct {
	max     int
	b       []byte
	dropped int64
}

func (c *cappedBuffer) Write(p []byte) (int, error) {
	n := min(len(p), c.max-len(c.b))
	c.b = append(c.b, p[:n]...)
	c.dropped += int64(len(p) - n)
	return len(p), nil
}

// String is what was kept, with a marker when more was written.
func (c *cappedBuffer) String() string {
	if c.dropped == 0 {
		return string(c.b)
	}
	return fmt.Sprintf("%s... [%d more bytes not kept]", c.b, c.dropped)
}
