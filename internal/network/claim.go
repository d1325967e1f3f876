package network

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrClaimed reports that another bangerd manages banger's network (the
// bridge, the taps and the nftables table) in this network namespace.
var ErrClaimed = errors.New("another bangerd manages banger's network in this network namespace")

// ClaimDir holds the claim lock files, one per network namespace. It is
// on the host's /run, shared by every namespace, and root-only.
var ClaimDir = "/run/banger"

// Claim is a daemon's hold on banger's network in one network namespace.
// Two daemons with different state directories would otherwise share the
// bridge, the tap prefix and the nftables table, delete each other's taps
// and lease the same addresses. The hold is an flock, so it goes with the
// process that held it.
type Claim struct{ f *os.File }

// TakeClaim claims banger's network in the calling thread's network
// namespace for owner (the daemon's state directory). When another live
// process holds it, the error wraps ErrClaimed and names that holder's
// state directory and pid.
func TakeClaim(owner string) (*Claim, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return nil, fmt.Errorf("identifying the network namespace: %w", err)
	}
	if err := os.MkdirAll(ClaimDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating %s: %w", ClaimDir, err)
	}
	path := filepath.Join(ClaimDir, fmt.Sprintf("netns-%d-%d.lock", st.Dev, st.Ino))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		buf := make([]byte, 4096)
		n, _ := f.ReadAt(buf, 0)
		f.Close()
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		holder, pid, _ := strings.Cut(strings.TrimSpace(string(buf[:n])), "\n")
		return nil, fmt.Errorf("%w: the bangerd of state directory %s (pid %s) owns the bridge, taps and nftables table %q here; "+
			"stop that daemon (banger daemon stop, with its BANGER_HOME), or run this one in another network namespace (ip netns exec)",
			ErrClaimed, holder, pid, TableName)
	}
	f.Truncate(0)
	f.WriteAt([]byte(owner+"\n"+strconv.Itoa(os.Getpid())+"\n"), 0)
	return &Claim{f: f}, nil
}

// Release gives the claim up.
func (c *Claim) Release() {
	c.f.Truncate(0)
	unix.Flock(int(c.f.Fd()), unix.LOCK_UN)
	c.f.Close()
}
