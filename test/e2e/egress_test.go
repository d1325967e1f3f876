package e2e

import (
	"banger/internal/prereq"
	"bufio"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestHelperDNSServer is not a test: the egress test runs the test binary
// with BANGER_E2E_DNS set inside its "outside" namespace, where it serves
// the zone in the file BANGER_E2E_ZONE ("name address ttl" lines, read at
// every question, so the test can change answers) until killed.
func TestHelperDNSServer(t *testing.T) {
	addr, zone := os.Getenv("BANGER_E2E_DNS"), os.Getenv("BANGER_E2E_ZONE")
	if addr == "" {
		prereq.ByDesign(t, "helper process only")
	}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Rcode = dns.RcodeNameError
		q := r.Question[0]
		f, err := os.Open(zone)
		if err == nil {
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				fl := strings.Fields(sc.Text())
				if len(fl) != 3 || !strings.EqualFold(dns.Fqdn(fl[0]), q.Name) {
					continue
				}
				m.Rcode = dns.RcodeSuccess
				if q.Qtype == dns.TypeA {
					rr, _ := dns.NewRR(fmt.Sprintf("%s %s IN A %s", q.Name, fl[2], fl[1]))
					m.Answer = append(m.Answer, rr)
				}
			}
			f.Close()
		}
		w.WriteMsg(m)
	})
	go (&dns.Server{Addr: addr, Net: "tcp", Handler: h}).ListenAndServe()
	(&dns.Server{Addr: addr, Net: "udp", Handler: h}).ListenAndServe()
}

// egressWorld is an "outside" namespace behind e's, reached by a veth at
// 198.51.100.0/24: HTTP servers on 198.51.100.10:8080 (on the link),
// 192.0.2.10:8080 and 169.254.169.254:80 (both routed through it), and a
// DNS server on 198.51.100.10:53 serving zone.
type egressWorld struct {
	out  string
	zone string
}

const (
	nearURL = "http://198.51.100.10:8080/"
	farURL  = "http://192.0.2.10:8080/"
	metaURL = "http://169.254.169.254/"
)

func newEgressWorld(t *testing.T, e *env) *egressWorld {
	t.Helper()
	w := &egressWorld{out: e.ns + "-eg", zone: filepath.Join(t.TempDir(), "zone")}
	w.setZone(t, "a.test 192.0.2.10 2", "b.test 198.51.100.10 60")
	run(t, "ip", "netns", "add", w.out)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", w.out).Run() })
	run(t, "ip", "-n", e.ns, "link", "add", "veth-eg", "type", "veth", "peer", "name", "eth0", "netns", w.out)
	run(t, "ip", "-n", e.ns, "addr", "add", "198.51.100.1/24", "dev", "veth-eg")
	run(t, "ip", "-n", e.ns, "link", "set", "veth-eg", "up")
	run(t, "ip", "-n", e.ns, "route", "add", "192.0.2.10/32", "via", "198.51.100.10")
	run(t, "ip", "-n", e.ns, "route", "add", "169.254.169.254/32", "via", "198.51.100.10")
	run(t, "ip", "-n", w.out, "addr", "add", "198.51.100.10/24", "dev", "eth0")
	run(t, "ip", "-n", w.out, "addr", "add", "192.0.2.10/32", "dev", "lo")
	run(t, "ip", "-n", w.out, "addr", "add", "169.254.169.254/32", "dev", "lo")
	run(t, "ip", "-n", w.out, "link", "set", "eth0", "up")
	run(t, "ip", "-n", w.out, "link", "set", "lo", "up")
	for _, addr := range []string{"198.51.100.10:8080", "192.0.2.10:8080", "169.254.169.254:80"} {
		helper(t, w.out, "TestHelperHTTPServer", "BANGER_E2E_HTTP="+addr)
	}
	helper(t, w.out, "TestHelperDNSServer", "BANGER_E2E_DNS=198.51.100.10:53", "BANGER_E2E_ZONE="+w.zone)
	return w
}

// helper runs the test binary's helper test name inside namespace ns
// until the test ends.
func helper(t *testing.T, ns, name string, env ...string) {
	t.Helper()
	c := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run=^"+name+"$")
	c.Env = append(os.Environ(), env...)
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Process.Kill(); c.Wait() })
}

func (w *egressWorld) setZone(t *testing.T, lines ...string) {
	t.Helper()
	if err := os.WriteFile(w.zone, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// icmpEchos is how many echo requests namespace ns has received.
func icmpEchos(t *testing.T, ns string) int {
	t.Helper()
	return echosIn(t, run(t, "ip", "netns", "exec", ns, "cat", "/proc/net/snmp"))
}

func echosIn(t *testing.T, snmp string) int {
	t.Helper()
	var names []string
	for line := range strings.Lines(snmp) {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "Icmp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		if i := slices.Index(names, "InEchos"); i > 0 && i < len(f) {
			n, _ := strconv.Atoi(f[i])
			return n
		}
	}
	t.Fatalf("no Icmp InEchos in:\n%s", snmp)
	return 0
}

type egressVM struct {
	ID, Name, State, IP, MAC, Tap string
	PID                           int
	Net                           struct {
		Mode     string
		Allow    []string
		Isolate  bool
		Resolved map[string][]string
	}
}

func (e *env) egressVM(name string) egressVM {
	e.t.Helper()
	var v egressVM
	if err := json.Unmarshal([]byte(e.ok("vm", "inspect", name)), &v); err != nil {
		e.t.Fatal(err)
	}
	return v
}

// gets reports whether vm fetched url (one try, 3 s).
func (e *env) gets(vm, url string) bool {
	e.t.Helper()
	return e.banger("vm", "exec", vm, "--", "wget", "-q", "-O", "/dev/null", "-T", "3", "-t", "1", url).code == 0
}

func (e *env) mustGet(t *testing.T, what, vm, url string, want bool) {
	t.Helper()
	if got := e.gets(vm, url); got != want {
		t.Fatalf("%s: vm %s fetching %s: reached = %v, want %v\n%s", what, vm, url, got, want,
			e.ok("vm", "net", vm))
	}
}

// resolves reports whether name resolves in vm, through its resolv.conf.
func (e *env) resolves(vm, name string) bool {
	e.t.Helper()
	return e.banger("vm", "exec", vm, "--", "getent", "hosts", name).code == 0
}

func (e *env) pings(vm, ip string) bool {
	e.t.Helper()
	return e.banger("vm", "exec", vm, "--", "ping", "-c", "1", "-W", "2", ip).code == 0
}

// TestEgressPolicies boots three VMs and runs every egress policy,
// isolation, anti-spoofing and the policy's life (changes while running
// or stopped, a daemon restart, delete) against real traffic.
func TestEgressPolicies(t *testing.T) {
	e := bootEnv(t)
	w := newEgressWorld(t, e)
	os.MkdirAll(e.home+"/config", 0o755)
	os.WriteFile(e.home+"/config/config.toml", []byte("default_dns = [\"198.51.100.10\"]\n"), 0o644)
	e.ok("daemon", "restart")

	t.Log("bad policies are refused before anything is made")
	stderr := e.fails("vm", "create", "--image", "fixture", "--name", "bad", "--net", "allow=nope.test")
	mustContain(t, "unresolvable host", stderr, "nope.test", "does not resolve", "198.51.100.10:53")
	stderr = e.fails("vm", "create", "--image", "fixture", "--name", "bad", "--net", "allow=")
	mustContain(t, "empty allow", stderr, "at least one destination", "allow=DEST[,DEST...]", "HOST name, an IP or a CIDR")
	stderr = e.fails("vm", "run", "--image", "fixture", "--name", "bad", "--net", "allow=a.test:99999", "--", "true")
	mustContain(t, "bad port", stderr, "port \"99999\"", "nat (the default")
	if r := e.banger("vm", "inspect", "bad"); r.code == 0 {
		t.Fatalf("a refused create left vm bad: %s", r.stdout)
	}
	if n := e.network(); len(n.Leases) != 0 {
		t.Fatalf("a refused create left leases: %+v", n.Leases)
	}

	e.ok("vm", "create", "--image", "fixture", "--name", "ea", "--memory", "512M", "--cpus", "1")
	e.ok("vm", "run", "--image", "fixture", "--name", "eb", "--memory", "512M", "--cpus", "1", "--net", "allow=a.test", "--", "true")
	e.ok("vm", "create", "--no-start", "--image", "fixture", "--name", "ec", "--memory", "512M", "--cpus", "1")
	mustContain(t, "vm net on a stopped vm", e.ok("vm", "net", "ec", "--net", "none"), "ec: --net none", "next start")
	if v := e.egressVM("ec"); v.Net.Mode != "none" || v.State != "created" {
		t.Fatalf("ec after vm net while stopped: %+v", v)
	}
	e.ok("vm", "start", "ec")
	ea, eb, ec := e.egressVM("ea"), e.egressVM("eb"), e.egressVM("ec")

	t.Log("nat (the default) reaches both outside servers")
	e.mustGet(t, "nat", "ea", nearURL, true)
	e.mustGet(t, "nat", "ea", farURL, true)

	t.Log("allow=a.test reaches a.test's address only, and only a.test resolves")
	if eb.Net.Mode != "allow" || !slices.Equal(eb.Net.Allow, []string{"a.test"}) ||
		!slices.Equal(eb.Net.Resolved["a.test"], []string{"192.0.2.10"}) {
		t.Fatalf("vm inspect eb net: %+v", eb.Net)
	}
	e.mustGet(t, "allow by name", "eb", "http://a.test:8080/", true)
	e.mustGet(t, "allow", "eb", nearURL, false)
	if !e.resolves("eb", "a.test") || e.resolves("eb", "b.test") {
		t.Fatal("eb's DNS: want a.test to resolve and b.test not")
	}

	t.Log("none (set while stopped) reaches neither, and resolves nothing")
	e.mustGet(t, "none", "ec", nearURL, false)
	e.mustGet(t, "none", "ec", farURL, false)
	if e.resolves("ec", "a.test") {
		t.Fatal("a.test resolves in ec (--net none)")
	}

	t.Log("host services on the bridge address and the metadata address are out of reach; DNS works")
	helper(t, e.ns, "TestHelperHTTPServer", "BANGER_E2E_HTTP=172.16.0.1:8081")
	waitFor(t, 10*time.Second, "the host's server on 172.16.0.1:8081 answers the host", func() bool {
		return exec.Command("ip", "netns", "exec", e.ns, "wget", "-q", "-O", "/dev/null", "-T", "1", "-t", "1", "http://172.16.0.1:8081/").Run() == nil
	})
	run(t, "ip", "netns", "exec", e.ns, "wget", "-q", "-O", "/dev/null", "-T", "3", "-t", "1", metaURL)
	e.mustGet(t, "host service", "ea", "http://172.16.0.1:8081/", false)
	e.mustGet(t, "metadata", "ea", metaURL, false)
	if !e.resolves("ea", "b.test") {
		t.Fatal("b.test does not resolve in ea (nat)")
	}
	if !e.pings("ea", "172.16.0.1") {
		t.Fatal("ea cannot ping its gateway")
	}

	t.Log("a running vm's policy changes without a restart")
	for _, step := range []struct {
		net        string
		near, far  bool
		resolvesOK bool
	}{
		{"allow=198.51.100.10", true, false, false},
		{"allow=192.0.2.0/24:8080", false, true, false},
		{"none", false, false, false},
		{"nat", true, true, true},
	} {
		start := time.Now()
		e.ok("vm", "net", "ea", "--net", step.net)
		t.Logf("vm net ea --net %s took %s", step.net, time.Since(start).Round(time.Millisecond))
		e.mustGet(t, "ea --net "+step.net, "ea", nearURL, step.near)
		e.mustGet(t, "ea --net "+step.net, "ea", farURL, step.far)
		if got := e.resolves("ea", "b.test"); got != step.resolvesOK {
			t.Fatalf("ea --net %s: b.test resolves = %v, want %v", step.net, got, step.resolvesOK)
		}
	}
	if v := e.egressVM("ea"); v.PID != ea.PID || v.State != "running" {
		t.Fatalf("ea restarted across policy changes: pid %d -> %d, %s", ea.PID, v.PID, v.State)
	}

	t.Log("vm-to-vm traffic is allowed, --isolate cuts it, none implies it")
	if !e.pings("ea", eb.IP) || !e.pings("eb", ea.IP) {
		t.Fatal("ea and eb cannot ping each other by default")
	}
	e.ok("vm", "net", "eb", "--isolate")
	if e.pings("ea", eb.IP) || e.pings("eb", ea.IP) {
		t.Fatal("ea and eb ping each other though eb is isolated")
	}
	if !e.egressVM("eb").Net.Isolate {
		t.Fatal("vm inspect eb does not say isolated")
	}
	e.ok("vm", "net", "eb", "--no-isolate")
	if !e.pings("ea", eb.IP) {
		t.Fatal("ea cannot ping eb after --no-isolate")
	}
	if e.pings("ec", ea.IP) || e.pings("ea", ec.IP) {
		t.Fatal("ec (--net none) and ea ping each other")
	}

	t.Log("allowed names follow their DNS answers as the TTL expires")
	w.setZone(t, "a.test 198.51.100.10 2", "b.test 198.51.100.10 60")
	waitFor(t, 30*time.Second, "eb's rules follow a.test to 198.51.100.10", func() bool {
		return slices.Contains(e.egressVM("eb").Net.Resolved["a.test"], "198.51.100.10")
	})
	e.mustGet(t, "allow after a.test moved", "eb", nearURL, true)

	checkSpoofing(t, e, w, ea, eb, ec)
	checkRestartRebuilds(t, e)
	checkDeleteRemovesRules(t, e, ec)
}

// checkSpoofing: ea sends with ec's address, then with another MAC; what
// it sends reaches neither eb nor the outside (counted where it would
// arrive: answers to a spoofed source would go to its owner).
func checkSpoofing(t *testing.T, e *env, w *egressWorld, ea, eb, ec egressVM) {
	t.Helper()
	t.Log("a guest cannot send from another lease's address or another MAC")
	ebEchos := func() int { return echosIn(t, e.ok("vm", "exec", "eb", "--", "cat", "/proc/net/snmp")) }
	shell := func(script string) string {
		return e.banger("vm", "exec", "ea", "--", "sh", "-c", script).stdout
	}
	pingBoth := "ping -c 3 -i 0.3 -W 1 198.51.100.10 >/dev/null; ping -c 3 -i 0.3 -W 1 " + eb.IP + " >/dev/null; true"
	reset := fmt.Sprintf("ip link set eth0 down; ip link set eth0 address %s; ip addr flush dev eth0; ip link set eth0 up; "+
		"ip addr add %s/24 dev eth0; ip route replace default via 172.16.0.1", ea.MAC, ea.IP)

	// Control: ea as itself is counted on both sides.
	out0, eb0 := icmpEchos(t, w.out), ebEchos()
	shell(pingBoth)
	if out1, eb1 := icmpEchos(t, w.out), ebEchos(); out1-out0 < 3 || eb1-eb0 < 3 {
		t.Fatalf("control pings from ea as itself: outside got %d, eb got %d; want 3 each", out1-out0, eb1-eb0)
	}

	// ea takes ec's address.
	out0, eb0 = icmpEchos(t, w.out), ebEchos()
	shell(fmt.Sprintf("ip addr flush dev eth0; ip addr add %s/24 dev eth0; ip route replace default via 172.16.0.1; %s", ec.IP, pingBoth))
	out1, eb1 := icmpEchos(t, w.out), ebEchos()
	shell(reset)
	if out1 != out0 || eb1 != eb0 {
		t.Fatalf("ea sending as ec (%s): outside got %d echo requests, eb %d; want none", ec.IP, out1-out0, eb1-eb0)
	}

	// ea takes another MAC, with its neighbours given so no ARP is needed.
	var n netInfo2
	json.Unmarshal([]byte(e.ok("network", "inspect", "--json")), &n)
	out0, eb0 = icmpEchos(t, w.out), ebEchos()
	shell(fmt.Sprintf("ip link set eth0 down; ip link set eth0 address 02:00:00:00:00:99; ip link set eth0 up; "+
		"ip addr replace %s/24 dev eth0; ip route replace default via 172.16.0.1; "+
		"ip neigh replace 172.16.0.1 lladdr %s dev eth0; ip neigh replace %s lladdr %s dev eth0; %s",
		ea.IP, n.Bridge.MAC, eb.IP, eb.MAC, pingBoth))
	out1, eb1 = icmpEchos(t, w.out), ebEchos()
	shell(reset)
	if out1 != out0 || eb1 != eb0 {
		t.Fatalf("ea sending with another mac: outside got %d echo requests, eb %d; want none", out1-out0, eb1-eb0)
	}
	waitFor(t, 20*time.Second, "ea reaches the outside as itself again", func() bool { return e.pings("ea", "198.51.100.10") })
}

type netInfo2 struct {
	Bridge struct{ MAC string }
	Rules  []string `json:"nat_rules"`
}

func (e *env) rules() []string {
	e.t.Helper()
	var n netInfo2
	if err := json.Unmarshal([]byte(e.ok("network", "inspect", "--json")), &n); err != nil {
		e.t.Fatal(err)
	}
	return n.Rules
}

// checkRestartRebuilds deletes banger's tables while the daemon is down:
// the next daemon rebuilds every rule from its state.
func checkRestartRebuilds(t *testing.T, e *env) {
	t.Helper()
	t.Log("a daemon restart rebuilds the rules from the state")
	// eb's rules for a.test hold whatever a.test resolved to lately;
	// a new daemon knows only its current answer.
	eb := e.egressVM("eb")
	learned := func(r string) bool { return strings.HasPrefix(r, "vm-"+eb.ID+": vm "+eb.ID+": ip daddr ") }
	before := slices.DeleteFunc(e.rules(), learned)
	slices.Sort(before)
	e.ok("daemon", "stop")
	run(t, "ip", "netns", "exec", e.ns, "nft", "delete", "table", "ip", "banger")
	run(t, "ip", "netns", "exec", e.ns, "nft", "delete", "table", "bridge", "banger")
	e.ok("daemon", "start")
	all := e.rules()
	if !slices.Contains(all, "vm-"+eb.ID+": vm "+eb.ID+": ip daddr 198.51.100.10 accept") {
		t.Fatalf("eb's rules after a restart do not allow a.test's address 198.51.100.10:\n%s", strings.Join(all, "\n"))
	}
	after := slices.DeleteFunc(all, learned)
	slices.Sort(after)
	if !slices.Equal(before, after) {
		t.Fatalf("rules after a restart differ:\nbefore:\n%s\nafter:\n%s", strings.Join(before, "\n"), strings.Join(after, "\n"))
	}
	e.mustGet(t, "ec (none) after a restart", "ec", farURL, false)
	if !e.resolves("eb", "a.test") {
		t.Fatal("a.test does not resolve in eb after a restart")
	}
}

// checkDeleteRemovesRules deletes ec and counts: exactly its rules go.
func checkDeleteRemovesRules(t *testing.T, e *env, ec egressVM) {
	t.Helper()
	t.Log("deleting a vm removes every rule it had")
	before := e.rules()
	own := 0
	for _, r := range before {
		if strings.Contains(r, "vm "+ec.ID+":") {
			own++
		}
	}
	if own == 0 {
		t.Fatalf("no rule of ec (%s) among:\n%s", ec.ID, strings.Join(before, "\n"))
	}
	e.ok("vm", "delete", "ec")
	after := e.rules()
	if len(after) != len(before)-own {
		t.Fatalf("%d rules before deleting ec (%d its own), %d after:\n%s", len(before), own, len(after), strings.Join(after, "\n"))
	}
	ruleset := run(t, "ip", "netns", "exec", e.ns, "nft", "list", "ruleset")
	ip := netip.MustParseAddr(ec.IP).String()
	for _, s := range []string{ec.ID, ec.Tap, ip + " ", ip + "\n"} {
		if strings.Contains(ruleset, s) {
			t.Fatalf("the ruleset still mentions %q of deleted vm ec:\n%s", s, ruleset)
		}
	}
	t.Logf("%d rules before deleting ec, %d after", len(before), len(after))
}
