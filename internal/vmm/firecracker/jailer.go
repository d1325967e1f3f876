package firecracker

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"

	"banger/internal/vmm"
)

// Jailer layout (Firecracker docs/jailer.md): the jailer chroots
// firecracker into <chroot-base>/<exec-file name>/<id>/root, drops to
// --uid/--gid and execs firecracker with the arguments after "--". Every
// file firecracker opens must be inside that root, so the kernel, initrd
// and drives are hard-linked into it, and sockets and logs live in it.
// banger uses <spec.Dir>/jail as the chroot base.

// jailerCommand builds the jailer command line and the layout seen from
// inside the jail.
func (d *Driver) jailerCommand(spec vmm.Spec) (*layout, *exec.Cmd, error) {
	id := instanceID(spec)
	jailDir := filepath.Join(spec.Dir, "jail", filepath.Base(d.opts.Bin), id)
	root := filepath.Join(jailDir, "root")
	if p := filepath.Join(root, VsockSocketName) + "_4294967295"; len(p) > 107 {
		return nil, nil, fmt.Errorf("jail root %s is too long for Unix socket paths: use a shorter vm directory or id", root)
	}
	if live(filepath.Join(root, APISocketName)) {
		return nil, nil, fmt.Errorf("a firecracker already serves %s: stop it first", filepath.Join(root, APISocketName))
	}
	if err := os.RemoveAll(jailDir); err != nil {
		return nil, nil, fmt.Errorf("removing stale jail: %w", err)
	}
	exe, err := exec.LookPath(d.opts.Bin)
	if err != nil {
		return nil, nil, fmt.Errorf("finding firecracker for the jailer: %w", err)
	}
	if exe, err = filepath.Abs(exe); err != nil {
		return nil, nil, err
	}
	// The jailed firecracker creates its sockets, log and snapshots here.
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, nil, fmt.Errorf("creating jail: %w", err)
	}
	if err := os.Chown(root, d.opts.JailerUID, d.opts.JailerGID); err != nil {
		return nil, nil, fmt.Errorf("giving the jail to the jailer user: %w", err)
	}
	lay := jailLayout(spec, root, id, d.opts.JailerUID, d.opts.JailerGID)
	args := []string{
		"--id", id,
		"--exec-file", exe,
		"--uid", strconv.Itoa(d.opts.JailerUID),
		"--gid", strconv.Itoa(d.opts.JailerGID),
		"--chroot-base-dir", filepath.Join(spec.Dir, "jail"),
	}
	args = append(args, d.opts.JailerArgs...)
	args = append(args, "--", "--api-sock", lay.apiSockArg)
	return lay, exec.Command(d.opts.JailerBin, args...), nil
}

// jailLayout is the layout of a VM jailed in root.
func jailLayout(spec vmm.Spec, root, id string, uid, gid int) *layout {
	return &layout{
		dir:        spec.Dir,
		jailRoot:   root,
		apiSock:    filepath.Join(root, APISocketName),
		apiSockArg: "/" + APISocketName,
		cmdlineArg: id,
		vsock:      filepath.Join(root, VsockSocketName),
		vsockArg:   "/" + VsockSocketName,
		log:        filepath.Join(root, LogName),
		logArg:     "/" + LogName,
		metrics:    filepath.Join(root, MetricsName),
		metricsArg: "/" + MetricsName,
		guestPath:  jailLinker(root, uid, gid),
		drivePath: func(id, host string) (string, error) {
			return linkIntoJail(root, driveName(id), host, uid, gid)
		},
		owner: &[2]int{uid, gid},
		clean: func() { _ = os.RemoveAll(filepath.Join(spec.Dir, "jail")) },
	}
}

// jailLinker returns a guestPath function that hard-links host files into
// root and returns their path inside the jail. Links share the inode, so
// they are given to uid:gid for the jailed firecracker to open them.
func jailLinker(root string, uid, gid int) func(string) (string, error) {
	var mu sync.Mutex
	linked := map[string]string{}
	return func(host string) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		if p, ok := linked[host]; ok {
			return p, nil
		}
		p, err := linkIntoJail(root, fmt.Sprintf("%d-%s", len(linked), filepath.Base(host)), host, uid, gid)
		if err != nil {
			return "", err
		}
		linked[host] = p
		return p, nil
	}
}

// linkIntoJail hard-links host to root/name, gives it to uid:gid and
// returns its path inside the jail.
func linkIntoJail(root, name, host string, uid, gid int) (string, error) {
	if err := os.Link(host, filepath.Join(root, name)); err != nil {
		return "", fmt.Errorf("linking %s into the jail (it must be on the same filesystem as the vm directory): %w", host, err)
	}
	if err := os.Chown(filepath.Join(root, name), uid, gid); err != nil {
		return "", fmt.Errorf("giving %s to the jail user: %w", host, err)
	}
	return "/" + name, nil
}
