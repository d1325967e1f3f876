package qemu

import (
	"bufio"
	"errors"
	"fmt"
	"math"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// HostTSCkHz returns the host's TSC frequency in kHz. Under TCG the guest
// TSC ticks at the host's rate, and a guest told this rate
// (tsc_early_khz=) skips the early PIT calibration that hangs about one
// microvm boot in four (see DESIGN.md §2).
//
// It prefers the kernel's own figure from the kernel log ("tsc: Refined
// TSC clocksource calibration" over "tsc: Detected ... MHz processor") and
// otherwise measures RDTSC against the monotonic clock for ~100ms.
func HostTSCkHz() (int, error) {
	if khz, err := kernelLogTSCkHz(); err == nil {
		return khz, nil
	}
	return measureTSCkHz(100 * time.Millisecond)
}

var (
	refinedTSC  = regexp.MustCompile(`tsc: Refined TSC clocksource calibration: ([0-9]+(?:\.[0-9]+)?) MHz`)
	detectedTSC = regexp.MustCompile(`tsc: Detected ([0-9]+(?:\.[0-9]+)?) MHz processor`)
)

// kernelLogTSCkHz reads the kernel ring buffer (needs CAP_SYSLOG or
// kernel.dmesg_restrict=0) and parses the TSC frequency from it.
func kernelLogTSCkHz() (int, error) {
	size, err := unix.Klogctl(unix.SYSLOG_ACTION_SIZE_BUFFER, nil)
	if err != nil || size <= 0 {
		size = 1 << 20
	}
	buf := make([]byte, size)
	n, err := unix.Klogctl(unix.SYSLOG_ACTION_READ_ALL, buf)
	if err != nil {
		return 0, fmt.Errorf("reading kernel log: %w", err)
	}
	return parseKernelLogTSC(string(buf[:n]))
}

// parseKernelLogTSC finds the TSC frequency in kernel log text. The
// refined calibration wins over the early detected value.
func parseKernelLogTSC(log string) (int, error) {
	var detected, refined string
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if m := refinedTSC.FindStringSubmatch(line); m != nil {
			refined = m[1]
		} else if m := detectedTSC.FindStringSubmatch(line); m != nil {
			detected = m[1]
		}
	}
	mhz := refined
	if mhz == "" {
		mhz = detected
	}
	if mhz == "" {
		return 0, errors.New("no tsc frequency in kernel log")
	}
	return mhzToKHz(mhz)
}

// mhzToKHz converts a decimal MHz figure such as "2096.017" to kHz
// without floating-point rounding surprises.
func mhzToKHz(mhz string) (int, error) {
	whole, frac, _ := strings.Cut(mhz, ".")
	frac = (frac + "000")[:3]
	khz, err := strconv.Atoi(whole + frac)
	if err != nil || khz <= 0 {
		return 0, fmt.Errorf("bad tsc frequency %q MHz", mhz)
	}
	return khz, nil
}

// measureTSCkHz counts TSC ticks over d of monotonic time.
func measureTSCkHz(d time.Duration) (int, error) {
	if !haveRDTSC {
		return 0, fmt.Errorf("measuring tsc: not supported on %s", runtime.GOARCH)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	t0, c0 := tscSample()
	time.Sleep(d)
	t1, c1 := tscSample()
	elapsed := t1.Sub(t0)
	if c1 <= c0 || elapsed <= 0 {
		return 0, errors.New("measuring tsc: counter did not advance")
	}
	khz := float64(c1-c0) / float64(elapsed.Nanoseconds()) * 1e6
	return int(math.Round(khz)), nil
}

// tscSample reads the TSC and the monotonic clock as close together as
// it can: it retries while a preemption widens the window between them.
func tscSample() (time.Time, uint64) {
	var best time.Duration = math.MaxInt64
	var t time.Time
	var c uint64
	for range 10 {
		before := time.Now()
		tsc := rdtsc()
		window := time.Since(before)
		if window < best {
			best, t, c = window, before.Add(window/2), tsc
		}
		if window < 2*time.Microsecond {
			break
		}
	}
	return t, c
}
