package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkFork: `vm fork` of a running VM (snapshot, then a VM made from
// it with its own identity), against QEMU's own part of the same work in
// the same run: the save (pause, migrate, memory copy) and the restore
// (start, QMP, load) that QEMU reports in the daemon log.
func BenchmarkFork(b *testing.B) {
	e := bootEnv(b)
	e.ok("vm", "create", "--image", "fixture", "--name", "src")
	logPath := filepath.Join(e.home, "state", "bangerd.log")
	var banger, qemu time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		name := fmt.Sprintf("f%d", i)
		from := size(logPath)
		banger += timed(func() { e.ok("vm", "fork", "src", "--name", name) })
		b.StopTimer()
		qemu += qemuPart(b, logPath, from)
		e.ok("vm", "delete", "--force", name)
		e.ok("snapshot", "delete", name+"-origin")
		b.StartTimer()
	}
	b.StopTimer()
	report(b, "vm fork of a running 1 GiB VM (bare: QEMU's own save and restore in it)", banger, qemu, "fork")
}

var totalMS = regexp.MustCompile(`msg="(snapshot saved|qemu restored)".* total_ms=([0-9.]+)`)

// qemuPart sums the total_ms of the "snapshot saved" and "qemu restored"
// lines the daemon logged after offset from.
func qemuPart(tb testing.TB, logPath string, from int64) time.Duration {
	b, err := os.ReadFile(logPath)
	if err != nil {
		tb.Fatal(err)
	}
	var d time.Duration
	n := 0
	for _, l := range strings.Split(string(b[min(from, int64(len(b))):]), "\n") {
		if m := totalMS.FindStringSubmatch(l); m != nil {
			v, _ := strconv.ParseFloat(m[2], 64)
			d += time.Duration(v * float64(time.Millisecond))
			n++
		}
	}
	if n != 2 {
		tb.Fatalf("want a snapshot saved and a qemu restored line in bangerd.log, found %d", n)
	}
	return d
}
