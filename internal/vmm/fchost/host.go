// Package fchost is what the firecracker driver needs of the host, apart
// from the driver so that banger doctor can check it without linking the
// driver: a usable /dev/kvm, an executable firecracker (and jailer), and
// a supported API version.
package fchost

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"banger/internal/vmm"
	"banger/internal/vmm/kvmcheck"
)

// MinAPIVersion is the oldest Firecracker API banger drives. The driver's
// requests are checked against the v1.16.1 spec, and snapshot restore uses
// vsock_override, so older releases are refused. Firecracker keeps its API
// backward compatible within a major version, so any later 1.x is accepted.
const MinAPIVersion = "1.16.0"

// KVMDevice is the device Firecracker needs.
const KVMDevice = "/dev/kvm"

// SupportedAPIVersion reports whether v (as in GET /version, "1.16.1" or
// "v1.16.1", optionally with a "-dev" style suffix) is a 1.x version not
// older than MinAPIVersion.
func SupportedAPIVersion(v string) bool {
	got, ok := parseVersion(v)
	if !ok {
		return false
	}
	minimum, _ := parseVersion(MinAPIVersion)
	if got[0] != minimum[0] {
		return false
	}
	if got[1] != minimum[1] {
		return got[1] > minimum[1]
	}
	return got[2] >= minimum[2]
}

// parseVersion parses "v1.2.3-suffix" into its three numbers. The patch
// number may be missing.
func parseVersion(v string) ([3]int, bool) {
	var out [3]int
	v = strings.TrimPrefix(strings.TrimSpace(v), "v")
	if i := strings.IndexAny(v, "-+ "); i >= 0 {
		v = v[:i]
	}
	parts := strings.Split(v, ".")
	if len(parts) < 2 || len(parts) > 3 {
		return out, false
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return out, false
		}
		out[i] = n
	}
	return out, true
}

// CheckBinary reports whether bin, the firecracker binary (a path, or a
// name looked up in PATH), is an executable file. The error wraps
// vmm.ErrUnavailable and says how to fix it.
func CheckBinary(bin string) error { return checkBinary("firecracker", "firecracker_bin", bin) }

// CheckJailer is CheckBinary for the jailer, configured by jailer_bin.
func CheckJailer(bin string) error { return checkBinary("jailer", "jailer_bin", bin) }

// checkBinary checks the binary of program, configured by key.
func checkBinary(program, key, bin string) error {
	if bin == "" {
		return fmt.Errorf("%w: no %s binary configured: install %s or set %s in config.toml", vmm.ErrUnavailable, program, program, key)
	}
	path := bin
	if !strings.Contains(bin, "/") {
		p, err := exec.LookPath(bin)
		if err != nil {
			return fmt.Errorf("%w: %s not found in PATH: install %s (https://github.com/firecracker-microvm/firecracker/releases) or set %s in config.toml", vmm.ErrUnavailable, bin, program, key)
		}
		path = p
	}
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%w: %s binary %s does not exist: install %s or fix %s in config.toml", vmm.ErrUnavailable, program, path, program, key)
	case err != nil:
		return fmt.Errorf("%w: %s binary: %w", vmm.ErrUnavailable, program, err)
	case st.IsDir():
		return fmt.Errorf("%w: %s binary %s is a directory: point %s at the executable", vmm.ErrUnavailable, program, path, key)
	case st.Mode().Perm()&0o111 == 0:
		return fmt.Errorf("%w: %s binary %s is not executable: chmod +x %s", vmm.ErrUnavailable, program, path, path)
	}
	return nil
}

// Available reports whether Firecracker can run here: bin is executable
// and /dev/kvm usable. vmm = "auto" picks firecracker when it returns nil.
func Available(bin string) error {
	if err := CheckBinary(bin); err != nil {
		return err
	}
	return CheckKVM()
}

// CheckKVM reports whether /dev/kvm can be opened for reading and writing.
// The error wraps vmm.ErrUnavailable and says how to fix it.
func CheckKVM() error { return CheckKVMAt(KVMDevice) }

// CheckKVMAt is CheckKVM of the device dev. A /dev/kvm that opens but
// on which QEMU cannot set up a vCPU (kvmcheck) is refused too: a nested
// host's broken KVM fails Firecracker the same way.
func CheckKVMAt(dev string) error {
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return kvmError(dev, err)
	}
	f.Close()
	if err := kvmcheck.Check(context.Background(), dev, "qemu-system-x86_64"); err != nil {
		return fmt.Errorf("%w: %v; use vmm = \"qemu\" (software emulation) or a host whose KVM works", vmm.ErrUnavailable, err)
	}
	return nil
}

// kvmError explains why dev cannot be opened and how to fix it.
func kvmError(dev string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%w: %s is missing: load the module (sudo modprobe kvm_intel, or kvm_amd on AMD), enable virtualization in the firmware or, inside a VM, nested virtualization; or use vmm = \"qemu\"", vmm.ErrUnavailable, dev)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%w: %s is not accessible: add the user to the kvm group (sudo usermod -aG kvm $USER, then log in again) or run bangerd as root", vmm.ErrUnavailable, dev)
	default:
		return fmt.Errorf("%w: opening %s: %w", vmm.ErrUnavailable, dev, err)
	}
}

// Probe runs `bin --version` and returns the version it prints, without
// a leading "v" (for example "1.16.1"). banger doctor uses it together
// with SupportedAPIVersion.
func Probe(ctx context.Context, bin string) (string, error) {
	if err := CheckBinary(bin); err != nil {
		return "", err
	}
	out, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("running %s --version: %w", bin, err)
	}
	// Firecracker prints "Firecracker v1.16.1" followed by a blank line.
	for _, field := range strings.Fields(string(out)) {
		if _, ok := parseVersion(field); ok {
			return strings.TrimPrefix(field, "v"), nil
		}
	}
	return "", fmt.Errorf("running %s --version: no version in %q", bin, strings.TrimSpace(string(out)))
}
