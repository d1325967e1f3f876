package unixhttp

import (
	"io"
	"net"
	"net/http"
	"path/filepath"
	"testing"
)

// A request for any host reaches the server on the socket.
func TestClient(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Method+" "+r.URL.Path)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	c := NewClient(sock, func(tr *http.Transport) { tr.DisableKeepAlives = true })
	if c.Socket() != sock {
		t.Errorf("Socket = %q, want %q", c.Socket(), sock)
	}
	resp, err := c.Get("http://whatever.invalid/vms")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if string(b) != "GET /vms" {
		t.Errorf("server saw %q, want %q", b, "GET /vms")
	}
}
