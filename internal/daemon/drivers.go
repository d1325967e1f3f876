package daemon

import (
	"log/slog"
	"os"
	"os/exec"

	"banger/internal/config"
	"banger/internal/doctor"
	"banger/internal/vmm"
	"banger/internal/vmm/firecracker"
	"banger/internal/vmm/qemu"
)

// newDrivers constructs both drivers and picks the one new VMs use, the
// same way banger doctor explains it.
func newDrivers(cfg config.Config, logger *slog.Logger) (map[string]vmm.Driver, doctor.Choice) {
	drivers := map[string]vmm.Driver{
		"qemu":        qemu.New(qemu.Options{Bin: cfg.QEMUBin, Logger: logger}),
		"firecracker": firecracker.New(firecracker.Options{Bin: cfg.FirecrackerBin, JailerBin: cfg.JailerBin, Logger: logger}),
	}
	var kvmErr error
	if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err != nil {
		kvmErr = err
	} else {
		f.Close()
	}
	fc, _ := exec.LookPath(cfg.FirecrackerBin)
	return drivers, doctor.Choose(cfg.VMM, kvmErr, fc)
}
