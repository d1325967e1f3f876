// Package kvmcheck tells whether KVM really works on this host. A
// /dev/kvm that opens is not enough: some nested hosts expose one that
// makes QEMU abort when it sets up a vCPU ("failed to set MSR 0x10a"),
// and others one from kvm_pvm (pagetable-based virtualization, for
// nested clouds without VMX), which runs only guest kernels built for
// it: QEMU starts, and Debian's kernel hangs right after "Probing EDD".
package kvmcheck

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// probeTimeout bounds the QEMU probe.
const probeTimeout = 10 * time.Second

// Check returns nil when dev opens read-write and, if qemuBin is found,
// a QEMU microvm with accel=kvm and -cpu host gets through its vCPU
// setup. Otherwise the error says what failed, in words for a user.
func Check(ctx context.Context, dev, qemuBin string) error {
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	switch {
	case err == nil:
		f.Close()
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s is missing", dev)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%s is not usable: permission denied", dev)
	default:
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fmt.Errorf("%s is not usable: %w", dev, err)
	}
	if dev != "/dev/kvm" {
		return nil // a test's device
	}
	if err := checkVendor(sysModules); err != nil {
		return err
	}
	bin, err := exec.LookPath(qemuBin)
	if err != nil {
		return nil // nothing to probe with
	}
	return probeQEMU(ctx, bin)
}

// sysModules lists the loaded modules (and the built-in ones with
// parameters, as kvm_intel and kvm_amd have).
const sysModules = "/sys/module"

// checkVendor returns nil when KVM on this x86 host comes from hardware
// virtualization (kvm_intel or kvm_amd), which runs any guest kernel.
// Another provider (kvm_pvm) is named in the error.
func checkVendor(sys string) error {
	if runtime.GOARCH != "amd64" {
		return nil
	}
	for _, m := range []string{"kvm_intel", "kvm_amd"} {
		if _, err := os.Stat(filepath.Join(sys, m)); err == nil {
			return nil
		}
	}
	var others []string
	mods, _ := filepath.Glob(filepath.Join(sys, "kvm_*"))
	for _, m := range mods {
		others = append(others, filepath.Base(m))
	}
	if len(others) == 0 {
		return fmt.Errorf("/dev/kvm is present but neither kvm_intel nor kvm_amd is loaded: no hardware virtualization")
	}
	return fmt.Errorf("/dev/kvm is present but comes from %s, not kvm_intel or kvm_amd: it runs only guest kernels built for it",
		strings.Join(others, ", "))
}

// probeQEMU starts a paused QEMU with KVM and asks it its status over
// QMP: QEMU answers only once the machine (and its vCPUs) are set up.
func probeQEMU(ctx context.Context, bin string) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-M", "microvm,accel=kvm", "-cpu", "host", "-m", "16M",
		"-nodefaults", "-no-user-config", "-display", "none", "-S", "-qmp", "stdio")
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil // not KVM's fault; Start reports a broken QEMU itself
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	io.WriteString(in, `{"execute":"qmp_capabilities"}`+"\n"+`{"execute":"query-status"}`+"\n")
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if strings.Contains(sc.Text(), `"status"`) {
			io.WriteString(in, `{"execute":"quit"}`+"\n")
			return nil
		}
	}
	if ctx.Err() != nil {
		return fmt.Errorf("/dev/kvm is present but a QEMU with KVM did not answer in %s", probeTimeout)
	}
	cmd.Wait()
	msg := strings.TrimSpace(stderr.String())
	if i := strings.IndexByte(msg, '\n'); i > 0 {
		msg = msg[:i]
	}
	msg = strings.TrimPrefix(msg, "qemu-system-x86_64: ")
	return fmt.Errorf("/dev/kvm is present but QEMU cannot use it (%s)", msg)
}
