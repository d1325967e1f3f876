package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type bootInfo struct {
	Mode       string `json:"mode"`
	Snapshot   string `json:"snapshot"`
	Why        string `json:"why"`
	MadeWarm   string `json:"made_warm"`
	MadeWarmMS int64  `json:"made_warm_ms"`
}

func (e *env) boot(name string) bootInfo {
	e.t.Helper()
	var v struct {
		Boot bootInfo `json:"boot"`
	}
	if err := json.Unmarshal([]byte(e.ok("vm", "inspect", name)), &v); err != nil {
		e.t.Fatal(err)
	}
	return v.Boot
}

// guestFacts is what tells two guests apart: hostname, machine-id and
// SSH host key.
const guestFacts = `hostname; cat /etc/machine-id; cat /etc/ssh/ssh_host_ed25519_key.pub | cut -d' ' -f2`

// The first vm run of an image boots cold and leaves a warm snapshot,
// taken before its workspace went in; the second restores it (inspect
// says so), with its own hostname, machine-id and host key and the same
// result; --cold boots cold. Deleting the image removes its warm
// snapshots; image warm makes one ahead of time.
func TestWarmStart(t *testing.T) {
	e := bootEnv(t)
	e.warm = true
	e.ok("daemon", "stop") // the next call starts one with warm starts on
	repo := fixtureRepo(t, t.TempDir(), "fixture-repo")
	run := func(args ...string) (result, time.Duration) {
		start := time.Now()
		r := e.banger(append([]string{"vm", "run", "--image", "fixture"}, args...)...)
		return r, time.Since(start)
	}

	r1, d1 := run("--name", "w1", repo, "--", "sh", "-c", "echo same; "+guestFacts)
	if r1.code != 0 {
		t.Fatalf("first vm run: exit %d\n%s", r1.code, r1.stderr)
	}
	b1 := e.boot("w1")
	t.Logf("first vm run (cold, makes the warm snapshot): %v; boot %+v", d1.Round(time.Millisecond), b1)
	if b1.Mode != "cold" || !strings.Contains(b1.Why, "no warm snapshot of image fixture") || b1.MadeWarm == "" {
		var v struct{ Dir string }
		json.Unmarshal([]byte(e.ok("vm", "inspect", "w1")), &v)
		qlog, _ := os.ReadFile(filepath.Join(v.Dir, "qemu.log"))
		t.Logf("qemu.log of w1:\n%s", qlog)
		t.Fatalf("first run's boot: %+v, want cold, why no warm snapshot, and a warm snapshot made", b1)
	}
	mustContain(t, "snapshot list", e.ok("snapshot", "list"), b1.MadeWarm, "warm")

	r2, d2 := run("--name", "w2", "--", "sh", "-c", "echo same; "+guestFacts+"; test -e /root/fixture-repo && echo has-w1-workspace || true")
	if r2.code != 0 {
		t.Fatalf("second vm run: exit %d\n%s", r2.code, r2.stderr)
	}
	b2 := e.boot("w2")
	t.Logf("second vm run (warm): %v; boot %+v", d2.Round(time.Millisecond), b2)
	if b2.Mode != "warm" || b2.Snapshot != b1.MadeWarm {
		t.Fatalf("second run's boot: %+v, want warm from %s", b2, b1.MadeWarm)
	}
	f1, f2 := strings.Split(strings.TrimSpace(r1.stdout), "\n"), strings.Split(strings.TrimSpace(r2.stdout), "\n")
	if len(f1) != 4 || len(f2) != 4 {
		t.Fatalf("outputs:\n%s\n---\n%s", r1.stdout, r2.stdout)
	}
	if f1[0] != "same" || f2[0] != "same" || f2[1] != "w2" || f1[2] == f2[2] || f1[3] == f2[3] {
		t.Errorf("want the same result with the second guest's own hostname, machine-id and host key:\n%s\n---\n%s", r1.stdout, r2.stdout)
	}

	r3, d3 := run("--name", "w3", "--cold", "--", "sh", "-c", "echo same")
	b3 := e.boot("w3")
	t.Logf("vm run --cold: %v; boot %+v", d3.Round(time.Millisecond), b3)
	if r3.code != 0 || r3.stdout != "same\n" || b3.Mode != "cold" || b3.Why != "--cold" || b3.MadeWarm != "" {
		t.Errorf("--cold: exit %d stdout %q boot %+v", r3.code, r3.stdout, b3)
	}
	fmt.Printf("vm run: cold+warm snapshot %v, warm %v, --cold %v\n", d1.Round(time.Millisecond), d2.Round(time.Millisecond), d3.Round(time.Millisecond))

	// The image goes with its warm snapshots, once no vm uses it.
	mustContain(t, "image delete in use", e.fails("image", "delete", "fixture"), "w1")
	for _, vm := range []string{"w1", "w2", "w3"} {
		e.ok("vm", "delete", "--force", vm)
	}
	e.ok("image", "delete", "fixture")
	if out := strings.TrimSpace(e.ok("snapshot", "list", "--json")); out != "[]" {
		t.Errorf("warm snapshots left after their image was deleted: %s", out)
	}

	// image warm ahead of time: the first run is then warm.
	mustContain(t, "image warm of no image", e.fails("image", "warm", "nope"), "nope")
	e.ok("image", "register", "--name", "fixture", "--rootfs", fixtures(t)+"/rootfs.ext4", "--kernel-ref", "generic-6.1")
	start := time.Now()
	out := e.ok("image", "warm", "fixture")
	t.Logf("image warm: %v: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(out))
	if vms := strings.TrimSpace(e.ok("vm", "list", "--json")); vms != "[]" {
		t.Errorf("image warm left its temporary vm: %s", vms)
	}
	r4, d4 := run("--name", "w4", "--", "true")
	if b := e.boot("w4"); r4.code != 0 || b.Mode != "warm" {
		t.Errorf("vm run after image warm: exit %d, boot %+v", r4.code, b)
	}
	t.Logf("vm run after image warm: %v", d4.Round(time.Millisecond))
}

// vm run --rm -- true from warm start against --cold.
func BenchmarkWarmRun(b *testing.B) {
	e := bootEnv(b)
	e.warm = true
	e.ok("daemon", "stop") // the next call starts one with warm starts on
	e.ok("image", "warm", "fixture")
	var warm, cold time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		warm += timed(func() { e.ok("vm", "run", "--image", "fixture", "--rm", "--", "true") })
		cold += timed(func() { e.ok("vm", "run", "--image", "fixture", "--rm", "--cold", "--", "true") })
	}
	b.StopTimer()
	ws, cs := warm.Seconds()/float64(b.N), cold.Seconds()/float64(b.N)
	b.ReportMetric(ws, "warm-s/run")
	b.ReportMetric(cs, "cold-s/run")
	b.ReportMetric(cs/ws, "speedup")
	fmt.Printf("vm run --rm -- true: warm %.3fs, --cold %.3fs, speedup %.1fx\n", ws, cs, cs/ws)
	// Where a warm restore's time goes, as the guest's agent saw it.
	e.ok("vm", "run", "--image", "fixture", "--name", "warm-steps", "--", "true")
	fmt.Print(e.ok("vm", "exec", "warm-steps", "--", "sh", "-c", `journalctl --directory=$(ls -d /var/log/journal/* | head -1) -o cat | grep -e reidentified -e "listening on" | tail -3`))
	e.ok("vm", "delete", "--force", "warm-steps")
	// Where a warm run's time goes, as the daemon saw it.
	log, _ := os.ReadFile(filepath.Join(e.home, "state", "bangerd.log"))
	for _, l := range strings.Split(string(log), "\n") {
		if strings.Contains(l, "warm start") || strings.Contains(l, "qemu restored") || strings.Contains(l, "msg=restored") || strings.Contains(l, "msg=reidentified") {
			fmt.Println(l)
		}
	}
}
