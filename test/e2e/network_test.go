package e2e

import (
	"banger/internal/prereq"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestHelperHTTPServer is not a test: the network test runs the test
// binary with BANGER_E2E_HTTP set inside the "outside world" namespace,
// where it serves the caller's address until killed.
func TestHelperHTTPServer(t *testing.T) {
	addr := os.Getenv("BANGER_E2E_HTTP")
	if addr == "" {
		prereq.ByDesign(t, "helper process only")
	}
	http.ListenAndServe(addr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "you are %s\n", r.RemoteAddr)
	}))
}

// outsideWorld adds a namespace reached from e's namespace through a veth,
// at TEST-NET-2 addresses, with an HTTP server on 198.51.100.2:8080.
func outsideWorld(t *testing.T, e *env) {
	t.Helper()
	out := e.ns + "-out"
	run(t, "ip", "netns", "add", out)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", out).Run() })
	run(t, "ip", "-n", e.ns, "link", "add", "veth-out", "type", "veth", "peer", "name", "veth-in", "netns", out)
	run(t, "ip", "-n", e.ns, "addr", "add", "198.51.100.1/24", "dev", "veth-out")
	run(t, "ip", "-n", e.ns, "link", "set", "veth-out", "up")
	run(t, "ip", "-n", out, "addr", "add", "198.51.100.2/24", "dev", "veth-in")
	run(t, "ip", "-n", out, "link", "set", "veth-in", "up")
	run(t, "ip", "-n", out, "link", "set", "lo", "up")
	srv := exec.Command("ip", "netns", "exec", out, os.Args[0], "-test.run=^TestHelperHTTPServer$")
	srv.Env = append(os.Environ(), "BANGER_E2E_HTTP=198.51.100.2:8080")
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
}

type netInfo struct {
	Bridge struct {
		Name   string
		Exists bool
	}
	Taps []struct {
		Name string
		VMID string `json:"vm_id"`
		Pool bool
	}
	Leases []struct{ IP, VM, MAC, Tap string }
	Rules  []string `json:"nat_rules"`
}

func (e *env) network() netInfo {
	e.t.Helper()
	var n netInfo
	if err := json.Unmarshal([]byte(e.ok("network", "inspect", "--json")), &n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// Two VMs get distinct addresses, reach each other and the bridge, and
// reach an outside server through the masquerade. Deleting a VM frees its
// tap and lease. A daemon killed mid-create leaks nothing, and the running
// VM stays reachable.
func TestNetworkTwoVMsNATAndCleanup(t *testing.T) {
	e := bootEnv(t)
	outsideWorld(t, e)
	var wg sync.WaitGroup
	for _, name := range []string{"net1", "net2"} {
		wg.Add(1)
		go func(name string) {
			defer wg.Done()
			e.ok("vm", "create", "--image", "fixture", "--name", name, "--memory", "512M", "--cpus", "1")
		}(name)
	}
	wg.Wait()
	v1, v2 := e.inspect("net1"), e.inspect("net2")
	if v1.IP == "" || v1.IP == v2.IP {
		t.Fatalf("addresses %q and %q, want distinct", v1.IP, v2.IP)
	}
	e.ok("vm", "exec", "net1", "--", "ping", "-c", "1", "-W", "5", "172.16.0.1")
	e.ok("vm", "exec", "net1", "--", "ping", "-c", "1", "-W", "5", v2.IP)
	e.ok("vm", "exec", "net2", "--", "ping", "-c", "1", "-W", "5", v1.IP)
	mustContain(t, "hostname", e.ok("vm", "exec", "net1", "--", "hostname"), "net1")

	got := e.ok("vm", "exec", "net1", "--", "wget", "-qO-", "-T", "10", "http://198.51.100.2:8080/")
	mustContain(t, "outside server's view of the guest", got, "you are 198.51.100.1:")

	n := e.network()
	if !n.Bridge.Exists || len(n.Leases) != 2 || len(n.Rules) == 0 {
		t.Fatalf("network inspect: %+v", n)
	}

	// Delete net2: its tap and lease go.
	tap2 := findTap(n, "net2")
	e.ok("vm", "delete", "net2")
	if err := exec.Command("ip", "-n", e.ns, "link", "show", tap2).Run(); err == nil {
		t.Fatalf("tap %s of deleted vm still exists", tap2)
	}
	if n := e.network(); len(n.Leases) != 1 || n.Leases[0].VM != "net1" {
		t.Fatalf("leases after delete: %+v", n.Leases)
	}

	// Kill the daemon in the middle of a create, at each point where it
	// holds a new host resource: the VM's directory (disk being made), its
	// tap (start), its QEMU (boot). Each time the next call brings up a
	// daemon that reconciles, and nothing may be left without an owner.
	known := map[string]bool{} // ids of the VMs before each create
	newDir := func() bool {
		for _, d := range dirsIn(t, e.home+"/state/vms") {
			if !known[d] {
				return true
			}
		}
		return false
	}
	newTap := func() bool {
		for _, tp := range e.nsTaps() {
			if id, ok := strings.CutPrefix(tp.Alias, "banger:vm:"); ok && !known[id] {
				return true
			}
		}
		return false
	}
	points := []struct {
		name, what string
		reached    func() bool
	}{
		{"doomed-dir", "its vm directory exists", newDir},
		{"doomed-tap", "a tap is marked for it", newTap},
		{"doomed-qemu", "its qemu runs", func() bool { return len(e.procs("qemu-system-x86")) > 1 }},
	}
	for _, pt := range points {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		c := e.cmd(ctx, "vm", "create", "--image", "fixture", "--name", pt.name, "--memory", "512M", "--cpus", "1")
		pid := e.daemonPID()
		clear(known)
		for _, v := range e.vms() {
			known[v.ID] = true
		}
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 90*time.Second, pt.name+": "+pt.what, pt.reached)
		syscall.Kill(pid, syscall.SIGKILL)
		c.Wait()
		cancel()
		t.Logf("killed the daemon when %s", pt.what)
		checkNoLeaks(t, e, 2)
		if v := e.inspect("net1"); v.State != "running" || v.IP != v1.IP {
			t.Fatalf("net1 after the daemon was killed: %+v", v)
		}
		if r := e.banger("vm", "inspect", pt.name); r.code == 0 {
			var v vmInfo
			json.Unmarshal([]byte(r.stdout), &v)
			if v.State == "running" && v.IP == "" {
				t.Fatalf("%s runs without an address: %+v", pt.name, v)
			}
			e.ok("vm", "delete", "--force", pt.name)
		}
		checkNoLeaks(t, e, 2)
	}
	if n := e.network(); len(n.Leases) != 1 {
		t.Fatalf("leases after deleting every doomed vm: %+v", n.Leases)
	}
	e.ok("vm", "exec", "net1", "--", "ping", "-c", "1", "-W", "5", "172.16.0.1")
}

func dirsIn(t *testing.T, dir string) []string {
	ents, _ := os.ReadDir(dir)
	var out []string
	for _, d := range ents {
		out = append(out, d.Name())
	}
	return out
}

func findTap(n netInfo, vm string) string {
	for _, l := range n.Leases {
		if l.VM == vm {
			return l.Tap
		}
	}
	return ""
}

// Eight concurrent creates get eight distinct addresses.
func TestNetworkConcurrentCreates(t *testing.T) {
	e := bootEnv(t)
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if r := e.banger("vm", "create", "--no-start", "--image", "fixture", "--name", fmt.Sprintf("c%d", i)); r.code != 0 {
				errs <- r.stderr
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for msg := range errs {
		t.Errorf("concurrent create failed: %s", msg)
	}
	seen := map[string]bool{}
	for _, l := range e.network().Leases {
		if seen[l.IP] || net.ParseIP(l.IP) == nil {
			t.Fatalf("duplicate or bad address %q", l.IP)
		}
		seen[l.IP] = true
	}
	if len(seen) != 8 {
		t.Fatalf("%d leases, want 8", len(seen))
	}
}

// A bridge name taken by a link that is not banger's is refused with a
// clear error, and nothing changes.
func TestNetworkForeignBridge(t *testing.T) {
	e := bootEnv(t)
	run(t, "ip", "-n", e.ns, "link", "add", "banger0", "type", "veth", "peer", "name", "banger0p")
	e.ok("vm", "create", "--no-start", "--image", "fixture", "--name", "x")
	stderr := e.fails("vm", "start", "x")
	mustContain(t, "foreign bridge", stderr, "banger0", "not banger's", "bridge_name")
	out := run(t, "ip", "-n", e.ns, "-d", "link", "show", "banger0")
	mustContain(t, "foreign link untouched", out, "veth")
}

// A cidr that overlaps a route in the namespace is refused, naming the
// route and suggesting another cidr. An exhausted pool says how many
// addresses are in use and how to widen the cidr.
func TestNetworkOverlapAndExhaustion(t *testing.T) {
	e := bootEnv(t)
	run(t, "ip", "-n", e.ns, "link", "add", "corp0", "type", "veth", "peer", "name", "corp0p")
	run(t, "ip", "-n", e.ns, "link", "set", "corp0", "up")
	run(t, "ip", "-n", e.ns, "link", "set", "corp0p", "up")
	run(t, "ip", "-n", e.ns, "route", "add", "172.16.0.0/16", "dev", "corp0")
	e.ok("vm", "create", "--no-start", "--image", "fixture", "--name", "o1")
	stderr := e.fails("vm", "start", "o1")
	mustContain(t, "overlap error", stderr, "172.16.0.0/16", "corp0", "cidr")
	if err := exec.Command("ip", "-n", e.ns, "link", "show", "banger0").Run(); err == nil {
		t.Fatal("bridge created despite the overlap")
	}
	e.ok("vm", "delete", "o1")
	e.ok("daemon", "stop")

	cfg := e.home + "/config"
	os.MkdirAll(cfg, 0o755)
	os.WriteFile(cfg+"/config.toml", []byte("cidr = \"10.200.0.0/29\"\nbridge_ip = \"10.200.0.1\"\n"), 0o644)
	for i := 0; i < 5; i++ {
		e.ok("vm", "create", "--no-start", "--image", "fixture", "--name", fmt.Sprintf("x%d", i))
	}
	stderr = e.fails("vm", "create", "--no-start", "--image", "fixture", "--name", "x5")
	mustContain(t, "exhaustion error", stderr, "all 5 addresses", "10.200.0.0/29", "wider cidr")
	if r := e.banger("vm", "inspect", "x5"); r.code == 0 {
		t.Fatal("a create that failed for want of an address left a VM")
	}
}

// Changing cidr while a VM runs is refused with an explanation; the
// running VM keeps its network.
func TestNetworkConfigChangeWhileRunning(t *testing.T) {
	e := bootEnv(t)
	e.ok("vm", "create", "--image", "fixture", "--name", "keep", "--memory", "512M", "--cpus", "1")
	e.ok("daemon", "stop")
	os.MkdirAll(e.home+"/config", 0o755)
	os.WriteFile(e.home+"/config/config.toml", []byte("cidr = \"10.201.0.0/24\"\nbridge_ip = \"10.201.0.1\"\n"), 0o644)
	stderr := e.fails("vm", "create", "--no-start", "--image", "fixture", "--name", "new")
	mustContain(t, "config change refused", stderr, "10.201.0.0/24", "keep", "172.16.0.0/24", "banger vm stop keep")
	mustContain(t, "network inspect", e.ok("network", "inspect"), "config not in force")
	e.ok("vm", "exec", "keep", "--", "ping", "-c", "1", "-W", "5", "172.16.0.1")
	// Once the VM is stopped and the daemon restarted, the new cidr is used.
	e.ok("vm", "stop", "keep")
	e.ok("daemon", "restart")
	e.ok("vm", "create", "--no-start", "--image", "fixture", "--name", "new")
	if ip := e.inspect("new").IP; !strings.HasPrefix(ip, "10.201.0.") {
		t.Fatalf("new vm got %q, want an address in 10.201.0.0/24", ip)
	}
	// The stopped VM moves to the new cidr when it starts again.
	e.ok("vm", "start", "keep")
	if ip := e.inspect("keep").IP; !strings.HasPrefix(ip, "10.201.0.") {
		t.Fatalf("restarted vm kept %q, want an address in 10.201.0.0/24", ip)
	}
	e.ok("vm", "exec", "keep", "--", "ping", "-c", "1", "-W", "5", "10.201.0.1")
}
