package daemon

import (
	"context"
	"log/slog"
	"os/exec"

	"banger/internal/config"
	"banger/internal/doctor"
	"banger/internal/vmm"
	"banger/internal/vmm/firecracker"
	"banger/internal/vmm/kvmcheck"
	"banger/internal/vmm/qemu"
)

// newDrivers constructs both drivers and picks the one new VMs use, the
// same way banger doctor explains it. With a vmm user, QEMU drops to it
// (-runas) and the jailer runs firecracker as it; without one they stay
// root.
func newDrivers(cfg config.Config, logger *slog.Logger, u *vmmUser) (map[string]vmm.Driver, doctor.Choice) {
	qo, fo := driverOptions(cfg, logger, u)
	// A /dev/kvm that opens may still be unusable (nested hosts): then
	// QEMU must not be given KVM.
	kvmErr := kvmcheck.Check(context.Background(), "/dev/kvm", cfg.QEMUBin)
	if kvmErr != nil {
		qo.Accel = vmm.AccelTCG
		logger.Info("kvm not used", "why", kvmErr)
	}
	drivers := map[string]vmm.Driver{
		"qemu":        qemu.New(qo),
		"firecracker": firecracker.New(fo),
	}
	fc, _ := exec.LookPath(cfg.FirecrackerBin)
	return drivers, doctor.Choose(cfg.VMM, kvmErr, fc)
}

// driverOptions are the drivers' options for cfg and the vmm user u.
func driverOptions(cfg config.Config, logger *slog.Logger, u *vmmUser) (qemu.Options, firecracker.Options) {
	qo := qemu.Options{Bin: cfg.QEMUBin, Logger: logger}
	fo := firecracker.Options{Bin: cfg.FirecrackerBin, JailerBin: cfg.JailerBin, Logger: logger}
	if u != nil {
		qo.RunAs = u.name
		fo.JailerUID, fo.JailerGID = u.uid, u.gid
	}
	return qo, fo
}
