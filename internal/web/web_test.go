package web

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"banger/internal/api"
)

// fakeAPI stands in for the daemon's API: it records what reached it.
type fakeAPI struct {
	mu      sync.Mutex
	calls   []string
	session api.Session
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.calls = append(f.calls, r.Method+" "+r.URL.Path)
	s := f.session
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if strings.HasPrefix(r.URL.Path, "/v1/vms/nope/") {
		w.WriteHeader(http.StatusNotFound)
		json.NewEncoder(w).Encode(api.ErrorBody{Error: api.Errorf(api.NotFound, `vm "nope": not found`)})
		return
	}
	if strings.Contains(r.URL.Path, "/sessions/") {
		json.NewEncoder(w).Encode(s)
		return
	}
	io.WriteString(w, `{"ok":true}`)
}

func (f *fakeAPI) seen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func newUI(t *testing.T, remote bool) (*Handler, *fakeAPI, *httptest.Server) {
	t.Helper()
	f := &fakeAPI{}
	h := New(Options{API: f, Remote: remote})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return h, f, srv
}

func do(t *testing.T, method, url string, hdr map[string]string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader("{}"))
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// The page carries the token, and a stop reaches the API only from the
// page's own origin with that token: another origin, no origin, no token
// and a wrong token are each refused with 403 and change nothing.
func TestStateChangesNeedOriginAndToken(t *testing.T) {
	h, f, srv := newUI(t, false)
	code, page := do(t, "GET", srv.URL+"/", nil)
	m := regexp.MustCompile(`name="banger-token" content="([0-9a-f]{64})"`).FindStringSubmatch(page)
	if code != 200 || m == nil || m[1] != h.Token() {
		t.Fatalf("GET / = %d, token in page %v, want 200 and %s", code, m, h.Token())
	}
	self := srv.URL // http://127.0.0.1:PORT
	stop := srv.URL + "/api/v1/vms/web1/stop"
	for _, tc := range []struct {
		name string
		hdr  map[string]string
		want string
	}{
		{"other origin", map[string]string{"Origin": "http://evil.example", TokenHeader: h.Token()}, "cross-origin request refused"},
		{"other port", map[string]string{"Origin": "http://127.0.0.1:1", TokenHeader: h.Token()}, "cross-origin request refused"},
		{"no origin", map[string]string{TokenHeader: h.Token()}, "cross-origin request refused"},
		{"no token", map[string]string{"Origin": self}, "missing or stale"},
		{"wrong token", map[string]string{"Origin": self, TokenHeader: strings.Repeat("0", 64)}, "missing or stale"},
		{"rebinding host", map[string]string{"Host": "evil.example", "Origin": "http://evil.example", TokenHeader: h.Token()}, "not a loopback address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := do(t, "POST", stop, tc.hdr)
			if code != http.StatusForbidden || !strings.Contains(body, tc.want) {
				t.Errorf("POST = %d %s, want 403 with %q", code, body, tc.want)
			}
		})
	}
	if got := f.seen(); len(got) != 0 {
		t.Fatalf("refused requests reached the API: %v", got)
	}
	code, body := do(t, "POST", stop, map[string]string{"Origin": self, TokenHeader: h.Token()})
	if code != 200 {
		t.Fatalf("same-origin POST with token = %d %s, want 200", code, body)
	}
	if got := f.seen(); len(got) != 1 || got[0] != "POST /v1/vms/web1/stop" {
		t.Fatalf("API saw %v, want one POST /v1/vms/web1/stop", got)
	}
}

// A DNS-rebinding page names its own host: it cannot even read the page
// (and so the token). With web_allow_remote any host is served, with a
// warning on the page.
func TestHostCheck(t *testing.T) {
	_, _, srv := newUI(t, false)
	if code, _ := do(t, "GET", srv.URL+"/", map[string]string{"Host": "evil.example:7777"}); code != http.StatusForbidden {
		t.Errorf("GET / with Host evil.example = %d, want 403", code)
	}
	if code, _ := do(t, "GET", srv.URL+"/", map[string]string{"Host": "localhost:7777"}); code != 200 {
		t.Errorf("GET / with Host localhost = %d, want 200", code)
	}
	_, _, remote := newUI(t, true)
	code, page := do(t, "GET", remote.URL+"/", map[string]string{"Host": "devbox.lan:7777"})
	if code != 200 || !strings.Contains(page, `id="remote-warning"`) {
		t.Errorf("remote GET / = %d, warning shown %v; want 200 and the warning", code, strings.Contains(page, "remote-warning"))
	}
}

// Only the endpoints the pages use are mounted: file transfer, exec, ssh
// details and shutdown are not, even with origin and token.
func TestOnlyPageEndpointsMounted(t *testing.T) {
	h, f, srv := newUI(t, false)
	hdr := map[string]string{"Origin": srv.URL, TokenHeader: h.Token()}
	for _, tc := range []struct{ method, path string }{
		{"GET", "/api/v1/vms/web1/files?path=/root/.claude/.credentials.json"},
		{"PUT", "/api/v1/vms/web1/files"},
		{"POST", "/api/v1/vms/web1/exec"},
		{"GET", "/api/v1/vms/web1/ssh"},
		{"POST", "/api/v1/shutdown"},
		{"POST", "/api/v1/images/pull"},
	} {
		code, body := do(t, tc.method, srv.URL+tc.path, hdr)
		if code != http.StatusNotFound || !strings.Contains(body, "not available from the web UI") {
			t.Errorf("%s %s = %d %s, want 404", tc.method, tc.path, code, body)
		}
	}
	if got := f.seen(); len(got) != 0 {
		t.Fatalf("API saw %v, want nothing", got)
	}
	if code, _ := do(t, "GET", srv.URL+"/api/v1/vms", nil); code != 200 {
		t.Errorf("GET /api/v1/vms = %d, want 200", code)
	}
	if code, _ := do(t, "GET", srv.URL+"/assets/vendor/xterm/xterm.mjs", nil); code != 200 {
		t.Errorf("GET xterm.mjs = %d, want 200", code)
	}
}

// The terminal WebSocket bridges to the session's Unix socket both ways
// and, when the session ends, says how; from another origin or without
// the token it is refused.
func TestTerminalBridgesSessionSocket(t *testing.T) {
	h, f, srv := newUI(t, false)
	sock := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f.session = api.Session{VM: "web1", Name: "sh", State: api.SessionRunning, Socket: sock}
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		buf := make([]byte, 64)
		n, _ := c.Read(buf)
		got <- string(buf[:n])
		c.Write([]byte("hi-from-guest"))
		code := 3
		f.mu.Lock()
		f.session = api.Session{VM: "web1", Name: "sh", State: api.SessionExited, ExitCode: &code}
		f.mu.Unlock()
		c.Close() // the session ended
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	wsURL := "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws/vms/web1/sessions/sh"
	for _, tc := range []struct {
		name, origin, token string
	}{{"other origin", "http://evil.example", h.Token()}, {"no token", srv.URL, ""}} {
		_, resp, err := websocket.Dial(ctx, wsURL+"?token="+tc.token, &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {tc.origin}}})
		if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s: dial err %v, want 403", tc.name, err)
		}
	}
	c, _, err := websocket.Dial(ctx, wsURL+"?token="+h.Token(), &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {srv.URL}}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if err := c.Write(ctx, websocket.MessageBinary, []byte("echo hi\r")); err != nil {
		t.Fatal(err)
	}
	if s := <-got; s != "echo hi\r" {
		t.Errorf("session got %q", s)
	}
	typ, b, err := c.Read(ctx)
	if err != nil || typ != websocket.MessageBinary || string(b) != "hi-from-guest" {
		t.Fatalf("read %v %q %v, want the session's output", typ, b, err)
	}
	typ, b, err = c.Read(ctx)
	var end End
	if err != nil || typ != websocket.MessageText || json.Unmarshal(b, &end) != nil {
		t.Fatalf("read %v %q %v, want the end message", typ, b, err)
	}
	if end.State != api.SessionExited || end.ExitCode == nil || *end.ExitCode != 3 {
		t.Errorf("end = %+v, want exited with code 3", end)
	}
}

// Attaching to a session that has ended, or of a VM that does not exist,
// gets one end message saying so, and the socket closes.
func TestTerminalNotAttachable(t *testing.T) {
	h, f, srv := newUI(t, false)
	code := 0
	f.session = api.Session{VM: "web1", Name: "sh", State: api.SessionExited, ExitCode: &code}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tc := range []struct{ vm, state, err string }{
		{"web1", api.SessionExited, ""},
		{"nope", "", `vm "nope": not found`},
	} {
		url := "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws/vms/" + tc.vm + "/sessions/sh?token=" + h.Token()
		c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {srv.URL}}})
		if err != nil {
			t.Fatal(err)
		}
		typ, b, err := c.Read(ctx)
		var end End
		if err != nil || typ != websocket.MessageText || json.Unmarshal(b, &end) != nil {
			t.Fatalf("%s: read %v %q %v, want an end message", tc.vm, typ, b, err)
		}
		if end.State != tc.state || end.Error != tc.err {
			t.Errorf("%s: end = %+v, want state %q error %q", tc.vm, end, tc.state, tc.err)
		}
		if _, _, err := c.Read(ctx); websocket.CloseStatus(err) != websocket.StatusNormalClosure {
			t.Errorf("%s: after the end message: %v, want a normal close", tc.vm, err)
		}
	}
}
