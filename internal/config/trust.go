package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// ErrUntrusted reports a state directory or config file that someone other
// than root and the user banger serves could change.
var ErrUntrusted = errors.New("not safe for banger")

// TrustedUIDs are the owners banger accepts for its directories and config:
// root, this process's user and, under sudo, the user who ran sudo.
func TrustedUIDs() []int {
	uids := []int{0, os.Geteuid()}
	if u, err := strconv.Atoi(os.Getenv("SUDO_UID")); err == nil {
		uids = append(uids, u)
	}
	return uids
}

// InvokingUID is the user the daemon serves: SUDO_UID under sudo, else this
// process's user.
func InvokingUID() int {
	if u, err := strconv.Atoi(os.Getenv("SUDO_UID")); err == nil && os.Geteuid() == 0 {
		return u
	}
	return os.Geteuid()
}

// InvokingGID is SUDO_GID under sudo, else this process's group.
func InvokingGID() int {
	if g, err := strconv.Atoi(os.Getenv("SUDO_GID")); err == nil && os.Geteuid() == 0 {
		return g
	}
	return os.Getegid()
}

// MkdirTrusted creates dir (and missing parents) with mode and checks that
// it and every ancestor can only be changed by a trusted user (see
// CheckTrustedDir). The ancestors that exist are checked before anything is
// created, so nothing is made under a directory someone else controls.
func MkdirTrusted(dir string, mode fs.FileMode) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if err := CheckTrustedExisting(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, mode); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	return CheckTrustedDir(dir)
}

// CheckTrustedExisting is CheckTrustedDir for the deepest part of dir's
// path that exists: dir itself when it does.
func CheckTrustedExisting(dir string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	existing := dir
	for {
		if _, err := os.Lstat(existing); err == nil || existing == "/" {
			break
		}
		existing = filepath.Dir(existing)
	}
	return CheckTrustedDir(existing)
}

// CheckTrustedDir checks dir and each of its ancestors: every one must be a
// real directory (not a symlink), owned by a trusted user (TrustedUIDs), and
// not writable by group or others. An ancestor (not dir itself) may be a
// root-owned sticky directory such as /tmp, where no one can rename what
// another owns. The error names the culprit and what to do.
func CheckTrustedDir(dir string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	trusted := TrustedUIDs()
	for p := dir; ; p = filepath.Dir(p) {
		if err := checkTrustedPath(dir, p, p == dir, trusted); err != nil {
			return err
		}
		if p == "/" {
			return nil
		}
	}
}

func checkTrustedPath(dir, p string, self bool, trusted []int) error {
	fi, err := os.Lstat(p)
	if err != nil {
		return fmt.Errorf("checking %s: %w", p, err)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		real, _ := filepath.EvalSymlinks(dir)
		return fmt.Errorf("directory %s: %w: %s is a symlink; banger follows no symlinks in its directories (set %s to the real path%s)",
			dir, ErrUntrusted, p, HomeEnv, orEmpty(": ", real))
	}
	if !fi.IsDir() {
		return fmt.Errorf("directory %s: %w: %s is not a directory", dir, ErrUntrusted, p)
	}
	st := fi.Sys().(*syscall.Stat_t)
	owner := int(st.Uid)
	if !contains(trusted, owner) {
		return fmt.Errorf("directory %s: %w: %s is owned by uid %d, not by root or you; set %s to a directory you own",
			dir, ErrUntrusted, p, owner, HomeEnv)
	}
	perm := fi.Mode().Perm()
	if perm&0o022 == 0 {
		return nil
	}
	if !self && owner == 0 && fi.Mode()&fs.ModeSticky != 0 {
		return nil // like /tmp: others may add entries but not move ours
	}
	return fmt.Errorf("directory %s: %w: %s is writable by group or others (mode %04o); run: chmod go-w %s (or set %s to a directory only you can write)",
		dir, ErrUntrusted, p, perm, p, HomeEnv)
}

// checkTrustedFile refuses a config file that an untrusted user owns or
// that group or others can write.
func checkTrustedFile(path string, fi fs.FileInfo) error {
	st := fi.Sys().(*syscall.Stat_t)
	if !contains(TrustedUIDs(), int(st.Uid)) {
		return fmt.Errorf("config %s: %w: it is owned by uid %d, not by root or you (bangerd runs its qemu_bin and firecracker_bin as root); chown it to yourself",
			path, ErrUntrusted, st.Uid)
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Errorf("config %s: %w: it is writable by group or others (mode %04o; bangerd runs its qemu_bin and firecracker_bin as root); run: chmod go-w %s",
			path, ErrUntrusted, perm, path)
	}
	return nil
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func orEmpty(prefix, s string) string {
	if s == "" {
		return ""
	}
	return prefix + s
}

// VMMUser is the system account VMM processes run as once they have opened
// their devices (QEMU -runas, the Firecracker jailer's --uid/--gid).
// make install creates it; bangerd creates it at start when missing.
const VMMUser = "banger-vmm"
