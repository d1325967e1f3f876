package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/internal/prereq"
)

// soakCounts are the resources a soak must give back.
type soakCounts struct {
	fds, goroutines, rssMiB, taps, leases, rules, procs, diskMiB int
}

func (e *env) soakCounts(t *testing.T) soakCounts {
	t.Helper()
	var st struct {
		PID        int `json:"pid"`
		Goroutines int `json:"goroutines"`
	}
	if err := json.Unmarshal([]byte(e.ok("daemon", "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	var c soakCounts
	c.goroutines = st.Goroutines
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", st.PID))
	c.fds = len(ents)
	kb, _ := strconv.Atoi(strings.Fields(procStatus(t, st.PID)["VmRSS"] + " 0")[0])
	c.rssMiB = kb >> 10
	n := e.network()
	c.taps, c.leases, c.rules = len(n.Taps), len(n.Leases), len(n.Rules)
	c.procs = len(e.pids())
	out, _ := exec.Command("du", "-s", "--block-size=1M", filepath.Join(e.home, "state")).Output()
	c.diskMiB, _ = strconv.Atoi(strings.Fields(string(out) + " 0")[0])
	return c
}

// soakWhy is what a failed cycle's VMs say of themselves: how each
// booted (and why cold) and the end of its console log.
func (e *env) soakWhy(vms ...string) string {
	var b strings.Builder
	for _, vm := range vms {
		r := e.banger("vm", "inspect", vm)
		if r.code != 0 {
			continue
		}
		var v struct {
			State string          `json:"state"`
			Boot  json.RawMessage `json:"boot"`
		}
		json.Unmarshal([]byte(r.stdout), &v)
		lines := strings.Split(strings.TrimSpace(e.banger("vm", "logs", vm).stdout), "\n")
		lines = lines[max(0, len(lines)-25):]
		fmt.Fprintf(&b, "\n  vm %s: state %s, boot %s\n  console, last %d lines:\n    %s", vm, v.State, v.Boot, len(lines), strings.Join(lines, "\n    "))
	}
	return b.String()
}

// The lifecycle soak (BANGER_LIFE_SOAK=CYCLESxPARALLEL; make soak runs
// 100x8, make test a shorter one): each cycle creates a VM (a warm start
// after the first), runs a command in it, forks it (odd cycles) or
// snapshots it (even ones), runs a command in the fork, and deletes
// everything it made; PARALLEL cycles run at once. Afterwards the
// daemon's open fds, goroutines and RSS, the taps, leases, NAT rules,
// processes and used disk are back to what they were after one warm-up
// cycle. (Issue 16, "Soak".)
func TestLifeSoak(t *testing.T) {
	spec := os.Getenv("BANGER_LIFE_SOAK")
	if spec == "" {
		prereq.ByDesign(t, "set BANGER_LIFE_SOAK=CYCLESxPARALLEL (make soak: 100x8) to run it")
	}
	var cycles, par int
	if _, err := fmt.Sscanf(spec, "%dx%d", &cycles, &par); err != nil || cycles < 1 || par < 1 {
		t.Fatalf("BANGER_LIFE_SOAK=%q: want CYCLESxPARALLEL, for example 100x8", spec)
	}
	e := bootEnv(t)
	e.warm = true
	cycle := func(i int) error {
		vm, other := fmt.Sprintf("c%d", i), fmt.Sprintf("f%d", i)
		steps := [][]string{
			{"vm", "create", "--image", "fixture", "--name", vm, "--memory", "512M", "--ready-timeout", "300"},
			{"vm", "exec", vm, "--", "echo", "ok"},
		}
		if i%2 == 1 {
			steps = append(steps,
				[]string{"vm", "fork", vm, "--name", other, "--ready-timeout", "300"},
				[]string{"vm", "exec", other, "--", "echo", "ok"},
				[]string{"vm", "delete", "--force", other},
				[]string{"vm", "delete", "--force", vm},
				[]string{"snapshot", "delete", other + "-origin"})
		} else {
			steps = append(steps,
				[]string{"vm", "snapshot", vm, "--name", "s" + other},
				[]string{"vm", "exec", vm, "--", "echo", "ok"},
				[]string{"vm", "delete", "--force", vm},
				[]string{"snapshot", "delete", "s" + other})
		}
		for _, s := range steps {
			r := e.banger(s...)
			if r.code != 0 {
				return fmt.Errorf("cycle %d: banger %s: exit %d: %s%s", i, strings.Join(s, " "), r.code, strings.TrimSpace(r.stderr), e.soakWhy(vm, other))
			}
			if s[1] == "exec" && r.stdout != "ok\n" {
				return fmt.Errorf("cycle %d: banger %s said %q", i, strings.Join(s, " "), r.stdout)
			}
		}
		return nil
	}
	// One cycle first: the warm snapshot of the image is made, the tap
	// pool filled, the daemon's caches warm. That is the baseline.
	if err := cycle(0); err != nil {
		t.Fatal(err)
	}
	e.settle()
	before := e.soakCounts(t)

	start := time.Now()
	var mu sync.Mutex
	var errs []error
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	for i := 1; i <= cycles; i++ {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := cycle(i); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	for _, err := range errs {
		t.Error(err)
	}

	// Give goroutines of closed connections a moment to end.
	e.settle()
	var after soakCounts
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(time.Second) {
		after = e.soakCounts(t)
		if after.goroutines <= before.goroutines+5 && after.fds <= before.fds+2 || time.Now().After(deadline) {
			break
		}
	}
	t.Logf("soak: %d cycles, %d at once, in %s (%d failed)\n"+
		"  %-12s %8s %8s\n  %-12s %8d %8d\n  %-12s %8d %8d\n  %-12s %8d %8d\n  %-12s %8d %8d\n  %-12s %8d %8d\n  %-12s %8d %8d\n  %-12s %8d %8d\n  %-12s %8d %8d",
		cycles, par, took.Round(time.Second), len(errs), "", "before", "after",
		"open fds", before.fds, after.fds, "goroutines", before.goroutines, after.goroutines,
		"RSS MiB", before.rssMiB, after.rssMiB, "taps", before.taps, after.taps,
		"leases", before.leases, after.leases, "NAT rules", before.rules, after.rules,
		"processes", before.procs, after.procs, "state MiB", before.diskMiB, after.diskMiB)
	for _, c := range []struct {
		what          string
		before, after int
		slack         int
	}{
		{"bangerd's open fds", before.fds, after.fds, 2},
		{"bangerd's goroutines", before.goroutines, after.goroutines, 5},
		{"bangerd's RSS (MiB)", before.rssMiB, after.rssMiB, 64},
		{"taps", before.taps, after.taps, 0},
		{"leases", before.leases, after.leases, 0},
		{"NAT rules", before.rules, after.rules, 0},
		{"processes in the namespace", before.procs, after.procs, 0},
		{"the state's used disk (MiB)", before.diskMiB, after.diskMiB, 32},
	} {
		if c.after > c.before+c.slack {
			t.Errorf("%s: %d before the soak, %d after", c.what, c.before, c.after)
		}
	}
	checkNoLeaks(t, e, 2)
	checkStateAgrees(t, e)
}
