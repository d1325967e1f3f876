package client

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"banger/internal/api"
	"banger/internal/config"
)

// fakeDaemon serves h on a Unix socket, as bangerd does, and returns a
// client of it.
func fakeDaemon(t *testing.T, h http.Handler) *Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "d.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return New(sock)
}

func writeAPIError(w http.ResponseWriter, status int, e *api.Error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(api.ErrorBody{Error: e})
}

// A host file goes to the guest with its mode; what is not a regular
// file is refused before anything is sent.
func TestCopyToVM(t *testing.T) {
	var got struct{ path, mode, body string }
	c := fakeDaemon(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got.path, got.mode, got.body = r.URL.Query().Get("path"), r.URL.Query().Get("mode"), string(b)
	}))
	src := filepath.Join(t.TempDir(), "run.sh")
	os.WriteFile(src, []byte("echo hi\n"), 0o750)
	os.Chmod(src, 0o750)
	if err := c.CopyToVM(t.Context(), "dev", "/root/run.sh", src); err != nil {
		t.Fatal(err)
	}
	if got.path != "/root/run.sh" || got.mode != "750" || got.body != "echo hi\n" {
		t.Errorf("daemon got %+v", got)
	}
	if err := c.CopyToVM(t.Context(), "dev", "/root/x", t.TempDir()); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("copying a directory: %v", err)
	}
}

// A guest file replaces the host path, never writing through a symlink
// planted there; a failed download leaves nothing behind.
func TestCopyFromVM(t *testing.T) {
	fail := false
	c := fakeDaemon(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fail {
			writeAPIError(w, http.StatusNotFound, &api.Error{Code: api.NotFound, Message: "no such file"})
			return
		}
		io.WriteString(w, "from the guest\n")
	}))
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	os.WriteFile(victim, []byte("keep\n"), 0o644)
	dst := filepath.Join(dir, "out")
	os.Symlink(victim, dst)
	if err := c.CopyFromVM(t.Context(), "dev", "/etc/os-release", dst); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep\n" {
		t.Errorf("written through the symlink: victim is %q", b)
	}
	if st, err := os.Lstat(dst); err != nil || !st.Mode().IsRegular() {
		t.Fatalf("%s is not a regular file: %v %v", dst, st, err)
	}
	if b, _ := os.ReadFile(dst); string(b) != "from the guest\n" {
		t.Errorf("%s = %q", dst, b)
	}
	fail = true
	if err := c.CopyFromVM(t.Context(), "dev", "/nope", filepath.Join(dir, "new")); err == nil {
		t.Fatal("copying a missing guest file succeeded")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Errorf("leftovers in %s: %v", dir, ents)
	}
}

// recorder is a Display that keeps what it was shown.
type recorder struct {
	mu     sync.Mutex
	phases []string
	dones  int
}

func (r *recorder) Event(ev api.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.phases = append(r.phases, ev.Phase)
}

func (r *recorder) Done() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dones++
}

// vm run pulls the default image when it is missing, says so, and shows
// the pull's progress as one step; a present image is not pulled.
func TestEnsureImage(t *testing.T) {
	pulls := 0
	c := fakeDaemon(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/images/have":
			json.NewEncoder(w).Encode(api.Image{Name: "have"})
		case "/v1/images/pull":
			pulls++
			enc := json.NewEncoder(w)
			enc.Encode(api.Event{Type: api.EventProgress, Phase: "fetching"})
			res, _ := json.Marshal(api.Image{Name: "deb"})
			enc.Encode(api.Event{Type: api.EventResult, Result: res})
		default:
			writeAPIError(w, http.StatusNotFound, &api.Error{Code: api.NotFound, Message: "no image"})
		}
	}))
	var stderr strings.Builder
	d := &recorder{}
	o := RunOptions{Stdio: Stdio{Err: &stderr}, Display: d}
	if err := c.ensureImage(t.Context(), "have", o); err != nil || pulls != 0 {
		t.Fatalf("present image: err %v, %d pulls", err, pulls)
	}
	if err := c.ensureImage(t.Context(), "deb", o); err != nil {
		t.Fatal(err)
	}
	if pulls != 1 || !strings.Contains(stderr.String(), "image deb is not here yet; pulling it") {
		t.Errorf("%d pulls, stderr %q", pulls, stderr.String())
	}
	if len(d.phases) != 1 || d.phases[0] != "fetching" || d.dones != 1 {
		t.Errorf("display shown %v, %d steps ended", d.phases, d.dones)
	}
}

// Wrong input to vm run fails before a daemon is started or a key made.
func TestRunChecksInputFirst(t *testing.T) {
	home := t.TempDir()
	d := config.Dirs{State: filepath.Join(home, "state"), Config: filepath.Join(home, "config"), Cache: filepath.Join(home, "cache")}
	notGit := t.TempDir()
	for _, tc := range []struct {
		name string
		o    RunOptions
		want string
	}{
		{"branch without PATH", RunOptions{Branch: "x"}, "need a workspace PATH"},
		{"missing PATH", RunOptions{Path: filepath.Join(home, "no-such-dir")}, "no-such-dir"},
		{"from outside git", RunOptions{Path: notGit, From: "v1"}, "is not one"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.Dirs, tc.o.Config = d, config.Default()
			_, err := Run(t.Context(), tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
	if _, err := os.Stat(d.Config); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed check made %s: %v", d.Config, err)
	}
}

// The user's key is made once, where the config says; known_hosts is
// banger's own.
func TestUserKeys(t *testing.T) {
	d := config.Dirs{Config: t.TempDir()}
	k, err := UserKeys(config.Default(), d)
	if err != nil {
		t.Fatal(err)
	}
	if k.Key != filepath.Join(d.Config, "ssh", "id_ed25519") || k.KnownHosts != filepath.Join(d.Config, "ssh", "known_hosts") {
		t.Errorf("keys = %+v", k)
	}
	before, err := os.ReadFile(k.Key)
	if err != nil {
		t.Fatal(err)
	}
	UserKeys(config.Default(), d)
	if after, _ := os.ReadFile(k.Key); string(after) != string(before) {
		t.Error("a second UserKeys replaced the key")
	}
}

func TestLimitedBuffer(t *testing.T) {
	var b limitedBuffer
	for range 3 {
		if n, err := b.Write([]byte(strings.Repeat("x", 3000))); n != 3000 || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	if len(b.String()) != 4096 {
		t.Errorf("kept %d bytes, want 4096", len(b.String()))
	}
}

func TestShellQuote(t *testing.T) {
	if got := shellQuote("/root/it's here"); got != `'/root/it'\''s here'` {
		t.Errorf("shellQuote = %s", got)
	}
}

// Each typed call asks for the route bangerd serves.
func TestRoutes(t *testing.T) {
	var got []string
	c := fakeDaemon(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Method+" "+r.URL.Path)
		if r.Method == http.MethodPost {
			json.NewEncoder(w).Encode(api.Event{Type: api.EventResult, Result: json.RawMessage("{}")})
			return
		}
		if strings.Count(r.URL.Path, "/") == 2 {
			io.WriteString(w, "[]")
			return
		}
		io.WriteString(w, "{}")
	}))
	ctx := t.Context()
	c.ListVMs(ctx)
	c.VM(ctx, "a b")
	c.CreateVM(ctx, api.CreateVMRequest{}, nil)
	c.StartVM(ctx, "v", api.StartVMRequest{}, nil)
	c.ListImages(ctx)
	c.Image(ctx, "i")
	c.PullImage(ctx, api.PullImageRequest{}, nil)
	c.RegisterImage(ctx, api.RegisterImageRequest{}, nil)
	c.ExportImage(ctx, api.ExportImageRequest{}, nil)
	c.ImportImage(ctx, api.ImportImageRequest{}, nil)
	c.DeleteImage(ctx, "i")
	c.ListKernels(ctx)
	c.Kernel(ctx, "k")
	c.PullKernel(ctx, api.PullKernelRequest{}, nil)
	c.ImportKernel(ctx, api.ImportKernelRequest{}, nil)
	c.DeleteKernel(ctx, "k")
	want := []string{
		"GET /v1/vms", "GET /v1/vms/a b", "POST /v1/vms", "POST /v1/vms/v/start",
		"GET /v1/images", "GET /v1/images/i", "POST /v1/images/pull", "POST /v1/images/register",
		"POST /v1/images/export", "POST /v1/images/import", "DELETE /v1/images/i",
		"GET /v1/kernels", "GET /v1/kernels/k", "POST /v1/kernels/pull", "POST /v1/kernels/import", "DELETE /v1/kernels/k",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("routes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// One VM's ssh target asks bangerd for its address and host key once,
// however often the engine needs them (vm run ./repo: upload, wait,
// session).
func TestGuestSSHAsksOnce(t *testing.T) {
	asked := 0
	c := fakeDaemon(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked++
		json.NewEncoder(w).Encode(api.SSHInfo{IP: "127.0.0.1", Port: 22, User: "root"})
	}))
	keys, err := UserKeys(config.Default(), config.Dirs{Config: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	g := &guestSSH{c: c, vm: "dev", keys: keys}
	for range 3 {
		if info, _, err := g.target(t.Context()); err != nil || info.IP != "127.0.0.1" {
			t.Fatalf("target = %+v, %v", info, err)
		}
	}
	if asked != 1 {
		t.Errorf("asked bangerd %d times, want 1", asked)
	}
}
