package qemu

import (
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

// The measured rate must agree with the kernel's figure within 1%.
func TestMeasureTSCAgreesWithKernel(t *testing.T) {
	if !haveRDTSC {
		t.Skip("no rdtsc on this architecture")
	}
	klog, err := kernelLogTSCkHz()
	if err != nil {
		t.Skipf("kernel log has no tsc figure (needs CAP_SYSLOG): %v", err)
	}
	measured, err := measureTSCkHz(100 * time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if d := float64(measured-klog) / float64(klog); d > 0.01 || d < -0.01 {
		t.Errorf("measured %d kHz, kernel says %d kHz", measured, klog)
	}
	t.Logf("kernel %d kHz, measured %d kHz", klog, measured)
}
