package daemon

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/api"
	"banger/internal/config"
)

// withPeer reads the real SO_PEERCRED of a unix connection.
func TestWithPeerReadsCredentials(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := net.Dial("unix", sock); err == nil {
			defer c.Close()
			c.Read(make([]byte, 1))
		}
	}()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p, _ := withPeer(context.Background(), c).Value(peerKey{}).(peer)
	if p.err != nil || p.uid != os.Geteuid() || p.pid != os.Getpid() {
		t.Fatalf("peer %+v, want uid %d pid %d", p, os.Geteuid(), os.Getpid())
	}
}

// peerCheck serves root and the invoking user and refuses anyone else
// with 403 and a reason.
func TestPeerCheck(t *testing.T) {
	t.Setenv("SUDO_UID", "")
	s := &Server{log: slog.New(slog.DiscardHandler), opts: Options{Dirs: config.Dirs{State: "/var/lib/banger"}}}
	h := s.peerCheck(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) }))
	for _, tc := range []struct {
		name string
		p    peer
		want int
	}{
		{"root", peer{uid: 0}, http.StatusTeapot},
		{"self", peer{uid: os.Geteuid()}, http.StatusTeapot},
		{"stranger", peer{uid: 54321, pid: 7}, http.StatusForbidden},
		{"unknown", peer{uid: -1, err: os.ErrInvalid}, http.StatusForbidden},
		{"none recorded", peer{}, http.StatusForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			r := httptest.NewRequest("GET", "/v1/version", nil)
			if tc.name != "none recorded" {
				r = r.WithContext(context.WithValue(r.Context(), peerKey{}, tc.p))
			}
			h.ServeHTTP(rec, r)
			if rec.Code != tc.want {
				t.Fatalf("status %d, want %d", rec.Code, tc.want)
			}
			if tc.want != http.StatusForbidden {
				return
			}
			var body api.ErrorBody
			json.Unmarshal(rec.Body.Bytes(), &body)
			if body.Error == nil || body.Error.Code != api.PermissionDenied || !strings.Contains(body.Error.Message, "serves only root") {
				t.Fatalf("refusal body %s", rec.Body)
			}
		})
	}
}
