package image

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"banger/internal/guest"
)

// Tree facts found while banger's pieces go in.
type TreeInfo struct {
	Distro  string // e.g. debian-bookworm, alpine-3.20.3; "" when unknown
	HasSSHD bool   // /usr/sbin/sshd was there before banger touched the tree
	Init    string // "systemd", "busybox", "sysvinit" or "" (the agent becomes PID 1)
}

// SSHDInstaller is the first-boot script that installs openssh-server.
const SSHDInstaller = "/usr/lib/banger/install-sshd"

const sshdUnitName = "banger-install-sshd.service"

// installSSHD installs openssh-server with the guest's package manager
// when the guest has network. It is best effort and never blocks boot:
// systemd and init run it in the background; exec over the agent works
// meanwhile.
const installSSHD = `#!/bin/sh
# banger: install openssh-server on first boot (best effort).
exec >>/var/log/banger-install-sshd.log 2>&1
[ -x /usr/sbin/sshd ] && exit 0
i=0
until [ -s /etc/resolv.conf ] && { getent hosts deb.debian.org || nslookup dl-cdn.alpinelinux.org; } >/dev/null 2>&1; do
	i=$((i+1)); [ $i -gt 30 ] && { echo "no network: not installing openssh-server"; exit 0; }
	sleep 2
done
if command -v apt-get >/dev/null; then
	DEBIAN_FRONTEND=noninteractive apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openssh-server
elif command -v apk >/dev/null; then
	apk add --no-cache openssh-server && ssh-keygen -A && { rc-update add sshd default 2>/dev/null; /usr/sbin/sshd; }
elif command -v dnf >/dev/null; then
	dnf install -y openssh-server && ssh-keygen -A && { systemctl enable --now sshd 2>/dev/null || /usr/sbin/sshd; }
else
	echo "no known package manager: not installing openssh-server"
fi
`

const sshdUnit = `[Unit]
Description=banger: install openssh-server on first boot
ConditionPathExists=!/usr/sbin/sshd
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
ExecStart=` + SSHDInstaller + `

[Install]
WantedBy=multi-user.target
`

// PrepareTree puts banger's pieces into the root filesystem tree root:
// the agent (with its systemd unit, or a respawn line in a busybox or
// sysvinit inittab), and, when the tree has no sshd, a first-boot
// installer for it. Trees without an init system need nothing more:
// banger's initrd runs the agent as PID 1. It refuses trees whose
// directories that banger writes to are symlinks leading out of root.
func PrepareTree(root, agentBin string) (TreeInfo, error) {
	info := TreeInfo{Distro: osRelease(root), HasSSHD: existsInRoot(root, "usr/sbin/sshd") || existsInRoot(root, "sbin/sshd")}
	switch {
	case HasSystemd(root):
		info.Init = "systemd"
	case isBusybox(root, "sbin/init"):
		info.Init = "busybox"
	case existsInRoot(root, "sbin/init") && existsInRoot(root, "etc/inittab"):
		info.Init = "sysvinit"
	}
	dirs := []string{"usr/lib/banger"}
	if info.Init == "systemd" {
		dirs = append(dirs, "etc/systemd/system")
	}
	for _, d := range dirs {
		if err := safeDir(root, d); err != nil {
			return TreeInfo{}, err
		}
	}
	if err := InjectAgent(root, agentBin); err != nil {
		return TreeInfo{}, fmt.Errorf("injecting agent: %w", err)
	}
	var lines []string
	switch info.Init {
	case "busybox":
		lines = append(lines, "::respawn:"+guest.AgentPath)
	case "sysvinit":
		lines = append(lines, "bgr:2345:respawn:"+guest.AgentPath)
	}
	if !info.HasSSHD {
		if err := writeAtomicBytes(filepath.Join(root, SSHDInstaller), []byte(installSSHD), 0o755); err != nil {
			return TreeInfo{}, err
		}
		switch info.Init {
		case "systemd":
			if err := enableUnit(root, sshdUnitName, sshdUnit, "multi-user.target.wants"); err != nil {
				return TreeInfo{}, err
			}
		case "busybox":
			lines = append(lines, "::once:"+SSHDInstaller)
		case "sysvinit":
			lines = append(lines, "bgs:2345:once:"+SSHDInstaller)
		}
	}
	if err := addInittab(root, info.Init, lines); err != nil {
		return TreeInfo{}, err
	}
	return info, nil
}

func enableUnit(root, name, body, wants string) error {
	dir := filepath.Join(root, "etc/systemd/system")
	if err := writeAtomicBytes(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
		return err
	}
	return relink("/etc/systemd/system/"+name, filepath.Join(dir, wants, name))
}

// addInittab appends lines to /etc/inittab, once. A busybox tree without
// one gets busybox's defaults written out first.
func addInittab(root, init string, lines []string) error {
	if len(lines) == 0 {
		return nil
	}
	if err := safeDir(root, "etc"); err != nil {
		return err
	}
	p := filepath.Join(root, "etc/inittab")
	cur, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) && init == "busybox" {
		cur = []byte("::sysinit:/etc/init.d/rcS\n::ctrlaltdel:/sbin/reboot\n::shutdown:/bin/umount -a -r\n")
	} else if err != nil {
		return fmt.Errorf("reading /etc/inittab: %w", err)
	}
	out := string(cur)
	if out != "" && !strings.HasSuffix(out, "\n") {
		out += "\n"
	}
	for _, l := range lines {
		if !strings.Contains(out, l+"\n") {
			out += l + "\n"
		}
	}
	return writeAtomicBytes(p, []byte(out), 0o644)
}

// safeDir makes sure writing under root/rel with host paths lands where
// the guest will see it: the directory is created (resolved inside root)
// and must resolve to the same place on the host.
func safeDir(root, rel string) error {
	f := NewFlattener(root)
	dir, _, err := f.resolveParent(rel+"/x", true)
	if err != nil {
		return fmt.Errorf("preparing /%s: %w", rel, err)
	}
	host, err := filepath.EvalSymlinks(filepath.Join(root, rel))
	if want := filepath.Join(root, dir); err != nil || host != want {
		return fmt.Errorf("%w: /%s is a symlink banger cannot follow safely", ErrUnsafeEntry, rel)
	}
	return nil
}

// resolveInRoot resolves rel inside root, following every symlink as if
// root were "/". It returns the host path.
func resolveInRoot(root, rel string) (string, error) {
	f := NewFlattener(root)
	for range maxSymlinks {
		dir, name, err := f.resolveParent(rel, false)
		if err != nil {
			return "", err
		}
		p := filepath.Join(root, dir, name)
		target, err := os.Readlink(p)
		if err != nil {
			return p, nil // not a symlink (or missing: the caller's Stat says)
		}
		if !strings.HasPrefix(target, "/") {
			target = join(dir, target)
		}
		rel = target
	}
	return "", fmt.Errorf("/%s: too many levels of symlinks", rel)
}

func existsInRoot(root, rel string) bool {
	p, err := resolveInRoot(root, rel)
	if err != nil {
		return false
	}
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

func isBusybox(root, rel string) bool {
	p, err := resolveInRoot(root, rel)
	return err == nil && filepath.Base(p) == "busybox" && existsInRoot(root, rel)
}

func osRelease(root string) string {
	for _, rel := range []string{"etc/os-release", "usr/lib/os-release"} {
		if p, err := resolveInRoot(root, rel); err == nil {
			if b, err := os.ReadFile(p); err == nil {
				return parseOSRelease(b)
			}
		}
	}
	return ""
}
