package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// A guest that writes to its console without end keeps the console log
// (console.log plus its older half console.log.1) under its cap (plus
// what the guest prints between two trims), and vm logs, with and
// without --follow, keeps working across trims.
func TestConsoleLogCapped(t *testing.T) {
	e := newEnv(t)
	const capMiB = 1
	cfgDir := filepath.Join(e.home, "config")
	os.MkdirAll(cfgDir, 0o755)
	os.WriteFile(filepath.Join(cfgDir, "config.toml"), []byte("console_log_max_mib = 1\n"), 0o644)
	e.ok("kernel", "import", "--deb", fixtureDeb(t), "--name", "generic-6.1")
	e.ok("image", "register", "--name", "fixture", "--rootfs", filepath.Join(fixtures(t), "rootfs.ext4"), "--kernel-ref", "generic-6.1")
	e.ok("vm", "create", "--image", "fixture", "--name", "flood")
	var v struct {
		ConsoleLog string `json:"console_log"`
	}
	json.Unmarshal([]byte(e.ok("vm", "inspect", "flood")), &v)
	if v.ConsoleLog == "" {
		t.Fatal("vm inspect shows no console_log")
	}

	fctx, fcancel := context.WithCancel(context.Background())
	defer fcancel()
	follow := e.cmd(fctx, "vm", "logs", "--follow", "flood")
	var fout bytes.Buffer
	follow.Stdout = &fout
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	followDone := make(chan struct{})
	go func() { follow.Wait(); close(followDone) }()

	// Sample the files' size while the guest floods its console.
	stop := make(chan struct{})
	var mu sync.Mutex
	var peak int64
	var series []int64
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			n := size(v.ConsoleLog) + size(v.ConsoleLog+".1")
			mu.Lock()
			peak = max(peak, n)
			series = append(series, n)
			mu.Unlock()
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	// Flood for a while; a getty taking ttyS0 over hangs up the writer,
	// so the loop opens the port again.
	const floodFor = 40 * time.Second
	e.ok("vm", "exec", "flood", "--", "sh", "-c",
		`end=$(( $(date +%s) + 40 )); while left=$(( end - $(date +%s) )); [ $left -gt 0 ]; do `+
			`timeout $left yes flood-line-0123456789 > /dev/ttyS0; done; echo FLOOD-DONE > /dev/ttyS0`)
	time.Sleep(500 * time.Millisecond)
	close(stop)
	<-sampled
	// The driver trims every 100 ms: the files may pass the cap by what
	// the guest prints in two intervals (about 15 KB here).
	const margin = 256 << 10
	for i := 0; i < len(series); i += 100 {
		t.Logf("t=%.0fs console.log+console.log.1 = %d bytes", float64(i)*0.05, series[i])
	}
	t.Logf("console files peaked at %d bytes (cap %d MiB) during a %s flood", peak, capMiB, floodFor)
	if peak > capMiB<<20+margin {
		t.Fatalf("console log reached %d bytes, over its cap of %d MiB (+%d margin)", peak, capMiB, margin)
	}
	if size(v.ConsoleLog+".1") == 0 {
		t.Fatal("the console log never rotated")
	}

	logs := e.ok("vm", "logs", "flood")
	mustContain(t, "vm logs after the flood", logs, "flood-line-0123456789", "FLOOD-DONE")
	if int64(len(logs)) > capMiB<<20+margin {
		t.Fatalf("vm logs printed %d bytes, more than the cap", len(logs))
	}
	// The follower kept streaming across rotations, up to the end.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(fout.String(), "FLOOD-DONE") && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	select {
	case <-followDone:
		t.Fatal("vm logs --follow ended while the VM runs")
	default:
	}
	fcancel()
	<-followDone
	got := fout.String()
	mustContain(t, "followed log", got, "Linux version", "FLOOD-DONE")
	held := size(v.ConsoleLog) + size(v.ConsoleLog+".1")
	t.Logf("vm logs --follow streamed %d bytes (%.0f KB/s reached the log); the files hold %d", len(got), float64(len(got))/floodFor.Seconds()/1e3, held)
	if int64(len(got)) < capMiB<<20 || int64(len(got)) <= held {
		t.Fatalf("follow saw %d bytes, the files hold %d: the flood did not pass the cap, or follow stopped at a trim", len(got), held)
	}
	// The guest is fine.
	mustContain(t, "exec after flood", e.ok("vm", "exec", "flood", "--", "echo", "alive"), "alive")
}

func size(p string) int64 {
	st, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return st.Size()
}
