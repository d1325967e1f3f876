package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// misbehaveBound is how long a command against a VM whose agent
// misbehaves may take: the guest client's own bounds (an answer within
// 30 s, a frame begun finished within 30 s) and some room.
const misbehaveBound = 75 * time.Second

// countWriter counts what is written to it.
type countWriter struct{ n atomic.Int64 }

func (w *countWriter) Write(p []byte) (int, error) { w.n.Add(int64(len(p))); return len(p), nil }

// A guest whose agent misbehaves: the bangercrash agent, told by an exec
// of banger-hostile MODE to answer every later request (but hello) with
// garbage, an oversized frame, half a frame and then silence, silence, or
// output without end. Every command against that VM ends within
// misbehaveBound with an error naming the VM (an exec's flood is its
// output: it streams until the CLI is stopped), the daemon does not panic
// and its memory does not grow with what the guest sent, and another VM
// works throughout. (Issue 16, "A guest that misbehaves".)
func TestMisbehavingAgent(t *testing.T) {
	e := newEnv(t)
	e.bin = crashBins(t) // its agent has the hostile modes
	e.ok("kernel", "import", "--deb", fixtureDeb(t), "--name", "generic-6.1")
	e.ok("image", "register", "--name", "fixture", "--rootfs", filepath.Join(fixtures(t), "rootfs.ext4"), "--kernel-ref", "generic-6.1")
	e.ok("vm", "create", "--image", "fixture", "--name", "bad", "--memory", "512M")
	e.ok("vm", "create", "--image", "fixture", "--name", "good", "--memory", "512M")
	src := filepath.Join(t.TempDir(), "f")
	os.WriteFile(src, []byte("host data"), 0o644)
	dst := filepath.Join(t.TempDir(), "got")
	pid := e.daemonPID()
	rss := func() int64 {
		kb, _ := strconv.ParseInt(strings.Fields(procStatus(t, pid)["VmRSS"] + " 0")[0], 10, 64)
		return kb >> 10
	}
	fds := func() int {
		ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		return len(ents)
	}
	rssBefore, fdsBefore := rss(), fds()

	type row struct {
		mode, cmd string
		took      time.Duration
		code      int
		stderr    string
	}
	var rows []row
	for _, mode := range []string{"garbage", "oversized", "half", "silent", "flood"} {
		e.ok("vm", "exec", "bad", "--", "banger-hostile", mode)
		for _, args := range [][]string{
			{"vm", "exec", "bad", "--", "echo", "hi"},
			{"vm", "cp", "bad:/etc/hostname", dst},
			{"vm", "cp", src, "bad:/tmp/f"},
			{"vm", "session", "start", "bad", "--name", "s-" + mode, "--", "sleep", "100"},
		} {
			if args[1] == "cp" && args[2] == src && (mode == "half" || mode == "silent") {
				continue // its answer is due 2 minutes after the upload (guest.UploadAnswerTimeout)
			}
			flood := mode == "flood" && args[1] == "exec"
			bound := misbehaveBound
			if flood {
				bound = 10 * time.Second // the flood is its output: stop the CLI
			}
			ctx, cancel := context.WithTimeout(context.Background(), bound)
			start := time.Now()
			c := e.cmd(ctx, args...)
			var stderr strings.Builder
			out := &countWriter{}
			c.Stdout, c.Stderr = out, &stderr
			err := c.Run()
			timedOut := ctx.Err() != nil
			cancel()
			took := time.Since(start)
			code := 0
			if err != nil {
				code = -1
				if c.ProcessState != nil {
					code = c.ProcessState.ExitCode()
				}
			}
			r := row{mode, strings.Join(args, " "), took, code, strings.TrimSpace(stderr.String())}
			rows = append(rows, r)
			switch {
			case flood:
				if out.n.Load() < 1<<20 {
					t.Errorf("%s (%s): only %d bytes of the flood came through", r.cmd, mode, out.n.Load())
				}
				r.stderr = fmt.Sprintf("(stopped after %s: %d MiB of output)", bound, out.n.Load()>>20)
				rows[len(rows)-1] = r
			case timedOut:
				t.Errorf("%s (%s) still ran after %s", r.cmd, mode, bound)
			case code == 0:
				t.Errorf("%s (%s) succeeded against a misbehaving agent", r.cmd, mode)
			case !strings.Contains(r.stderr, `"bad"`) && !strings.Contains(r.stderr, "bad:"):
				t.Errorf("%s (%s) failed without naming the vm: %s", r.cmd, mode, r.stderr)
			}
			if strings.Contains(r.stderr, "panic:") || strings.Contains(r.stderr, "goroutine ") {
				t.Errorf("%s (%s): a Go stack trace: %s", r.cmd, mode, r.stderr)
			}
			if got := e.ok("vm", "exec", "good", "--", "echo", "ok"); got != "ok\n" {
				t.Errorf("the good vm during %s (%s): exec said %q", r.cmd, mode, got)
			}
		}
	}
	e.ok("vm", "exec", "bad", "--", "banger-hostile", "off")
	if got := e.ok("vm", "exec", "bad", "--", "echo", "back"); got != "back\n" {
		t.Errorf("the bad vm once its agent behaves: exec said %q", got)
	}
	if pid2 := e.daemonPID(); pid2 != pid {
		t.Fatalf("the daemon restarted (pid %d, now %d): it died on the way", pid, pid2)
	}
	time.Sleep(2 * time.Second) // let closed streams go
	rssAfter, fdsAfter := rss(), fds()

	var b strings.Builder
	for _, r := range rows {
		fmt.Fprintf(&b, "  %-9s %-58s %6s exit %3d  %s\n", r.mode, r.cmd, r.took.Round(100*time.Millisecond), r.code, firstLine([]byte(r.stderr)))
	}
	t.Logf("commands against a misbehaving agent:\n%s", b.String())
	t.Logf("bangerd: RSS %d -> %d MiB, open fds %d -> %d", rssBefore, rssAfter, fdsBefore, fdsAfter)
	if rssAfter > rssBefore+64 {
		t.Errorf("bangerd's RSS grew from %d to %d MiB against a misbehaving guest", rssBefore, rssAfter)
	}
	if fdsAfter > fdsBefore+8 {
		t.Errorf("bangerd's open fds grew from %d to %d: streams left open", fdsBefore, fdsAfter)
	}
	if log, _ := os.ReadFile(filepath.Join(e.home, "state", "bangerd.log")); strings.Contains(string(log), "panic") {
		t.Error("bangerd.log mentions a panic")
	}
}
