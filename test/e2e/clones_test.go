package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestTenClones: ten VMs made from one snapshot share its memory. The sum
// of the proportional set sizes (PSS: a page mapped by n processes counts
// 1/n in each) of their guest RAM must be far below ten times what the
// source guest held, and the snapshot's memory file must be unchanged
// after they ran. The whole processes' PSS is printed beside it.
func TestTenClones(t *testing.T) {
	e := bootEnv(t)
	e.ok("vm", "create", "--image", "fixture", "--name", "src")
	srcPID := e.vmmPID("src")
	srcRSS := rollup(t, srcPID)["Rss"]
	srcGuest := guestRAM(t, srcPID)
	e.ok("vm", "snapshot", "src", "--name", "s10")
	var sn struct {
		Dir string `json:"dir"`
	}
	if err := json.Unmarshal([]byte(e.ok("snapshot", "inspect", "s10", "--json")), &sn); err != nil {
		t.Fatal(err)
	}
	mem := sn.Dir + "/memory"
	sum := fileSum(t, mem)
	var st syscall.Stat_t
	if err := syscall.Stat(mem, &st); err != nil {
		t.Fatal(err)
	}
	memUsedKiB := st.Blocks * 512 / 1024 // the file is sparse: what the guest touched
	e.ok("vm", "delete", "--force", "src")

	const n = 10
	start := time.Now()
	var pids []int
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("k%d", i)
		e.ok("vm", "create", "--from-snapshot", "s10", "--name", name)
		pids = append(pids, e.vmmPID(name))
	}
	t.Logf("%d vm create --from-snapshot in a row: %v", n, time.Since(start).Round(time.Millisecond))
	// Each clone does a little work of its own, then the numbers are read.
	for i := 0; i < n; i++ {
		e.ok("vm", "exec", fmt.Sprintf("k%d", i), "--", "true")
	}
	var pss, rss, anon int64
	var guest smapsSum
	for _, pid := range pids {
		r := rollup(t, pid)
		pss, rss, anon = pss+r["Pss"], rss+r["Rss"], anon+r["Anonymous"]
		g := guestRAM(t, pid)
		guest.rss, guest.pss, guest.anon = guest.rss+g.rss, guest.pss+g.pss, guest.anon+g.anon
	}
	t.Logf("one guest before the snapshot: qemu RSS %d MiB; the snapshot's memory file holds %d MiB (of its full size)", srcRSS>>10, memUsedKiB>>10)
	t.Logf("%d clones: PSS %d MiB in all (%d MiB each), RSS %d MiB in all, private (anonymous) %d MiB in all",
		n, pss>>10, pss/n>>10, rss>>10, anon>>10)
	t.Logf("PSS of %d clones / (%d x one guest's RSS) = %.2f", n, n, float64(pss)/float64(n*srcRSS))
	// The guest's RAM alone (the memory file's mapping), apart from
	// QEMU's own memory (heap, and under TCG its translation cache).
	t.Logf("guest RAM: the source's guest held %d MiB; %d clones' guest RAM: PSS %d MiB in all (%d MiB each), of which copied on write %d MiB in all; PSS / (%d x the source's) = %.2f",
		srcGuest.rss>>10, n, guest.pss>>10, guest.pss/n>>10, guest.anon>>10, n, float64(guest.pss)/float64(n*srcGuest.rss))
	fmt.Printf("ten clones: PSS %d MiB in all against %d x %d MiB for one guest (%.2f); guest RAM PSS %d MiB against %d x %d MiB (%.2f), %d MiB copied on write\n",
		pss>>10, n, srcRSS>>10, float64(pss)/float64(n*srcRSS), guest.pss>>10, n, srcGuest.rss>>10, float64(guest.pss)/float64(n*srcGuest.rss), guest.anon>>10)
	// The check is on guest RAM: the rest of each QEMU (heap, and under
	// TCG the translation cache, which grows with what its guest runs)
	// is its own whatever the sharing; on a loaded machine it took the
	// whole-process ratio from 0.30 to 0.53.
	if guest.pss*2 > n*srcGuest.rss {
		t.Errorf("%d clones' guest RAM takes %d MiB PSS, not far below %d x %d MiB: they do not share the snapshot's memory", n, guest.pss>>10, n, srcGuest.rss>>10)
	}
	if got := fileSum(t, mem); got != sum {
		t.Errorf("the snapshot's memory file changed while %d clones ran from it", n)
	}
	for i := 0; i < n; i++ {
		e.ok("vm", "delete", "--force", fmt.Sprintf("k%d", i))
	}
	e.ok("snapshot", "delete", "s10")
}

// vmmPID returns the pid of the VMM process of VM name.
func (e *env) vmmPID(name string) int {
	e.t.Helper()
	var v struct {
		PID int `json:"pid"`
	}
	if err := json.Unmarshal([]byte(e.ok("vm", "inspect", name)), &v); err != nil {
		e.t.Fatal(err)
	}
	if v.PID != 0 {
		return v.PID
	}
	e.t.Fatalf("vm inspect %s names no vmm pid", name)
	return 0
}

// smapsSum is the Rss, Pss and Anonymous (KiB) of some mappings.
type smapsSum struct{ rss, pss, anon int64 }

// guestRAM sums /proc/PID/smaps over the mappings of guest RAM: the
// files named "memory" (a VM's memory backend file, or a snapshot's).
// Anonymous there is the pages a private mapping copied on write.
func guestRAM(t *testing.T, pid int) smapsSum {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		t.Fatal(err)
	}
	var s smapsSum
	in := false
	for _, line := range strings.Split(string(b), "\n") {
		fs := strings.Fields(line)
		switch {
		case len(fs) >= 5 && strings.Contains(fs[0], "-") && !strings.HasSuffix(fs[0], ":"):
			in = len(fs) >= 6 && strings.HasSuffix(fs[5], "/memory")
		case in && len(fs) == 3 && fs[2] == "kB":
			v, _ := strconv.ParseInt(fs[1], 10, 64)
			switch fs[0] {
			case "Rss:":
				s.rss += v
			case "Pss:":
				s.pss += v
			case "Anonymous:":
				s.anon += v
			}
		}
	}
	if s.rss == 0 {
		t.Fatalf("no guest RAM mapping (a file named memory) in /proc/%d/smaps", pid)
	}
	return s
}

// rollup reads /proc/PID/smaps_rollup: field name to KiB.
func rollup(t *testing.T, pid int) map[string]int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]int64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) == 3 && fs[2] == "kB" {
			if v, err := strconv.ParseInt(fs[1], 10, 64); err == nil {
				out[strings.TrimSuffix(fs[0], ":")] = v
			}
		}
	}
	return out
}
