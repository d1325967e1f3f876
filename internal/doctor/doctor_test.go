package doctor

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/vmm"
)

// host is a fake host for Run: temp files stand in for device nodes and
// executable scripts for binaries.
type host struct {
	t    *testing.T
	dir  string
	bins map[string]string // name -> path of a script; missing = not installed
}

func newHost(t *testing.T) *host {
	t.Helper()
	h := &host{t: t, dir: t.TempDir(), bins: map[string]string{}}
	h.file("kvm", "")
	h.file("tun", "")
	h.file("ip_forward", "1\n")
	for name, out := range map[string]string{
		"firecracker":        "Firecracker v1.16.1",
		"qemu-system-x86_64": "QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7+deb12u12)",
		"mkfs.ext4":          "mke2fs 1.47.0 (5-Feb-2023)",
		"debootstrap":        "debootstrap 1.0.128+nmu2+deb12u1",
		"nft":                "nftables v1.0.6 (Lester Gooch #5)",
		"sudo":               "Sudo version 1.9.13p3",
		"depmod":             "kmod version 30",
	} {
		h.bin(name, "#!/bin/sh\necho '"+out+"'\n")
	}
	return h
}

func (h *host) file(name, body string) string {
	h.t.Helper()
	p := filepath.Join(h.dir, name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		h.t.Fatal(err)
	}
	return p
}

func (h *host) bin(name, script string) {
	h.t.Helper()
	p := filepath.Join(h.dir, "bin", name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		h.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		h.t.Fatal(err)
	}
	h.bins[name] = p
}

func (h *host) remove(name string) {
	delete(h.bins, name)
	os.Remove(filepath.Join(h.dir, name))
}

// lookPath finds only the fake binaries, by name or by their path.
func (h *host) lookPath(file string) (string, error) {
	for name, p := range h.bins {
		if file == name || file == p {
			return p, nil
		}
	}
	return "", &fs.PathError{Op: "lookpath", Path: file, Err: fs.ErrNotExist}
}

func (h *host) options() Options {
	return Options{
		Config:        config.Default(),
		StateDir:      filepath.Join(h.dir, "state", "not-yet"),
		LookPath:      h.lookPath,
		DevKVM:        filepath.Join(h.dir, "kvm"),
		DevTun:        filepath.Join(h.dir, "tun"),
		IPForwardPath: filepath.Join(h.dir, "ip_forward"),
		IsRoot:        func() bool { return true },
		VMMUser:       func() error { return nil },
		FreeBytes:     func(string) (uint64, error) { return 50 * gib, nil },
		NFTables:      func(context.Context) error { return nil },
		DaemonCheck:   func(context.Context) error { return nil },
		Web: func(context.Context) (api.WebStatus, error) {
			return api.WebStatus{Addr: "127.0.0.1:7777", URL: "http://127.0.0.1:7777/"}, nil
		},
	}
}

func find(t *testing.T, r Report, name string) Check {
	t.Helper()
	for _, c := range r.Checks {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no check %q in %+v", name, r.Checks)
	return Check{}
}

func TestRunAllOK(t *testing.T) {
	h := newHost(t)
	r := Run(t.Context(), h.options())
	wantNames := []string{"/dev/kvm", "firecracker", "qemu-system-x86_64", "mkfs.ext4", "debootstrap",
		"depmod", "vmm user", "ip forwarding", "/dev/net/tun", "nftables", "sudo", "disk space", "bangerd", "web ui"}
	var names []string
	for _, c := range r.Checks {
		names = append(names, c.Name)
		if c.Status != StatusOK || c.Fix != "" {
			t.Errorf("check %s = %s %q fix %q, want ok and no fix", c.Name, c.Status, c.Detail, c.Fix)
		}
	}
	if diff := cmp.Diff(wantNames, names); diff != "" {
		t.Errorf("check names (-want +got):\n%s", diff)
	}
	if !r.OK() {
		t.Error("OK() = false, want true")
	}
	if got := find(t, r, "firecracker").Detail; got != h.bins["firecracker"]+" version 1.16.1 (supported API)" {
		t.Errorf("firecracker detail = %q", got)
	}
	if r.VMM != "firecracker" || r.Accel != vmm.AccelKVM {
		t.Errorf("VMM = %s (%s), want firecracker (kvm)", r.VMM, r.Accel)
	}
}

// TestChecks covers each check's ok/warn/fail outcomes.
func TestChecks(t *testing.T) {
	tests := []struct {
		name     string
		setup    func(h *host, o *Options)
		check    string
		status   Status
		required bool
		detail   string // fragment
		fix      string // fragment; "" means Fix must be empty
	}{
		{"kvm missing", func(h *host, o *Options) { h.remove("kvm") }, "/dev/kvm", StatusWarn, false,
			"is missing: qemu will use software emulation (slow)", "load kvm_intel or kvm_amd"},
		{"kvm missing with vmm firecracker", func(h *host, o *Options) { h.remove("kvm"); o.Config.VMM = "firecracker" },
			"/dev/kvm", StatusFail, true, "vmm = firecracker needs it", "kvm group"},
		{"kvm not usable", func(h *host, o *Options) { o.DevKVM = h.dir }, "/dev/kvm", StatusWarn, false,
			"is not usable", "sudo usermod -aG kvm $USER"},
		{"firecracker missing auto", func(h *host, o *Options) { delete(h.bins, "firecracker") }, "firecracker",
			StatusWarn, false, `"firecracker" not found; vmm = auto uses qemu instead`, "firecracker/releases"},
		{"firecracker missing required", func(h *host, o *Options) { delete(h.bins, "firecracker"); o.Config.VMM = "firecracker" },
			"firecracker", StatusFail, true, "vmm = firecracker needs it", "firecracker_bin"},
		{"firecracker missing with vmm qemu", func(h *host, o *Options) { delete(h.bins, "firecracker"); o.Config.VMM = "qemu" },
			"firecracker", StatusOK, false, "not needed with vmm = qemu", ""},
		{"firecracker configured path", func(h *host, o *Options) { o.Config.FirecrackerBin = h.bins["firecracker"] },
			"firecracker", StatusOK, false, "version 1.16.1 (supported API)", ""},
		{"firecracker too old", func(h *host, o *Options) { h.bin("firecracker", "#!/bin/sh\necho Firecracker v1.12.0\n") },
			"firecracker", StatusWarn, false, "is version 1.12.0; banger supports API 1.16.0", "1.16.0"},
		{"firecracker broken", func(h *host, o *Options) { h.bin("firecracker", "#!/bin/sh\necho boom >&2\nexit 3\n") },
			"firecracker", StatusWarn, false, "does not run", "releases"},
		{"qemu missing not needed", func(h *host, o *Options) { delete(h.bins, "qemu-system-x86_64") },
			"qemu-system-x86_64", StatusWarn, false, "not found", "sudo apt-get install qemu-system-x86"},
		{"qemu missing and chosen", func(h *host, o *Options) { delete(h.bins, "qemu-system-x86_64"); h.remove("kvm") },
			"qemu-system-x86_64", StatusFail, true, "it is the VMM here", "sudo apt-get install qemu-system-x86"},
		{"qemu missing vmm qemu", func(h *host, o *Options) { delete(h.bins, "qemu-system-x86_64"); o.Config.VMM = "qemu" },
			"qemu-system-x86_64", StatusFail, true, "not found", "qemu-system-x86"},
		{"qemu found", func(h *host, o *Options) { o.Config.VMM = "qemu" }, "qemu-system-x86_64", StatusOK, true,
			"QEMU emulator version 7.2.15", ""},
		{"mkfs missing", func(h *host, o *Options) { delete(h.bins, "mkfs.ext4") }, "mkfs.ext4", StatusFail, true,
			"e2fsprogs", "sudo apt-get install e2fsprogs"},
		{"mkfs in sbin only", func(h *host, o *Options) {
			h.bins["/usr/sbin/mkfs.ext4"] = h.bins["mkfs.ext4"]
			delete(h.bins, "mkfs.ext4")
		}, "mkfs.ext4", StatusOK, true, "mke2fs 1.47.0", ""},
		{"debootstrap missing", func(h *host, o *Options) { delete(h.bins, "debootstrap") }, "debootstrap", StatusWarn, false,
			"needed to build the debian-bookworm image (the default image)", "sudo apt-get install debootstrap"},
		{"ip forwarding off", func(h *host, o *Options) { h.file("ip_forward", "0\n") }, "ip forwarding", StatusWarn, false,
			"banger enables it when the first VM starts", "sysctl -w net.ipv4.ip_forward=1"},
		{"ip forwarding unreadable", func(h *host, o *Options) { h.remove("ip_forward") }, "ip forwarding", StatusWarn, false,
			"cannot read", "sysctl"},
		{"vmm user missing", func(h *host, o *Options) { o.VMMUser = func() error { return errors.New("unknown user") } }, "vmm user", StatusWarn, false,
			"VMMs run as root", "sudo make install"},
		{"tun missing", func(h *host, o *Options) { h.remove("tun") }, "/dev/net/tun", StatusFail, true,
			"is missing", "sudo modprobe tun"},
		{"tun not openable as user", func(h *host, o *Options) { o.DevTun = h.dir; o.IsRoot = func() bool { return false } },
			"/dev/net/tun", StatusWarn, true, "bangerd opens it as root", "sudo banger doctor"},
		{"tun not openable as root", func(h *host, o *Options) { o.DevTun = h.dir }, "/dev/net/tun", StatusFail, true,
			"is not usable", "sudo modprobe tun"},
		{"nftables ok as root", func(h *host, o *Options) {}, "nftables", StatusOK, true,
			"nftables v1.0.6 (Lester Gooch #5), nf_tables reachable over netlink", ""},
		{"nftables no cli as root", func(h *host, o *Options) { delete(h.bins, "nft") }, "nftables", StatusOK, true,
			"nft CLI not installed; optional", ""},
		{"nftables kernel missing", func(h *host, o *Options) {
			o.NFTables = func(context.Context) error { return errors.New("protocol not supported") }
		}, "nftables", StatusFail, true, "not reachable over netlink: protocol not supported", "sudo modprobe nf_tables"},
		{"nftables no cli as user", func(h *host, o *Options) { delete(h.bins, "nft"); o.IsRoot = func() bool { return false } },
			"nftables", StatusWarn, true, "can only be probed as root", "sudo apt-get install nftables"},
		{"nftables cli as user", func(h *host, o *Options) {
			o.IsRoot = func() bool { return false }
			o.NFTables = func(context.Context) error { panic("probed as non-root") }
		}, "nftables", StatusOK, true, "nftables v1.0.6", ""},
		{"sudo as root", func(h *host, o *Options) { delete(h.bins, "sudo") }, "sudo", StatusOK, false, "running as root", ""},
		{"sudo as user", func(h *host, o *Options) { o.IsRoot = func() bool { return false } }, "sudo", StatusOK, false,
			"starts bangerd through it", ""},
		{"sudo missing as user", func(h *host, o *Options) { delete(h.bins, "sudo"); o.IsRoot = func() bool { return false } },
			"sudo", StatusWarn, false, "cannot start bangerd for you", "install sudo"},
		{"disk low", func(h *host, o *Options) { o.FreeBytes = func(string) (uint64, error) { return 5 * gib, nil } },
			"disk space", StatusWarn, true, "5.0 GiB free", "BANGER_HOME"},
		{"disk very low", func(h *host, o *Options) { o.FreeBytes = func(string) (uint64, error) { return gib, nil } },
			"disk space", StatusFail, true, "needs at least 2 GiB", "BANGER_HOME"},
		{"disk nearest existing parent", func(h *host, o *Options) {
			o.FreeBytes = func(p string) (uint64, error) {
				if p != h.dir {
					return 0, errors.New("statfs of a missing dir " + p)
				}
				return 20 * gib, nil
			}
		}, "disk space", StatusOK, true, "does not exist yet", ""},
		{"disk unmeasurable", func(h *host, o *Options) { o.FreeBytes = func(string) (uint64, error) { return 0, errors.New("EIO") } },
			"disk space", StatusWarn, true, "cannot measure free space", "readable"},
		{"daemon down", func(h *host, o *Options) {
			o.DaemonCheck = func(context.Context) error { return errors.New("no socket") }
		}, "bangerd", StatusWarn, false, "not running (no socket); it starts on the first banger command", "sudo bangerd --foreground"},
		{"web served", func(h *host, o *Options) {}, "web ui", StatusOK, false, "served at http://127.0.0.1:7777/", ""},
		{"web port in use", func(h *host, o *Options) {
			o.Web = func(context.Context) (api.WebStatus, error) {
				return api.WebStatus{Addr: "127.0.0.1:7777", Error: "listen tcp 127.0.0.1:7777: bind: address already in use"}, nil
			}
		}, "web ui", StatusFail, false, "not served on 127.0.0.1:7777: listen tcp 127.0.0.1:7777: bind: address already in use", "free that port"},
		{"web disabled", func(h *host, o *Options) {
			o.Web = func(context.Context) (api.WebStatus, error) { return api.WebStatus{}, nil }
		}, "web ui", StatusOK, false, "disabled", ""},
		{"web remote", func(h *host, o *Options) {
			o.Web = func(context.Context) (api.WebStatus, error) {
				return api.WebStatus{Addr: "0.0.0.0:7777", URL: "http://0.0.0.0:7777/", Remote: true}, nil
			}
		}, "web ui", StatusWarn, false, "beyond loopback", "127.0.0.1"},
		{"web daemon down", func(h *host, o *Options) {
			o.Web = func(context.Context) (api.WebStatus, error) { return api.WebStatus{}, errors.New("no socket") }
		}, "web ui", StatusWarn, false, "bangerd does not answer", "starts with bangerd"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHost(t)
			o := h.options()
			tt.setup(h, &o)
			r := Run(t.Context(), o)
			c := find(t, r, tt.check)
			if c.Status != tt.status || c.Required != tt.required {
				t.Errorf("status = %s required = %v, want %s %v (detail %q)", c.Status, c.Required, tt.status, tt.required, c.Detail)
			}
			if !strings.Contains(c.Detail, tt.detail) {
				t.Errorf("detail = %q, want it to contain %q", c.Detail, tt.detail)
			}
			if (tt.fix == "") != (c.Fix == "") || !strings.Contains(c.Fix, tt.fix) {
				t.Errorf("fix = %q, want %q", c.Fix, tt.fix)
			}
			if strings.Contains(c.Detail, "\n") {
				t.Errorf("detail spans lines: %q", c.Detail)
			}
			if want := !(c.Required && c.Status == StatusFail); r.OK() != want {
				t.Errorf("OK() = %v, want %v", r.OK(), want)
			}
		})
	}
}
