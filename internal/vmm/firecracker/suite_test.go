package firecracker

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"banger/internal/vmm"
	"banger/internal/vmm/vmmtest"
)

// TestDriverSuite runs the behaviour suite every driver passes against
// this driver and the firecracker stand-in (standin_test.go): its guest
// prints standinBanner at InstanceStart, echoes on the agent's vsock port
// and powers off on Ctrl-Alt-Del unless its boot args say otherwise.
func TestDriverSuite(t *testing.T) {
	vmmtest.Run(t, vmmtest.Harness{
		Name:     Name,
		Features: vmm.Features{Snapshots: true, Pause: true, Accel: vmm.AccelKVM, Transport: vmm.TransportHybridVsock},
		New: func(t *testing.T) vmm.Driver {
			d, _ := newStandinDriver(t, modeOK)
			return d
		},
		Spec: func(t *testing.T, g vmmtest.Guest) vmm.Spec {
			s := testSpec(t)
			if g == vmmtest.IgnoresShutdown {
				s.Cmdline += " " + standinIgnoreCAD
			}
			return s
		},
		Ready: standinBanner,
		Agent: vmmtest.Echo,
		BadAdopts: func(_ *testing.T, spec vmm.Spec, h vmm.Handle) map[string]vmmtest.Adoption {
			return map[string]vmmtest.Adoption{"no socket in handle": {Spec: spec, Handle: vmm.Handle{Driver: Name, PID: h.PID}}}
		},
		Unavailable: func(t *testing.T) vmm.Driver {
			return New(Options{Bin: filepath.Join(t.TempDir(), "no-firecracker"), CheckKVM: func() error { return nil }})
		},
		ExitAtOnce: func(t *testing.T) (vmm.Driver, vmm.Spec, string) {
			d, _ := newStandinDriver(t, modeExit)
			return d, testSpec(t), "simulated crash"
		},
		GuestCID: guestCID,
	})
}

// guestCID finds the PUT /vsock of m in what the stand-ins of this test
// recorded (newStandinDriver points them at $standinLogEnv).
func guestCID(t *testing.T, m vmm.Machine) (uint32, bool) {
	uds := m.Handle().Data[dataVsock]
	for _, r := range readRecorded(t, os.Getenv(standinLogEnv)) {
		var v VsockConfig
		if r.Method == "PUT" && r.Path == "/vsock" && json.Unmarshal(r.Body, &v) == nil && v.UDSPath == uds {
			return v.GuestCID, true
		}
	}
	t.Errorf("no PUT /vsock recorded for %s", uds)
	return 0, false
}
