package qemu

import (
	"banger/internal/prereq"
	"testing"
	"time"
)

func TestParseKernelLogTSC(t *testing.T) {
	tests := []struct {
		name string
		log  string
		want int // 0: expect an error
	}{
		{"detected", "<6>[    0.000262] tsc: Detected 2096.017 MHz processor\n", 2096017},
		{"refined wins", "<6>[    0.000262] tsc: Detected 2096.017 MHz processor\n" +
			"<6>[    1.300000] tsc: Refined TSC clocksource calibration: 2095.999 MHz\n", 2095999},
		{"refined before detected still wins", "tsc: Refined TSC clocksource calibration: 3000.5 MHz\n" +
			"tsc: Detected 2999.000 MHz processor\n", 3000500},
		{"whole MHz", "tsc: Detected 2400 MHz processor", 2400000},
		{"absent", "Linux version 6.1\n", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseKernelLogTSC(tt.log)
			if tt.want == 0 {
				if err == nil {
					t.Errorf("got %d, want an error", got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("got %d, %v; want %d", got, err, tt.want)
			}
		})
	}
}

// Two measurements must agree within 0.5%, and with the kernel's figure
// within 1% when the kernel log still has it.
func TestMeasureTSC(t *testing.T) {
	if !haveRDTSC {
		prereq.ByDesign(t, "no rdtsc on this architecture")
	}
	a, err := measureTSCkHz(100 * time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	b, err := measureTSCkHz(100 * time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if !near(a, b, 0.005) || a < 100_000 || a > 10_000_000 {
		t.Errorf("measurements %d kHz and %d kHz disagree or are implausible", a, b)
	}
	klog, err := kernelLogTSCkHz()
	if err != nil {
		t.Logf("measured %d and %d kHz; kernel log has no tsc figure: %v", a, b, err)
		return
	}
	if !near(a, klog, 0.01) {
		t.Errorf("measured %d kHz, kernel says %d kHz", a, klog)
	}
	t.Logf("kernel %d kHz, measured %d and %d kHz", klog, a, b)
}

func near(a, b int, frac float64) bool {
	d := float64(a-b) / float64(b)
	return d <= frac && d >= -frac
}
