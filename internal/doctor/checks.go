package doctor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"banger/internal/config"
	"banger/internal/vmm/fchost"
)

const (
	fixQEMU        = "sudo apt-get install qemu-system-x86"
	fixE2fsprogs   = "sudo apt-get install e2fsprogs"
	fixDebootstrap = "sudo apt-get install debootstrap"
	fixNFTables    = "sudo apt-get install nftables"
	fixFirecracker = "install a firecracker release binary into PATH " +
		"(https://github.com/firecracker-microvm/firecracker/releases), or set firecracker_bin in config.toml"
)

func checkKVM(o Options, kvmErr error) Check {
	c := Check{Name: "/dev/kvm", Required: o.Config.VMM == config.VMMFirecracker}
	if kvmErr == nil {
		c.Status, c.Detail = StatusOK, "present and usable"
		return c
	}
	c.Status = StatusWarn
	if c.Required {
		c.Status = StatusFail
	}
	if o.Config.VMM == config.VMMFirecracker {
		c.Detail = fmt.Sprintf("%v; vmm = firecracker needs it", kvmErr)
	} else {
		c.Detail = fmt.Sprintf("%v: qemu will use software emulation (slow)", kvmErr)
	}
	if strings.Contains(kvmErr.Error(), "QEMU cannot use it") || strings.Contains(kvmErr.Error(), "did not answer") {
		c.Fix = "nothing to do for banger: this host's KVM is broken (common on nested hosts), so qemu uses " +
			"software emulation; for KVM speed, run on a host whose KVM works (check with: " +
			"qemu-system-x86_64 -M microvm,accel=kvm -cpu host -S -display none)"
	} else if _, err := os.Stat(o.DevKVM); err == nil {
		c.Fix = "sudo usermod -aG kvm $USER, then log in again"
	} else {
		c.Fix = "load kvm_intel or kvm_amd (sudo modprobe kvm_intel), or run on a host with " +
			"nested virtualization; add your user to the kvm group"
	}
	return c
}

func checkFirecracker(ctx context.Context, o Options, path string, findErr error) Check {
	c := Check{Name: "firecracker", Required: o.Config.VMM == config.VMMFirecracker}
	bin := o.Config.FirecrackerBin
	if findErr != nil {
		switch o.Config.VMM {
		case config.VMMFirecracker:
			c.Status, c.Fix = StatusFail, fixFirecracker
			c.Detail = fmt.Sprintf("%q not found; vmm = firecracker needs it", bin)
		case config.VMMQEMU:
			c.Status = StatusOK
			c.Detail = fmt.Sprintf("%q not found; not needed with vmm = qemu", bin)
		default:
			c.Status, c.Fix = StatusWarn, fixFirecracker
			c.Detail = fmt.Sprintf("%q not found; vmm = auto uses qemu instead", bin)
		}
		return c
	}
	ver, err := fchost.Probe(ctx, path)
	switch {
	case err != nil:
		c.Status, c.Fix = StatusWarn, fixFirecracker
		c.Detail = fmt.Sprintf("%s does not run: %v", path, err)
	case !fchost.SupportedAPIVersion(ver):
		c.Status, c.Fix = StatusWarn, "install firecracker "+fchost.MinAPIVersion+" or a later 1.x release"
		c.Detail = fmt.Sprintf("%s is version %s; banger supports API %s and later 1.x", path, ver, fchost.MinAPIVersion)
	default:
		c.Status = StatusOK
		c.Detail = fmt.Sprintf("%s version %s (supported API)", path, ver)
	}
	if c.Status != StatusOK && o.Config.VMM == config.VMMFirecracker {
		c.Status = StatusFail
	}
	return c
}

func checkJailer(o Options, choice Choice) Check {
	c := Check{Name: "jailer", Required: choice.VMM == config.VMMFirecracker}
	path, err := o.find(o.Config.JailerBin)
	if err == nil {
		c.Status, c.Detail = StatusOK, "at "+path
		return c
	}
	c.Status = StatusWarn
	if c.Required {
		c.Status = StatusFail
	}
	c.Detail = fmt.Sprintf("jailer_bin %q not found", o.Config.JailerBin)
	c.Fix = "install the jailer from the firecracker release, or remove jailer_bin from config.toml"
	return c
}

func checkQEMU(ctx context.Context, o Options, choice Choice) Check {
	c := Check{Name: "qemu-system-x86_64", Required: choice.VMM == config.VMMQEMU}
	path, err := o.find(o.Config.QEMUBin)
	if err != nil {
		c.Status, c.Fix = StatusWarn, fixQEMU
		if c.Required {
			c.Status = StatusFail
		}
		c.Detail = fmt.Sprintf("%q not found; banger uses qemu when firecracker cannot run", o.Config.QEMUBin)
		if c.Required {
			c.Detail = fmt.Sprintf("%q not found; it is the VMM here (%s)", o.Config.QEMUBin, choice.Reason)
		}
		return c
	}
	return versionCheck(ctx, c, path, fixQEMU, "--version")
}

func checkMkfs(ctx context.Context, o Options) Check {
	c := Check{Name: "mkfs.ext4", Required: true}
	path, err := o.find("mkfs.ext4")
	if err != nil {
		c.Status, c.Fix = StatusFail, fixE2fsprogs
		c.Detail = "mkfs.ext4 (e2fsprogs) not found; images are built as ext4 file systems"
		return c
	}
	return versionCheck(ctx, c, path, fixE2fsprogs, "-V")
}

func checkDebootstrap(ctx context.Context, o Options) Check {
	c := Check{Name: "debootstrap"}
	path, err := o.find("debootstrap")
	if err != nil {
		c.Status, c.Fix = StatusWarn, fixDebootstrap
		c.Detail = "not found; needed to build the debian-bookworm image"
		if o.Config.DefaultImageName == "debian-bookworm" {
			c.Detail += " (the default image)"
		}
		return c
	}
	return versionCheck(ctx, c, path, fixDebootstrap, "--version")
}

func checkDepmod(o Options) Check {
	c := Check{Name: "depmod", Required: true}
	path, err := o.find("depmod")
	if err != nil {
		c.Status, c.Fix = StatusFail, "sudo apt-get install kmod"
		c.Detail = "not found; kernel bundles need it to index the guest's modules"
		return c
	}
	c.Status, c.Detail = StatusOK, "at "+path
	return c
}

func checkIPForward(o Options) Check {
	c := Check{Name: "ip forwarding"}
	b, err := os.ReadFile(o.IPForwardPath)
	switch v := strings.TrimSpace(string(b)); {
	case err != nil:
		c.Status, c.Detail = StatusWarn, fmt.Sprintf("cannot read %s: %v", o.IPForwardPath, unwrapPath(err))
		c.Fix = "none needed: banger enables it when the first VM starts (sudo sysctl -w net.ipv4.ip_forward=1 to do it now)"
	case v == "1":
		c.Status, c.Detail = StatusOK, "enabled (host-wide; banger never turns it back off)"
	default:
		c.Status, c.Detail = StatusWarn, "disabled; banger enables it when the first VM starts, for the whole host, and never turns it back off"
		c.Fix = "none needed (or now: sudo sysctl -w net.ipv4.ip_forward=1; to undo after banger: sudo sysctl -w net.ipv4.ip_forward=0)"
	}
	return c
}

func checkVMMUser(o Options) Check {
	c := Check{Name: "vmm user"}
	if err := o.VMMUser(); err != nil {
		c.Status = StatusWarn
		c.Detail = fmt.Sprintf("user %s is missing: bangerd creates it at start if it can, else VMMs run as root", config.VMMUser)
		c.Fix = "sudo make install (or: sudo useradd --system --user-group --no-create-home --shell /usr/sbin/nologin " + config.VMMUser + ")"
		return c
	}
	c.Status, c.Detail = StatusOK, fmt.Sprintf("QEMU drops to %s (-runas) and runs under seccomp (-sandbox)", config.VMMUser)
	return c
}

func checkTun(o Options) Check {
	c := Check{Name: "/dev/net/tun", Required: true}
	f, err := os.OpenFile(o.DevTun, os.O_RDWR, 0)
	switch {
	case err == nil:
		f.Close()
		c.Status, c.Detail = StatusOK, "present and usable"
	case errors.Is(err, fs.ErrNotExist):
		c.Status, c.Detail = StatusFail, o.DevTun+" is missing; VM networking needs tap devices"
		c.Fix = "sudo modprobe tun"
	case o.IsRoot():
		c.Status, c.Detail = StatusFail, fmt.Sprintf("%s is not usable: %v", o.DevTun, unwrapPath(err))
		c.Fix = "sudo modprobe tun"
	default:
		// bangerd runs as root; an unprivileged open failing says little.
		c.Status = StatusWarn
		c.Detail = fmt.Sprintf("%s cannot be opened by this user (%v); bangerd opens it as root", o.DevTun, unwrapPath(err))
		c.Fix = "run sudo banger doctor to check it as root"
	}
	return c
}

func checkNFTables(ctx context.Context, o Options) Check {
	c := Check{Name: "nftables", Required: true}
	path, findErr := o.find("nft")
	version := ""
	if findErr == nil {
		version, _ = commandVersion(ctx, path, "--version")
	}
	if !o.IsRoot() {
		if findErr != nil {
			c.Status, c.Fix = StatusWarn, fixNFTables
			c.Detail = "nft not found, and nf_tables can only be probed as root"
			return c
		}
		c.Status, c.Detail = StatusOK, joinNonEmpty(version, "at "+path)
		return c
	}
	if err := o.NFTables(ctx); err != nil {
		c.Status, c.Fix = StatusFail, "sudo modprobe nf_tables; "+fixNFTables
		c.Detail = fmt.Sprintf("nf_tables is not reachable over netlink: %v; NAT for VMs needs it", err)
		return c
	}
	c.Status = StatusOK
	c.Detail = joinNonEmpty(version, "nf_tables reachable over netlink")
	if findErr != nil {
		c.Detail += " (nft CLI not installed; optional)"
	}
	return c
}

func checkSudo(o Options) Check {
	c := Check{Name: "sudo"}
	if o.IsRoot() {
		c.Status, c.Detail = StatusOK, "running as root"
		return c
	}
	path, err := o.find("sudo")
	if err != nil {
		c.Status = StatusWarn
		c.Detail = "sudo not found and not root: banger cannot start bangerd for you"
		c.Fix = "run banger as root, or install sudo (as root: apt-get install sudo)"
		return c
	}
	c.Status, c.Detail = StatusOK, "at "+path+"; banger starts bangerd through it"
	return c
}

func checkDaemon(ctx context.Context, o Options) Check {
	c := Check{Name: "bangerd"}
	if err := o.DaemonCheck(ctx); err != nil {
		c.Status = StatusWarn
		c.Detail = fmt.Sprintf("not running (%v); it starts on the first banger command", err)
		c.Fix = "none needed; to see why it does not start: sudo bangerd --foreground"
		return c
	}
	c.Status, c.Detail = StatusOK, "running"
	return c
}

// checkWeb reports the daemon's web UI: served, disabled, exposed
// beyond loopback, or not served and why (the port in use, say). The UI is
// never required: the daemon serves the API without it.
func checkWeb(ctx context.Context, o Options) Check {
	c := Check{Name: "web ui"}
	ws, err := o.Web(ctx)
	switch {
	case err != nil:
		c.Status, c.Detail = StatusWarn, fmt.Sprintf("unknown: bangerd does not answer (%v)", err)
		c.Fix = "none needed; it starts with bangerd"
	case ws.Addr == "":
		c.Status, c.Detail = StatusOK, `disabled (web_listen_addr = "")`
	case ws.Error != "":
		c.Status, c.Detail = StatusFail, fmt.Sprintf("not served on %s: %s", ws.Addr, ws.Error)
		c.Fix = "free that port, or set web_listen_addr to a free host:port (or \"\" to disable) in config.toml, then: banger daemon stop"
	case ws.Remote:
		c.Status, c.Detail = StatusWarn, fmt.Sprintf("served at %s beyond loopback (web_allow_remote = true): it has no login, anyone who reaches it drives your VMs", ws.URL)
		c.Fix = "bind web_listen_addr to 127.0.0.1 and reach it over ssh -L, unless you trust that network"
	default:
		c.Status, c.Detail = StatusOK, "served at "+ws.URL
	}
	return c
}

func joinNonEmpty(parts ...string) string {
	var out []string
	for _, p := range parts {
		if p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, ", ")
}

// unwrapPath drops the "open /path:" prefix of a *fs.PathError, for
// messages that name the path already.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
