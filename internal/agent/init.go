package agent

import (
	"bufio"
	"context"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/ext4"
	buildversion "banger/internal/version"
)

// earlyMount is a filesystem PID 1 mounts when nothing else did.
type earlyMount struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
}

var earlyMounts = []earlyMount{
	{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
	{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "mode=0620,ptmxmode=0666,gid=5"},
	{"tmpfs", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
	{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
	{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
}

// RunAsInit runs the agent as PID 1 in an image without an init system:
// it mounts the API filesystems, sets the hostname, reaps orphans and
// serves the agent protocol. A Shutdown request, SIGTERM, SIGINT
// (Ctrl-Alt-Del) or SIGPWR powers the guest off. It returns only if
// powering off fails.
func RunAsInit() error {
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	logger.Info("banger-agent starting as init", "version", buildversion.String())
	setupInit(logger)
	growRoot(logger)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := NewServer(logger, nil)
	s.powerOff = func() error {
		time.Sleep(100 * time.Millisecond) // let the answer leave
		cancel()
		return nil
	}
	go s.reap(ctx)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT, unix.SIGPWR)
	go func() {
		select {
		case sig := <-sigs:
			logger.Info("powering off on signal", "signal", sig)
			cancel()
		case <-ctx.Done():
		}
	}()
	s.ServeTransports(ctx)
	return initPowerOff(logger)
}

// setupInit prepares the system the way a minimal init does. Each step is
// best effort: a failure is logged and the agent still serves.
func setupInit(logger *slog.Logger) {
	os.Setenv("PATH", defaultPath)
	os.Setenv("HOME", "/root")
	var st unix.Statfs_t
	if unix.Statfs("/", &st) == nil && st.Flags&unix.ST_RDONLY != 0 {
		if err := unix.Mount("", "/", "", unix.MS_REMOUNT, ""); err != nil {
			logger.Warn("remounting / read-write", "err", err)
		}
	}
	for _, m := range earlyMounts {
		if isMounted(m.target) {
			continue
		}
		_ = os.MkdirAll(m.target, 0o755)
		if err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data); err != nil {
			logger.Warn("mounting", "target", m.target, "err", err)
		}
	}
	if st, err := os.Lstat("/dev/ptmx"); err != nil || st.Mode()&os.ModeCharDevice == 0 {
		_ = os.Remove("/dev/ptmx")
		_ = os.Symlink("pts/ptmx", "/dev/ptmx")
	}
	if b, err := os.ReadFile("/etc/hostname"); err == nil {
		if h := strings.TrimSpace(string(b)); h != "" {
			if err := unix.Sethostname([]byte(h)); err != nil {
				logger.Warn("setting hostname", "err", err)
			}
		}
	}
	if err := loopbackUp(); err != nil {
		logger.Warn("bringing up lo", "err", err)
	}
	// Ctrl-Alt-Del sends SIGINT to init instead of rebooting at once.
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF)
}

// isMounted reports whether target is a mount point, from mountinfo.
func isMounted(target string) bool {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false // no /proc yet: nothing is mounted but /
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && fields[4] == target {
			return true
		}
	}
	return false
}

func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// reap waits for orphans re-parented to PID 1. Processes exec started are
// left to their own Wait: the table lock is held from their start until
// they are recorded, so none slips through.
func (s *Server) reap(ctx context.Context) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, unix.SIGCHLD)
	defer signal.Stop(sigs)
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-sigs:
		case <-tick.C:
		}
		s.reapOrphans()
	}
}

func (s *Server) reapOrphans() {
	s.procs.mu.Lock()
	defer s.procs.mu.Unlock()
	self := os.Getpid()
	for _, pid := range zombieChildren(self) {
		if s.procs.pids[pid] {
			continue
		}
		var ws unix.WaitStatus
		_, _ = unix.Wait4(pid, &ws, unix.WNOHANG, nil)
	}
}

// zombieChildren lists the zombie children of parent, from /proc.
func zombieChildren(parent int) []int {
	dirs, _ := filepath.Glob("/proc/[0-9]*/stat")
	var pids []int
	for _, p := range dirs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parens.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 || f[0] != "Z" {
			continue
		}
		if ppid, _ := strconv.Atoi(f[1]); ppid != parent {
			continue
		}
		if pid, err := strconv.Atoi(strings.Fields(s)[0]); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// initPowerOff ends every process, syncs and powers off.
func initPowerOff(logger *slog.Logger) error {
	logger.Info("stopping all processes")
	_ = unix.Kill(-1, unix.SIGTERM)
	time.Sleep(time.Second)
	_ = unix.Kill(-1, unix.SIGKILL)
	unix.Sync()
	logger.Info("powering off")
	return unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
}

// growRoot grows / to fill its drive when banger's initrd did not (a
// kernel registered with an initrd of its own, or none): the host left
// the filesystem to the guest (internal/disk.Grow). Where it already
// fills the drive this only reads the superblock.
func growRoot(logger *slog.Logger) {
	from, to, err := ext4.GrowMounted("/", "")
	switch {
	case err != nil:
		logger.Warn("growing the root filesystem", "err", err)
	case to > from:
		logger.Info("root filesystem grown", "from_mib", from>>20, "to_mib", to>>20)
	}
}
