package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A running systemd VM under QEMU: pause stops its clock-driven work and
// resume goes on; a snapshot keeps a file written and a process started
// before it, and not a file written after, in a VM created from it; two
// forks run beside the source with their own address, MAC, host key and
// machine-id, each reached over ssh with its key pinned; the snapshot's
// memory file is unchanged by the clones that ran from it; a snapshot a VM
// builds on cannot be deleted.
func TestSnapshotAndFork(t *testing.T) {
	e := bootEnv(t)
	e.ok("vm", "create", "--image", "fixture", "--name", "src")
	// A counter the guest's clock drives, and a file.
	e.ok("vm", "exec", "src", "--", "sh", "-c",
		"nohup sh -c 'i=0; while :; do i=$((i+1)); echo $i > /run/count; sleep 0.2; done' >/dev/null 2>&1 & echo $! > /root/counter.pid")
	e.ok("vm", "exec", "src", "--", "sh", "-c", "echo before > /root/before.txt; sync")
	count := func(vm string) int {
		n, _ := strconv.Atoi(strings.TrimSpace(e.ok("vm", "exec", vm, "--", "cat", "/run/count")))
		return n
	}
	pollUntil(t, 30*time.Second, "the counter counts", func() bool { return count("src") > 2 })

	// Pause: the counter stops (read over the agent it cannot, so read
	// after resume what it reached while paused).
	c0 := count("src")
	e.ok("vm", "pause", "src")
	if s := e.inspect("src").State; s != "paused" {
		t.Errorf("state after vm pause: %q, want paused", s)
	}
	time.Sleep(2 * time.Second)
	e.ok("vm", "resume", "src")
	c1 := count("src")
	if c1-c0 > 4 { // 2 s paused would be ~10 ticks
		t.Errorf("the counter went from %d to %d across a 2 s pause", c0, c1)
	}
	pollUntil(t, 10*time.Second, "the counter counts after resume", func() bool { return count("src") > c1+2 })

	start := time.Now()
	e.ok("vm", "snapshot", "src", "--name", "s1")
	t.Logf("vm snapshot of a running 1 GiB VM: %v", time.Since(start))
	e.ok("vm", "exec", "src", "--", "sh", "-c", "echo after > /root/after.txt; sync")

	var sn struct {
		Dir    string `json:"dir"`
		Memory bool   `json:"memory"`
		VMM    string `json:"vmm"`
		Ver    string `json:"vmm_version"`
	}
	if err := json.Unmarshal([]byte(e.ok("snapshot", "inspect", "s1", "--json")), &sn); err != nil {
		t.Fatal(err)
	}
	if !sn.Memory || sn.VMM != "qemu" || sn.Ver == "" {
		t.Errorf("snapshot inspect: %+v", sn)
	}
	mem := filepath.Join(sn.Dir, "memory")
	sumBefore := fileSum(t, mem)

	start = time.Now()
	e.ok("vm", "create", "--from-snapshot", "s1", "--name", "c1")
	t.Logf("vm create --from-snapshot: %v", time.Since(start))
	got := e.ok("vm", "exec", "c1", "--", "sh", "-c",
		"cat /root/before.txt; test -e /root/after.txt && echo after-present || echo after-absent; kill -0 $(cat /root/counter.pid) && echo counter-alive")
	if got != "before\nafter-absent\ncounter-alive\n" {
		t.Errorf("in the vm made from the snapshot:\n%s", got)
	}
	n := count("c1")
	pollUntil(t, 10*time.Second, "the restored counter counts on", func() bool { return count("c1") > n })

	start = time.Now()
	e.ok("vm", "fork", "src", "--name", "f1")
	t.Logf("vm fork of a running VM: %v", time.Since(start))
	e.ok("vm", "fork", "src", "--name", "f2")

	type ident struct{ ip, mac, hostkey, machineID, hostname string }
	idents := map[string]ident{}
	for _, vm := range []string{"src", "f1", "f2"} {
		v := e.inspect(vm)
		out := strings.Split(strings.TrimSpace(e.ok("vm", "exec", vm, "--", "sh", "-c",
			"cat /sys/class/net/eth0/address /etc/machine-id; hostname; cut -d' ' -f2 /etc/ssh/ssh_host_ed25519_key.pub")), "\n")
		if len(out) != 4 {
			t.Fatalf("identity of %s: %q", vm, out)
		}
		idents[vm] = ident{ip: v.IP, mac: out[0], machineID: out[1], hostname: out[2], hostkey: out[3]}
		if out[2] != vm {
			t.Errorf("hostname of %s: %q", vm, out[2])
		}
		// ssh, with the host key banger pinned for this VM.
		if h := strings.TrimSpace(e.ok("vm", "ssh", vm, "--", "hostname")); h != vm {
			t.Errorf("vm ssh %s -- hostname: %q", vm, h)
		}
	}
	seen := map[string]string{}
	for vm, id := range idents {
		for what, val := range map[string]string{"ip": id.ip, "mac": id.mac, "host key": id.hostkey, "machine-id": id.machineID} {
			k := what + "=" + val
			if other, dup := seen[k]; dup {
				t.Errorf("%s and %s share %s %s", vm, other, what, val)
			}
			seen[k] = vm
		}
	}
	// The source is unharmed: its counter counts and its file is there.
	n = count("src")
	pollUntil(t, 10*time.Second, "the source counts on", func() bool { return count("src") > n })
	mustContain(t, "source files", e.ok("vm", "exec", "src", "--", "cat", "/root/before.txt", "/root/after.txt"), "before", "after")

	// The clones ran from the snapshot's memory without writing it.
	if sum := fileSum(t, mem); sum != sumBefore {
		t.Errorf("the snapshot's memory file changed while clones ran from it")
	}
	// A snapshot a VM builds on is not deleted.
	mustContain(t, "delete of a used snapshot", e.fails("snapshot", "delete", "s1"), "c1")
	for _, vm := range []string{"c1", "f1", "f2", "src"} {
		e.ok("vm", "delete", "--force", vm)
	}
	if n := len(e.procs("qemu-system-x86")); n != 0 {
		t.Errorf("%d qemu processes after deleting every vm", n)
	}
}

func fileSum(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}
