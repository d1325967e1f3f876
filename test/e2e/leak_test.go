package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// listedVM is a row of `vm list --json`.
type listedVM struct {
	ID, Name, State, Tap string
	PID                  int
}

func (e *env) vms() []listedVM {
	e.t.Helper()
	var vms []listedVM
	if err := json.Unmarshal([]byte(e.ok("vm", "list", "--json")), &vms); err != nil {
		e.t.Fatal(err)
	}
	return vms
}

// nsTap is a tap device found in the env's namespace by iproute2, not by
// asking banger.
type nsTap struct {
	Name, Alias string
}

func (e *env) nsTaps() []nsTap {
	e.t.Helper()
	out, err := exec.Command("ip", "-n", e.ns, "-j", "-d", "link", "show").Output()
	if err != nil {
		e.t.Fatalf("ip link show: %v", err)
	}
	var links []struct {
		Ifname   string `json:"ifname"`
		Ifalias  string `json:"ifalias"`
		Linkinfo struct {
			InfoKind string `json:"info_kind"`
		} `json:"linkinfo"`
	}
	if err := json.Unmarshal(out, &links); err != nil {
		e.t.Fatalf("ip -j link show: %v\n%s", err, out)
	}
	var taps []nsTap
	for _, l := range links {
		if l.Linkinfo.InfoKind == "tun" {
			taps = append(taps, nsTap{l.Ifname, l.Ifalias})
		}
	}
	return taps
}

// settle waits until no VM is creating or starting (a restarted daemon
// reconciles them) and returns the VMs.
func (e *env) settle() []listedVM {
	e.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		vms := e.vms()
		busy := ""
		for _, v := range vms {
			if v.State == "creating" || v.State == "starting" {
				busy = v.Name + " is " + v.State
			}
		}
		if busy == "" {
			return vms
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("after 90 s %s", busy)
		}
		time.Sleep(time.Second)
	}
}

// checkNoLeaks fails the test when a host resource has no owner among the
// VMs banger lists: a tap (found by iproute2) that is neither a pool spare
// nor marked for a listed VM, more spares than tap_pool_size, a QEMU
// process that is not a running VM's, a state/vms/* directory or a lease
// of a VM that is gone.
func checkNoLeaks(t testing.TB, e *env, poolSize int) {
	t.Helper()
	vms := e.settle()
	byID, pids := map[string]listedVM{}, map[int]bool{}
	names := map[string]bool{}
	for _, v := range vms {
		byID[v.ID], names[v.Name] = v, true
		if v.State == "running" {
			if v.PID == 0 {
				t.Errorf("vm %s runs without a pid: %+v", v.Name, v)
			}
			pids[v.PID] = true
		}
	}
	spares := 0
	for _, tp := range e.nsTaps() {
		switch id, isVM := strings.CutPrefix(tp.Alias, "banger:vm:"); {
		case tp.Alias == "banger:pool":
			spares++
		case isVM && byID[id].ID != "":
		default:
			t.Errorf("tap %s (alias %q) belongs to no listed vm: leaked", tp.Name, tp.Alias)
		}
	}
	if spares > poolSize {
		t.Errorf("%d spare taps, tap_pool_size is %d: leaked", spares, poolSize)
	}
	for _, p := range e.procs("qemu-system-x86") {
		if !pids[p] {
			t.Errorf("qemu pid %d is no running vm's: leaked (vms %+v)", p, vms)
		}
	}
	if len(e.procs("qemu-system-x86")) != len(pids) {
		t.Errorf("%d qemu processes for %d running vms", len(e.procs("qemu-system-x86")), len(pids))
	}
	dirs, _ := os.ReadDir(filepath.Join(e.home, "state", "vms"))
	for _, d := range dirs {
		if byID[d.Name()].ID == "" {
			t.Errorf("state/vms/%s belongs to no listed vm: leaked", d.Name())
		}
	}
	for _, l := range e.network().Leases {
		if !names[l.VM] && byID[l.VM].ID == "" {
			t.Errorf("lease %s is held by %q, which is no listed vm: leaked", l.IP, l.VM)
		}
	}
}

// errRecorder is a testing.TB whose Errorf only records.
type errRecorder struct {
	testing.TB
	errs []string
}

func (r *errRecorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

// checkNoLeaks can fail: a tap nobody owns, a vm directory and a QEMU-less
// world with an orphan each show up (no VM is booted here).
func TestLeakCheckCatches(t *testing.T) {
	e := newEnv(t)
	e.ok("vm", "list")
	run(t, "ip", "-n", e.ns, "tuntap", "add", "dev", "bgtap0badc0de", "mode", "tap")
	run(t, "ip", "-n", e.ns, "tuntap", "add", "dev", "bgtap1badc0de", "mode", "tap")
	run(t, "ip", "-n", e.ns, "link", "set", "bgtap1badc0de", "alias", "banger:vm:0123456789abcdef")
	os.MkdirAll(filepath.Join(e.home, "state", "vms", "0123456789abcdef"), 0o755)
	r := &errRecorder{TB: t}
	checkNoLeaks(r, e, 2)
	got := strings.Join(r.errs, "\n")
	for _, want := range []string{"tap bgtap0badc0de", "tap bgtap1badc0de", "state/vms/0123456789abcdef"} {
		if !strings.Contains(got, want) {
			t.Errorf("checkNoLeaks missed %q; it reported:\n%s", want, got)
		}
	}
}

// waitFor polls cond every 20 ms until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s never happened", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// noEscape fails the test when a file named name exists where an entry
// that climbed out of a staging tree could have put it: under the state
// and cache dirs (anywhere but inside an image's ext4, which is one file)
// or in tmp/ or at the top of any directory above them, up to /.
func (e *env) noEscape(name string) {
	e.t.Helper()
	filepath.Walk(e.home, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Name() == name {
			e.t.Errorf("a layer entry escaped its root and wrote %s", p)
		}
		return nil
	})
	for d := filepath.Dir(e.home); ; d = filepath.Dir(d) {
		for _, p := range []string{filepath.Join(d, name), filepath.Join(d, "tmp", name)} {
			if _, err := os.Lstat(p); err == nil {
				os.Remove(p)
				e.t.Errorf("a layer entry escaped its root and wrote %s", p)
			}
		}
		if d == "/" {
			return
		}
	}
}
