package qemu

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"banger/internal/vmm"
	"banger/internal/vmm/kvmcheck"
	"banger/internal/vmm/vmmtest"
)

// TestDriverSuite runs the behaviour suite every driver passes against
// real QEMU booting the Debian cloud kernel and the busybox initrd of
// fixture_test.go (testInit). Its guest says hello on the agent port and
// takes the ACPI power button only with banger.test.acpi on its command
// line. The initrd speaks virtio-serial only, so the driver is made with
// that transport even where /dev/vhost-vsock exists.
func TestDriverSuite(t *testing.T) {
	accel := vmm.AccelTCG
	if kvmcheck.Check(t.Context(), "/dev/kvm", DefaultBin) == nil {
		accel = vmm.AccelKVM
	}
	opts := Options{Accel: accel, Transport: vmm.TransportVirtioSerial}
	vmmtest.Run(t, vmmtest.Harness{
		Name:     driverName,
		Features: vmm.Features{Pause: true, Snapshots: true, Layers: true, Accel: accel, Transport: vmm.TransportVirtioSerial},
		New:      func(*testing.T) vmm.Driver { return New(opts) },
		Spec: func(t *testing.T, g vmmtest.Guest) vmm.Spec {
			k := needBoot(t)
			spec := testSpec(t, k, needInitrd(t, k))
			if g == vmmtest.Cooperative {
				spec.Cmdline = "banger.test.acpi"
			}
			return spec
		},
		Ready: "BANGER-INIT-READY",
		Agent: readHello,
		Restart: func(_ *testing.T, _ vmm.Driver, m vmm.Machine) vmm.Driver {
			// The first daemon goes away: its QMP connection closes with it.
			mm := m.(*Machine)
			mm.qmpMu.Lock()
			if mm.qmp != nil {
				mm.qmp.close()
			}
			mm.qmpMu.Unlock()
			return New(opts)
		},
		BadAdopts: func(t *testing.T, spec vmm.Spec, h vmm.Handle) map[string]vmmtest.Adoption {
			other := spec
			other.Dir = t.TempDir()
			return map[string]vmmtest.Adoption{"another vm's dir": {Spec: other, Handle: h}}
		},
		Unavailable: func(*testing.T) vmm.Driver {
			return New(Options{Bin: "/nonexistent/qemu-system-x86_64", TSCkHz: 1})
		},
		ExitAtOnce: func(t *testing.T) (vmm.Driver, vmm.Spec, string) {
			spec := testSpec(t, needBoot(t), "")
			spec.Kernel = filepath.Join(filepath.Dir(spec.ConsoleLog), "no-such-kernel")
			return New(opts), spec, "no-such-kernel"
		},
		GuestCID: guestCID,
		RunFiles: []string{pidFileName},
	})
}

// readHello reads the guest's first line on the agent channel.
func readHello(_ context.Context, conn net.Conn) error {
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "hello-from-guest" {
		return fmt.Errorf("agent channel said %q, %v; want hello-from-guest", line, err)
	}
	return nil
}

// guestCID reads the guest-cid of the vhost-vsock device from QEMU's
// command line; a guest on virtio-serial has none.
func guestCID(t *testing.T, m vmm.Machine) (uint32, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(m.Handle().PID) + "/cmdline")
	if err != nil {
		t.Errorf("reading qemu's command line: %v", err)
		return 0, false
	}
	for _, a := range strings.Split(string(b), "\x00") {
		if _, v, ok := strings.Cut(a, "guest-cid="); ok {
			cid, err := strconv.ParseUint(strings.SplitN(v, ",", 2)[0], 10, 32)
			if err != nil {
				t.Errorf("qemu argument %q: %v", a, err)
			}
			return uint32(cid), true
		}
	}
	return 0, false
}
