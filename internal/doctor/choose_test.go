package doctor

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"banger/internal/vmm"
)

func TestChoose(t *testing.T) {
	missing := errors.New("/dev/kvm is missing")
	tests := []struct {
		setting string
		kvmErr  error
		fc      string
		want    Choice
	}{
		{"auto", nil, "/usr/bin/firecracker", Choice{"firecracker", vmm.AccelKVM, "/dev/kvm is usable and firecracker is at /usr/bin/firecracker"}},
		{"auto", nil, "", Choice{"qemu", vmm.AccelKVM, "/dev/kvm is usable but the firecracker binary is not found; qemu uses /dev/kvm"}},
		{"auto", missing, "/usr/bin/firecracker", Choice{"qemu", vmm.AccelTCG, "/dev/kvm is missing; firecracker needs it"}},
		{"auto", missing, "", Choice{"qemu", vmm.AccelTCG, "/dev/kvm is missing; firecracker needs it"}},
		{"qemu", nil, "/usr/bin/firecracker", Choice{"qemu", vmm.AccelKVM, "vmm = qemu in config; /dev/kvm is usable"}},
		{"qemu", missing, "", Choice{"qemu", vmm.AccelTCG, "vmm = qemu in config; /dev/kvm is missing, so software emulation (slow)"}},
		{"firecracker", missing, "", Choice{"firecracker", vmm.AccelKVM, "vmm = firecracker in config"}},
		{"firecracker", nil, "/fc", Choice{"firecracker", vmm.AccelKVM, "vmm = firecracker in config"}},
	}
	for _, tt := range tests {
		t.Run(tt.setting+"/"+errString(tt.kvmErr)+"/"+tt.fc, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, Choose(tt.setting, tt.kvmErr, tt.fc)); diff != "" {
				t.Errorf("Choose (-want +got):\n%s", diff)
			}
		})
	}
}

func errString(err error) string {
	if err == nil {
		return "kvm"
	}
	return "nokvm"
}

// TestRunVMMChoice checks the choice Run reports from the fake host.
func TestRunVMMChoice(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(h *host, o *Options)
		vmm     string
		accel   vmm.Accel
		reason  string
		ok      bool
		setting string
	}{
		{"kvm and firecracker", func(h *host, o *Options) {}, "firecracker", vmm.AccelKVM, "/dev/kvm is usable and firecracker is at ", true, "auto"},
		{"no kvm", func(h *host, o *Options) { h.remove("kvm") }, "qemu", vmm.AccelTCG, "kvm is missing; firecracker needs it", true, "auto"},
		{"kvm unusable", func(h *host, o *Options) { o.DevKVM = h.dir }, "qemu", vmm.AccelTCG, "is not usable: ", true, "auto"},
		{"no firecracker", func(h *host, o *Options) { delete(h.bins, "firecracker") }, "qemu", vmm.AccelKVM, "firecracker binary is not found", true, "auto"},
		{"no kvm no qemu", func(h *host, o *Options) { h.remove("kvm"); delete(h.bins, "qemu-system-x86_64") }, "qemu", vmm.AccelTCG, "missing", false, "auto"},
		{"forced firecracker without kvm", func(h *host, o *Options) { h.remove("kvm"); o.Config.VMM = "firecracker" }, "firecracker", vmm.AccelKVM, "vmm = firecracker in config", false, "firecracker"},
		{"empty setting means auto", func(h *host, o *Options) { o.Config.VMM = "" }, "firecracker", vmm.AccelKVM, "usable", true, "auto"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHost(t)
			o := h.options()
			tt.setup(h, &o)
			r := Run(t.Context(), o)
			if r.VMM != tt.vmm || r.Accel != tt.accel || !contains(r.VMMReason, tt.reason) || r.VMMSetting != tt.setting {
				t.Errorf("got vmm = %s: %s (%s): %q, want %s: %s (%s): ...%q...", r.VMMSetting, r.VMM, r.Accel, r.VMMReason, tt.setting, tt.vmm, tt.accel, tt.reason)
			}
			if r.OK() != tt.ok {
				t.Errorf("OK() = %v, want %v; checks: %+v", r.OK(), tt.ok, r.Checks)
			}
		})
	}
}

func TestRunHonoursContext(t *testing.T) {
	h := newHost(t)
	h.bin("qemu-system-x86_64", "#!/bin/sh\nexec sleep 30\n")
	o := h.options()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	r := Run(ctx, o)
	if c := find(t, r, "qemu-system-x86_64"); c.Status == StatusOK {
		t.Errorf("qemu check with a cancelled ctx = ok (%q)", c.Detail)
	}
}
