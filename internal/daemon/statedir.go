package daemon

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"

	"banger/internal/config"
)

// stateSubdirs are the directories bangerd keeps under the state
// directory, with their modes. VM directories hold disks, keys and
// sockets, so vms/ is private, as is layers/ (VM disks); images and
// kernels hold nothing secret.
var stateSubdirs = []struct {
	name string
	mode fs.FileMode
}{
	{"vms", 0o700},
	{"layers", 0o700},
	{"snapshots", 0o700},
	{"images", 0o755},
	{"kernels", 0o755},
	{"run", 0o700},
}

// prepareStateDir creates the state directory and the directories under
// it, refusing any that someone other than root and the invoking user
// could change (config.CheckTrustedDir): root writes, truncates and
// removes files there.
func prepareStateDir(dirs config.Dirs) error {
	dir := dirs.State
	if err := config.MkdirTrusted(dir, 0o711); err != nil {
		return fmt.Errorf("state directory %s: %w (run as root, or set %s to a directory you own)", dir, err, config.HomeEnv)
	}
	for _, sd := range stateSubdirs {
		p := filepath.Join(dir, sd.name)
		if err := config.MkdirTrusted(p, sd.mode); err != nil {
			return err
		}
		// Tighten directories an older banger made with wider modes.
		if err := os.Chmod(p, sd.mode); err != nil {
			return fmt.Errorf("setting mode of %s: %w", p, err)
		}
	}
	// The daemon also writes downloads into the user's cache directory.
	if dirs.Cache != "" {
		if err := config.CheckTrustedExisting(dirs.Cache); err != nil {
			return fmt.Errorf("cache directory: %w", err)
		}
	}
	// Only the user the daemon serves (and root) may reach the socket.
	if err := os.Lchown(dirs.RunDir(), config.InvokingUID(), config.InvokingGID()); err != nil {
		return fmt.Errorf("handing %s to uid %d: %w", dirs.RunDir(), config.InvokingUID(), err)
	}
	probe := filepath.Join(dir, ".write-test")
	os.Remove(probe)
	f, err := openNoFollow(probe, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("state directory %s is not writable: %w (run as root, or set %s to a directory you own)", dir, err, config.HomeEnv)
	}
	f.Close()
	return os.Remove(probe)
}

// openNoFollow opens a file in the state directory without following a
// symlink at its last component: the daemon is root, and a planted link
// must not make it write elsewhere.
func openNoFollow(path string, flag int, perm fs.FileMode) (*os.File, error) {
	return os.OpenFile(path, flag|unix.O_NOFOLLOW, perm)
}

// chmodNoFollow sets the mode of path, refusing a symlink: it opens the
// inode with O_PATH|O_NOFOLLOW and changes it through /proc/self/fd.
func chmodNoFollow(path string, mode fs.FileMode) error {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening %s: %w", path, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		return fmt.Errorf("%s is a symlink", path)
	}
	return os.Chmod("/proc/self/fd/"+strconv.Itoa(fd), mode)
}

// privateFile makes path an existing regular file of mode 0600 (created
// empty when missing), refusing a symlink. SQLite gives its -wal and -shm
// files the database's mode, so state.db being 0600 covers them too.
func privateFile(path string) error {
	f, err := openNoFollow(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("opening %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	return f.Chmod(0o600)
}
