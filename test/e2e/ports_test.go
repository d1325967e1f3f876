package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// -p 127.0.0.1:18080:8080 reaches an HTTP server in the guest from the
// host (the test's namespace, where bangerd runs); a UDP forward echoes;
// forwards added to the running VM are all or none; a forward survives a
// SIGKILL of the daemon and a restart of the VM; vm port rm ends it; a
// host port in use and malformed specs are refused with nothing made;
// deleting the VM leaves no listener.
func TestPortForward(t *testing.T) {
	e := bootEnv(t)
	sink := portsinkBin(t)
	e.ok("daemon", "start")

	// Malformed specs: the accepted forms, and no VM.
	for _, spec := range []string{"8080", "127.0.0.1:70000:80", "localhost:8080:80", "8080:80/sctp"} {
		stderr := e.fails("vm", "run", "--image", "fixture", "--name", "bad", "-p", spec, "--", "true")
		mustContain(t, "malformed -p "+spec, stderr, "[HOST_ADDR:]HOST_PORT:GUEST_PORT[/tcp|/udp]", "127.0.0.1:8080:80/tcp")
	}
	stderr := e.fails("vm", "create", "--image", "fixture", "--name", "bad", "-p", "8080:80", "-p", "127.0.0.1:8080:81")
	mustContain(t, "the same host port twice", stderr, "127.0.0.1:8080/tcp is given twice")

	// A host port in use: named, and no VM (no row, no disk, no VMM).
	busy := nsListen(t, e.ns, "127.0.0.1:18081")
	stderr = e.fails("vm", "run", "--image", "fixture", "--name", "busy", "-p", "127.0.0.1:18081:8080", "--", "true")
	mustContain(t, "port in use", stderr, "127.0.0.1:18081/tcp is in use on the host")
	stderr = e.fails("vm", "create", "--image", "fixture", "--name", "busy", "-p", "18081:8080")
	mustContain(t, "port in use", stderr, "127.0.0.1:18081/tcp is in use on the host")
	if out := strings.TrimSpace(e.ok("vm", "list", "--json")); out != "[]" {
		t.Fatalf("vms after refused creates: %s", out)
	}
	if dirs, _ := os.ReadDir(filepath.Join(e.home, "state", "vms")); len(dirs) != 0 {
		t.Fatalf("refused creates left %d vm directories", len(dirs))
	}
	if n := len(e.procs("qemu-system-x86")); n != 0 {
		t.Fatalf("refused creates left %d qemu processes", n)
	}

	e.ok("vm", "run", "--image", "fixture", "--name", "web", "-p", "127.0.0.1:18080:8080",
		"-p", "15353:5353/udp", "-p", "19000:9000", "--", "true")
	startPortsink(t, e, "web", sink)
	want := "hello from the guest"
	if got := httpThrough(t, e.ns, "127.0.0.1:18080", time.Minute); !strings.Contains(got, want) {
		t.Fatalf("through the forward: %q", got)
	}
	if got := udpThrough(t, e.ns, "127.0.0.1:15353", "ping"); got != "echo:ping" {
		t.Fatalf("through the udp forward: %q", got)
	}
	// 64 MiB both ways of the forward and straight to the guest: the same
	// count comes back (the half close passed through).
	ip := e.inspect("web").IP
	for _, addr := range []string{"127.0.0.1:19000", net.JoinHostPort(ip, "9000")} {
		if n, _ := sinkSend(t, e.ns, addr, 64<<20); n != 64<<20 {
			t.Fatalf("sink through %s counted %d bytes, want %d", addr, n, 64<<20)
		}
	}
	var v struct {
		Ports []struct {
			Proto     string `json:"proto"`
			HostAddr  string `json:"host_addr"`
			HostPort  int    `json:"host_port"`
			GuestPort int    `json:"guest_port"`
			Active    bool   `json:"active"`
		} `json:"ports"`
	}
	json.Unmarshal([]byte(e.ok("vm", "inspect", "web")), &v)
	if len(v.Ports) != 3 || !v.Ports[0].Active || v.Ports[0].HostAddr != "127.0.0.1" {
		t.Fatalf("vm inspect ports: %+v", v.Ports)
	}
	mustContain(t, "vm port list", e.ok("vm", "port", "list", "web"), "127.0.0.1:18080", "8080", "listening", "udp")

	// Added to the running VM: all or none.
	stderr = e.fails("vm", "port", "add", "web", "18082:8080", "127.0.0.1:18081:8080")
	mustContain(t, "add with one port in use", stderr, "127.0.0.1:18081/tcp is in use on the host")
	if nsConnects(e.ns, "127.0.0.1:18082") {
		t.Fatal("a refused add left 18082 listening")
	}
	busy.Close()
	e.ok("vm", "port", "add", "web", "18082:8080", "127.0.0.1:18081:8080")
	if got := httpThrough(t, e.ns, "127.0.0.1:18081", 10*time.Second); !strings.Contains(got, want) {
		t.Fatalf("through a forward added to the running vm: %q", got)
	}
	e.ok("vm", "port", "rm", "web", "18082", "127.0.0.1:18081:8080")
	if nsConnects(e.ns, "127.0.0.1:18081") || nsConnects(e.ns, "127.0.0.1:18082") {
		t.Fatal("vm port rm left a forward listening")
	}
	stderr = e.fails("vm", "port", "rm", "web", "18080", "18099")
	mustContain(t, "rm of one unknown", stderr, "127.0.0.1:18099/tcp", "banger vm port list web")

	// Another VM may not take the port.
	e.ok("vm", "create", "--no-start", "--image", "fixture", "--name", "other")
	stderr = e.fails("vm", "port", "add", "other", "0.0.0.0:18080:80")
	mustContain(t, "port of another vm", stderr, `already forwarded to vm "web"`)
	e.ok("vm", "delete", "other")

	// The forwards are carried in the kernel: a DNAT rule per forward.
	if n := countForwardRules(e.rules(), v2id(t, e, "web")); n != 3 {
		t.Fatalf("%d kernel forward rules of web, want 3 (two tcp, one udp): %v", n, e.rules())
	}

	// The daemon killed: its listeners die with it, but the kernel goes on
	// carrying the forwards (as the VM runs on); the next daemon, started
	// by the next call, adopts the VM, listens again and keeps the rules.
	pid := e.daemonPID()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, 10*time.Second, "the killed daemon is gone", func() bool { return !slices.Contains(e.procs("bangerd"), pid) })
	if got := httpThrough(t, e.ns, "127.0.0.1:18080", 10*time.Second); !strings.Contains(got, want) {
		t.Fatalf("while the daemon is dead: %q", got)
	}
	e.ok("vm", "list")
	if got := httpThrough(t, e.ns, "127.0.0.1:18080", 10*time.Second); !strings.Contains(got, want) {
		t.Fatalf("after the daemon was killed and restarted: %q", got)
	}
	if n := countForwardRules(e.rules(), v2id(t, e, "web")); n != 3 {
		t.Fatalf("%d kernel forward rules of web after the daemon restart, want 3: %v", n, e.rules())
	}

	// The VM restarted: stopped, nothing listens; started, it does again.
	e.ok("vm", "stop", "web")
	if nsConnects(e.ns, "127.0.0.1:18080") {
		t.Fatal("a stopped vm's forward still listens")
	}
	mustContain(t, "ports of a stopped vm", e.ok("vm", "port", "list", "web"), "127.0.0.1:18080", "not listening")
	e.ok("vm", "start", "web")
	startPortsink(t, e, "web", "")
	if got := httpThrough(t, e.ns, "127.0.0.1:18080", time.Minute); !strings.Contains(got, want) {
		t.Fatalf("after the vm restarted: %q", got)
	}

	e.ok("vm", "port", "rm", "web", "127.0.0.1:18080")
	if nsConnects(e.ns, "127.0.0.1:18080") {
		t.Fatal("vm port rm left the forward listening")
	}
	// Deleting the VM ends its two forwards left.
	forwarded := []string{"udp 127.0.0.1:15353", "tcp 127.0.0.1:19000"}
	if n := countSockets(bangerdSockets(t, e), forwarded); n != 2 {
		t.Fatalf("bangerd listens on %d of %v before the delete, want 2: %v", n, forwarded, bangerdSockets(t, e))
	}
	webID := v2id(t, e, "web")
	if n := countForwardRules(e.rules(), webID); n != 2 {
		t.Fatalf("%d kernel forward rules of web before the delete, want 2: %v", n, e.rules())
	}
	e.ok("vm", "delete", "web")
	if n := countSockets(bangerdSockets(t, e), forwarded); n != 0 {
		t.Fatalf("bangerd still listens on %d of %v after the vm was deleted: %v", n, forwarded, bangerdSockets(t, e))
	}
	if n := countForwardRules(e.rules(), webID); n != 0 {
		t.Fatalf("%d kernel forward rules of web after the delete, want 0: %v", n, e.rules())
	}
}

// countForwardRules counts the kernel forward rules of VM id.
func countForwardRules(rules []string, id string) int {
	n := 0
	for _, r := range rules {
		if strings.HasPrefix(r, "forwards: fwd "+id+": ") {
			n++
		}
	}
	return n
}

func v2id(t *testing.T, e *env, name string) string {
	t.Helper()
	id := e.inspect(name).ID
	if id == "" {
		t.Fatalf("vm %s has no id", name)
	}
	return id
}

func countSockets(socks, want []string) int {
	n := 0
	for _, s := range socks {
		for _, w := range want {
			if s == w {
				n++
			}
		}
	}
	return n
}

// portsinkBin builds the guest's servers (testdata/portsink), static.
func portsinkBin(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "portsink")
	build := exec.Command("go", "build", "-o", bin, "./test/e2e/testdata/portsink")
	build.Dir = repoRoot()
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building portsink: %v\n%s", err, out)
	}
	return bin
}

// startPortsink copies bin (unless "": it is there from an earlier boot)
// into vm and runs it in a session: HTTP on 8080, the sink on 9000, UDP
// echo on 5353.
func startPortsink(t testing.TB, e *env, vm, bin string) {
	t.Helper()
	if bin != "" {
		e.ok("vm", "cp", bin, vm+":/root/portsink")
	}
	e.ok("vm", "session", "start", vm, "--name", "portsink", "--stdin-mode", "null", "--",
		"/root/portsink", "-http", "8080", "-sink", "9000", "-udp", "5353")
}

// inNetns runs f on a thread moved into network namespace ns; sockets
// it makes stay in ns wherever they are used later. The thread returns
// to this process's namespace before it is let go: a thread left in the
// test's namespace would put the test among the pids teardown kills.
func inNetns(ns string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		target, err := os.Open("/var/run/netns/" + ns)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		defer func() {
			if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
				runtime.UnlockOSThread()
			}
		}()
		errc <- f()
	}()
	return <-errc
}

// nsDial dials addr from inside ns.
func nsDial(ctx context.Context, ns, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := inNetns(ns, func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// nsConnects says whether a TCP connection to addr in ns is accepted.
func nsConnects(ns, addr string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := nsDial(ctx, ns, "tcp", addr)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// nsListen holds addr in ns (a host port in use) until closed.
func nsListen(t testing.TB, ns, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	if err := inNetns(ns, func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// httpThrough GETs http://addr/ from inside ns until it answers 200 or
// within passes (the guest's server may still be starting).
func httpThrough(t testing.TB, ns, addr string, within time.Duration) string {
	t.Helper()
	cl := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) { return nsDial(ctx, ns, network, a) },
	}}
	deadline := time.Now().Add(within)
	var last error
	for time.Now().Before(deadline) {
		resp, err := cl.Get("http://" + addr + "/")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return string(b)
			}
			err = fmt.Errorf("status %s: %s", resp.Status, b)
		}
		last = err
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("GET http://%s/ in %s: nothing within %s (last: %v)", addr, ns, within, last)
	return ""
}

// udpThrough sends msg to addr from inside ns and returns the answer.
func udpThrough(t testing.TB, ns, addr, msg string) string {
	t.Helper()
	c, err := nsDial(context.Background(), ns, "udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 1500)
	// A datagram may be lost: ask a few times.
	for range 10 {
		c.Write([]byte(msg))
		c.SetReadDeadline(time.Now().Add(time.Second))
		if n, err := c.Read(buf); err == nil {
			return string(buf[:n])
		}
	}
	t.Fatalf("no udp answer from %s in %s", addr, ns)
	return ""
}

// sinkSend sends size zero bytes to the portsink sink at addr from inside
// ns, half-closes, and returns the count the sink answered and how long
// it took from the dial to the answer.
func sinkSend(t testing.TB, ns, addr string, size int64) (int64, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	begin := time.Now()
	c, err := nsDial(ctx, ns, "tcp", addr)
	if err != nil {
		t.Fatalf("dialing the sink at %s: %v", addr, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	buf := make([]byte, 1<<20)
	for left := size; left > 0; {
		n := min(left, int64(len(buf)))
		if _, err := c.Write(buf[:n]); err != nil {
			t.Fatalf("sending to the sink at %s: %v", addr, err)
		}
		left -= n
	}
	c.(*net.TCPConn).CloseWrite()
	answer, err := io.ReadAll(c)
	took := time.Since(begin)
	if err != nil {
		t.Fatalf("reading the sink's count from %s: %v", addr, err)
	}
	n, err := strconv.ParseInt(string(bytes.TrimSpace(answer)), 10, 64)
	if err != nil {
		t.Fatalf("the sink at %s answered %q", addr, answer)
	}
	return n, took
}

// bangerdSockets lists the TCP and UDP sockets bangerd listens on in the
// env's namespace ("tcp 127.0.0.1:7777").
func bangerdSockets(t testing.TB, e *env) []string {
	t.Helper()
	pid := e.daemonPID()
	out := run(t, "ip", "netns", "exec", e.ns, "ss", "-Hlntup")
	var socks []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 7 && strings.Contains(line, fmt.Sprintf("pid=%d,", pid)) {
			socks = append(socks, f[0]+" "+f[4])
		}
	}
	sort.Strings(socks)
	return socks
}

// pollUntil waits for cond, failing the test after d.
func pollUntil(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s never happened", d, what)
		}
	}
}
