package doctor

import (
	"fmt"

	"banger/internal/config"
	"banger/internal/vmm"
)

// Choice is the VMM a vmm setting resolves to on a host.
type Choice struct {
	VMM    string    // config.VMMFirecracker or config.VMMQEMU
	Accel  vmm.Accel // kvm or tcg
	Reason string    // one line, e.g. "/dev/kvm is missing; firecracker needs it"
}

// Choose resolves a vmm setting (auto, firecracker, qemu). kvmErr is nil
// when /dev/kvm is usable, else says why not ("/dev/kvm is missing");
// firecrackerPath is where the firecracker binary is, "" when not found.
// Auto picks firecracker when /dev/kvm is usable and the binary is found,
// else qemu, with KVM when usable and TCG otherwise.
func Choose(setting string, kvmErr error, firecrackerPath string) Choice {
	qemu := Choice{VMM: config.VMMQEMU, Accel: vmm.AccelKVM}
	if kvmErr != nil {
		qemu.Accel = vmm.AccelTCG
	}
	switch setting {
	case config.VMMFirecracker:
		return Choice{VMM: config.VMMFirecracker, Accel: vmm.AccelKVM, Reason: "vmm = firecracker in config"}
	case config.VMMQEMU:
		qemu.Reason = "vmm = qemu in config; /dev/kvm is usable"
		if kvmErr != nil {
			qemu.Reason = fmt.Sprintf("vmm = qemu in config; %v, so software emulation (slow)", kvmErr)
		}
		return qemu
	}
	switch {
	case kvmErr != nil:
		qemu.Reason = fmt.Sprintf("%v; firecracker needs it", kvmErr)
	case firecrackerPath == "":
		qemu.Reason = "/dev/kvm is usable but the firecracker binary is not found; qemu uses /dev/kvm"
	default:
		return Choice{
			VMM: config.VMMFirecracker, Accel: vmm.AccelKVM,
			Reason: "/dev/kvm is usable and firecracker is at " + firecrackerPath,
		}
	}
	return qemu
}
