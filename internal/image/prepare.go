package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
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

// prepare puts banger's pieces into the image's tree: the agent (with its
// systemd unit, or a respawn line in a busybox or sysvinit inittab), an
// Include of sshd_config.d in an sshd_config without one (banger's
// per-VM sshd settings go there), and, when the image has no sshd, a
// first-boot installer for it. Images without an init system need
// nothing more: banger's initrd runs the agent as PID 1. Everything is an
// edit of the in-memory tree: an image's symlinks lead only to other
// places in the image.
func (r *rootfs) prepare(ctx context.Context, agentBin string) (TreeInfo, error) {
	info := TreeInfo{Distro: r.osRelease(ctx), HasSSHD: r.isFile("usr/sbin/sshd") || r.isFile("sbin/sshd")}
	switch {
	case r.hasSystemd():
		info.Init = "systemd"
	case r.isBusybox("sbin/init"):
		info.Init = "busybox"
	case r.isFile("sbin/init") && r.exists("etc/inittab"):
		info.Init = "sysvinit"
	}
	if err := r.putFile(guest.AgentPath, &fileData{hostPath: agentBin}, 0o755); err != nil {
		return TreeInfo{}, fmt.Errorf("injecting agent: %w", err)
	}
	if info.Init == "systemd" {
		for _, wants := range agentWants {
			if err := r.enableUnit(AgentUnitName, agentUnit, wants); err != nil {
				return TreeInfo{}, fmt.Errorf("enabling agent unit: %w", err)
			}
		}
	}
	var lines []string
	switch info.Init {
	case "busybox":
		lines = append(lines, "::respawn:"+guest.AgentPath)
	case "sysvinit":
		lines = append(lines, "bgr:2345:respawn:"+guest.AgentPath)
	}
	if !info.HasSSHD {
		if err := r.putFile(SSHDInstaller, &fileData{body: []byte(installSSHD)}, 0o755); err != nil {
			return TreeInfo{}, err
		}
		switch info.Init {
		case "systemd":
			if err := r.enableUnit(sshdUnitName, sshdUnit, "multi-user.target.wants"); err != nil {
				return TreeInfo{}, err
			}
		case "busybox":
			lines = append(lines, "::once:"+SSHDInstaller)
		case "sysvinit":
			lines = append(lines, "bgs:2345:once:"+SSHDInstaller)
		}
	}
	if err := r.addInittab(ctx, info.Init, lines); err != nil {
		return TreeInfo{}, err
	}
	if err := r.includeSSHDDropIns(ctx); err != nil {
		return TreeInfo{}, err
	}
	return info, nil
}

func (r *rootfs) enableUnit(name, body, wants string) error {
	if err := r.putFile("etc/systemd/system/"+name, &fileData{body: []byte(body)}, 0o644); err != nil {
		return err
	}
	return r.putSymlink("/etc/systemd/system/"+name, "etc/systemd/system/"+wants+"/"+name)
}

// addInittab appends lines to /etc/inittab, once. A busybox tree without
// one gets busybox's defaults written out first.
func (r *rootfs) addInittab(ctx context.Context, init string, lines []string) error {
	if len(lines) == 0 {
		return nil
	}
	cur, err := r.readSmall(ctx, "etc/inittab")
	if errors.Is(err, fs.ErrNotExist) && init == "busybox" {
		cur = []byte("::sysinit:/etc/init.d/rcS\n::ctrlaltdel:/sbin/reboot\n::shutdown:/bin/umount -a -r\n")
	} else if err != nil {
		return fmt.Errorf("reading the image's /etc/inittab: %w", err)
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
	return r.putFile("etc/inittab", &fileData{body: []byte(out)}, 0o644)
}

// sshdInclude is the line that makes sshd read banger's drop-in.
const sshdInclude = "Include /etc/ssh/sshd_config.d/*.conf"

// includeSSHDDropIns adds sshdInclude at the top of an sshd_config that
// does not read sshd_config.d (sshd takes the first value of each
// setting, so the drop-ins must come first).
func (r *rootfs) includeSSHDDropIns(ctx context.Context) error {
	cur, err := r.readSmall(ctx, "etc/ssh/sshd_config")
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading the image's /etc/ssh/sshd_config: %w", err)
	}
	for _, l := range strings.Split(string(cur), "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && strings.EqualFold(f[0], "include") && strings.Contains(l, "sshd_config.d") {
			return nil
		}
	}
	body := "# added by banger: per-VM settings live in sshd_config.d\n" + sshdInclude + "\n\n" + string(cur)
	return r.putFile("etc/ssh/sshd_config", &fileData{body: []byte(body)}, 0o644)
}

// readSmall returns the content of the regular file at rel (symlinks
// followed inside the image) when banger kept it while reading the
// layers and it is at most captureMax bytes.
func (r *rootfs) readSmall(ctx context.Context, rel string) ([]byte, error) {
	n, real, err := r.lookup(rel, true)
	if err != nil {
		return nil, err
	}
	if n.file == nil {
		return nil, fmt.Errorf("/%s is not a regular file", real)
	}
	f := n.file
	if f.size > captureMax {
		return nil, fmt.Errorf("/%s is larger than %d KiB", real, captureMax>>10)
	}
	if int64(len(f.body)) != f.size {
		b, err := r.fetch(ctx, f)
		if err != nil {
			return nil, fmt.Errorf("reading /%s: %w", real, err)
		}
		f.body = b
	}
	return f.body, nil
}

// fetch reads a small file the layers were not kept for while they were
// read: from its layer again, or from banger's host tree.
func (r *rootfs) fetch(ctx context.Context, f *fileData) ([]byte, error) {
	if f.hostPath != "" {
		return readCapped(f.hostPath)
	}
	if f.layer < 1 || f.layer > len(r.layers) {
		return nil, fmt.Errorf("no layer %d", f.layer)
	}
	var out []byte
	err := r.layers[f.layer-1].each(ctx, func(n int, _ *tar.Header, body io.Reader) error {
		if n < f.entry {
			return nil
		}
		b, err := io.ReadAll(io.LimitReader(body, captureMax+1))
		out = b
		if err != nil {
			return err
		}
		return errStop
	})
	if err == nil && int64(len(out)) != f.size {
		err = fmt.Errorf("layer %d changed while the image was built", f.layer)
	}
	return out, err
}

// putFile puts a regular file at rel, owned by root, replacing what is
// there; a symlink there is followed inside the image. Missing parents
// are made 0755.
func (r *rootfs) putFile(rel string, f *fileData, mode int64) error {
	if f.hostPath != "" {
		st, err := os.Stat(f.hostPath)
		if err != nil {
			return err
		}
		f.size = st.Size()
	} else {
		f.size = int64(len(f.body))
	}
	if n, real, err := r.lookup(rel, true); err == nil {
		if n.isDir() {
			return fmt.Errorf("/%s is a directory in the image", real)
		}
		rel = real
	}
	return r.put(rel, &node{hdr: tar.Header{Typeflag: tar.TypeReg, Mode: mode, ModTime: now()}, file: f})
}

// putSymlink makes link a symlink to target, replacing what is there.
func (r *rootfs) putSymlink(target, link string) error {
	return r.put(link, &node{hdr: tar.Header{Typeflag: tar.TypeSymlink, Linkname: target, Mode: 0o777, ModTime: now()}})
}

func (r *rootfs) put(rel string, n *node) error {
	parent, name, err := r.resolveParent(rel, true, false)
	if err != nil {
		return fmt.Errorf("/%s: %w", rel, err)
	}
	if old := parent.dir.children[name]; old != nil && old.isDir() {
		return fmt.Errorf("/%s is a directory in the image", join(parent.path, name))
	}
	parent.dir.children[name] = n
	return nil
}

func (r *rootfs) exists(rel string) bool {
	_, _, err := r.lookup(rel, true)
	return err == nil
}

// isFile reports whether rel is a regular file, symlinks followed.
func (r *rootfs) isFile(rel string) bool {
	n, _, err := r.lookup(rel, true)
	return err == nil && n.file != nil
}

func (r *rootfs) hasSystemd() bool {
	return r.isFile("usr/lib/systemd/systemd") || r.isFile("lib/systemd/systemd")
}

func (r *rootfs) isBusybox(rel string) bool {
	n, real, err := r.lookup(rel, true)
	return err == nil && n.file != nil && path.Base(real) == "busybox"
}

func (r *rootfs) osRelease(ctx context.Context) string {
	for _, rel := range []string{"etc/os-release", "usr/lib/os-release"} {
		if b, err := r.readSmall(ctx, rel); err == nil {
			return parseOSRelease(b)
		}
	}
	return ""
}
