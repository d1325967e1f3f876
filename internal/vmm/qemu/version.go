package qemu

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"

	"banger/internal/vmm"
)

// Version returns the version of the QEMU binary, as its --version
// prints it after "QEMU emulator version" (with the distribution's
// package version: "7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)"). A
// snapshot restores only on the version that wrote it. The answer is
// cached once known: replacing the binary needs a new Driver.
func (d *Driver) Version(ctx context.Context) (string, error) {
	d.versionMu.Lock()
	defer d.versionMu.Unlock()
	if d.version != "" {
		return d.version, nil
	}
	bin, err := exec.LookPath(d.bin)
	if err != nil {
		return "", fmt.Errorf("qemu binary %q: %w (install qemu-system-x86 or set the qemu binary path): %w", d.bin, vmm.ErrUnavailable, err)
	}
	out, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w", bin, err)
	}
	v, err := parseVersion(out)
	if err != nil {
		return "", fmt.Errorf("%s --version: %w", bin, err)
	}
	d.version = v
	return v, nil
}

// parseVersion finds the version in the output of qemu --version.
func parseVersion(out []byte) (string, error) {
	const prefix = "QEMU emulator version "
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), prefix); ok && strings.TrimSpace(v) != "" {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("no %q line in %q", strings.TrimSpace(prefix), out)
}
