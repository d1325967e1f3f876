package qemu

import (
	"context"
	"errors"
	"io"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"banger/internal/prereq"
	"banger/internal/vmm"
)

// TestSoak boots the busybox test VM BANGER_SOAK times in a row and
// reports hangs and the median and p95 time from Start to agent-ready (the
// guest's first line read through DialAgent). Any hang fails the test.
//
//	BANGER_SOAK=50 go test -run TestSoak -v -timeout 30m ./internal/vmm/qemu/
//
// BANGER_SOAK_NAIVE=1 boots without the TCG clock fix (tsc_early_khz,
// tsc=reliable) to show what it prevents; hangs are then only reported.
func TestSoak(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("BANGER_SOAK"))
	if n <= 0 {
		prereq.ByDesign(t, "set BANGER_SOAK=N to boot N times")
	}
	k := needBoot(t)
	initrd := needInitrd(t, k)
	d := New(Options{})
	naive := os.Getenv("BANGER_SOAK_NAIVE") == "1"
	if naive {
		d.tscKHz = func() (int, error) { return 0, errors.New("disabled by BANGER_SOAK_NAIVE") }
	}
	if khz, err := d.tscKHz(); err == nil {
		t.Logf("soak: host tsc %d kHz", khz)
	}
	const hangAfter = 30 * time.Second
	var times []time.Duration
	var hangs int
	for i := range n {
		took, err := soakBoot(t, d, testSpec(t, k, initrd), hangAfter)
		if err != nil {
			hangs++
			t.Logf("boot %d/%d: HANG: %v", i+1, n, err)
			continue
		}
		times = append(times, took)
		t.Logf("boot %d/%d: agent-ready after %s", i+1, n, took.Round(time.Millisecond))
	}
	slices.Sort(times)
	t.Logf("soak: %d boots, %d hangs (naive=%v)", n, hangs, naive)
	if len(times) > 0 {
		t.Logf("soak: agent-ready min %s  median %s  p95 %s  max %s",
			times[0].Round(time.Millisecond), pct(times, 50), pct(times, 95),
			times[len(times)-1].Round(time.Millisecond))
	}
	if hangs > 0 && !naive {
		t.Errorf("%d of %d boots hung", hangs, n)
	}
}

// soakBoot boots one VM, waits for the guest's hello on the agent channel
// and kills it. It returns the time from Start to that hello.
func soakBoot(t *testing.T, d *Driver, spec vmm.Spec, hangAfter time.Duration) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(t.Context(), hangAfter)
	defer cancel()
	start := time.Now()
	m, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer m.Kill()
	conn, err := m.DialAgent(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	conn.SetReadDeadline(start.Add(hangAfter))
	buf := make([]byte, len("hello-from-guest"))
	if _, err := io.ReadFull(conn, buf); err != nil {
		return 0, errors.Join(err, errors.New(vmm.LogTail(spec.ConsoleLog, 3)))
	}
	return time.Since(start), nil
}

// pct returns the p-th percentile of sorted durations (nearest rank).
func pct(sorted []time.Duration, p int) time.Duration {
	i := (len(sorted)*p + 99) / 100
	return sorted[max(i-1, 0)].Round(time.Millisecond)
}
