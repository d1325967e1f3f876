package guestinit

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/ext4"
	"banger/internal/guest"
)

// DeviceTimeout bounds the wait for the root and modules drives.
const DeviceTimeout = 10 * time.Second

const newRoot = "/newroot"

// InInitrd reports whether this process runs as /init of banger's initrd:
// the root filesystem is the kernel's initramfs (ramfs or tmpfs) and holds
// ConfigPath.
func InInitrd() bool {
	var st unix.Statfs_t
	if err := unix.Statfs("/", &st); err != nil {
		return false
	}
	if st.Type != unix.RAMFS_MAGIC && st.Type != unix.TMPFS_MAGIC {
		return false
	}
	_, err := os.Stat(ConfigPath)
	return err == nil
}

// Run loads the modules, mounts the root drive and execs the rootfs's
// init. On failure it prints the cause on the console and powers the guest
// off; it returns only if that fails too.
func Run() error {
	start := time.Now()
	con := io.Writer(os.Stderr)
	err := mountEarly()
	if f, cerr := os.OpenFile("/dev/console", os.O_WRONLY|unix.O_NOCTTY, 0); cerr == nil {
		con = f
	}
	if err == nil {
		err = boot(con, start)
	}
	fmt.Fprintf(con, "banger initrd: %v\n", err)
	fmt.Fprintln(con, "banger initrd: powering off")
	unix.Sync()
	if perr := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); perr != nil {
		return fmt.Errorf("%w (and power off: %v)", err, perr)
	}
	return err
}

func boot(con io.Writer, start time.Time) error {
	data, err := os.ReadFile(ConfigPath)
	if err != nil {
		return fmt.Errorf("reading %s: %w", ConfigPath, err)
	}
	var cfg Config
	if err := json.Unmarshal(data, &cfg); err != nil {
		return fmt.Errorf("parsing %s: %w", ConfigPath, err)
	}
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return fmt.Errorf("reading /proc/cmdline: %w", err)
	}
	opts := parseCmdline(string(cmdline))
	if opts.Root == "" {
		return errors.New("no root= on the kernel command line")
	}
	if err := loadModules(cfg.Modules, opts); err != nil {
		return err
	}
	loaded := time.Since(start)
	if err := waitDevice(opts.Root, DeviceTimeout); err != nil {
		return fmt.Errorf("root device %s did not appear after %s (is the root drive attached?)", opts.Root, DeviceTimeout)
	}
	if err := mountRoot(opts); err != nil {
		return err
	}
	if !opts.ReadOnly && opts.RootFSType == "ext4" {
		growRoot(con, newRoot, opts.Root)
	}
	fmt.Fprintf(con, "banger initrd: %d modules loaded in %dms, root %s mounted after %dms\n",
		len(cfg.Modules), loaded.Milliseconds(), opts.Root, time.Since(start).Milliseconds())
	if err := switchRoot(); err != nil {
		return err
	}
	if opts.ModulesDev != "" {
		if err := mountModules(opts.ModulesDev, release(cfg)); err != nil {
			fmt.Fprintf(con, "banger initrd: warning: %v (modules beyond the initrd's will not load)\n", err)
		}
	}
	if seed := cmdlineValue(string(cmdline), "banger.seed"); seed != "" && !opts.ReadOnly {
		if err := applySeed(seed, "/"); err != nil {
			fmt.Fprintf(con, "banger initrd: warning: %v (ssh into this VM may not work)\n", err)
		}
	}
	configureGuest(con, string(cmdline))
	init, err := pickInit(con, opts.Init)
	if err != nil {
		return err
	}
	argv := append([]string{init}, os.Args[1:]...)
	if err := unix.Exec(init, argv, os.Environ()); err != nil {
		return fmt.Errorf("executing %s: %w", init, err)
	}
	return nil
}

func mountEarly() error {
	mounts := []struct {
		src, dir, fstype string
		flags            uintptr
	}{
		{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID},
		{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NOEXEC | unix.MS_NODEV},
		{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NOEXEC | unix.MS_NODEV},
	}
	for _, m := range mounts {
		if err := os.MkdirAll(m.dir, 0o755); err != nil {
			return err
		}
		err := unix.Mount(m.src, m.dir, m.fstype, m.flags, "")
		if err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mounting %s: %w", m.dir, err)
		}
	}
	return nil
}

func loadModules(mods []Module, opts options) error {
	for _, m := range mods {
		f, err := os.Open(m.Path)
		if err != nil {
			return fmt.Errorf("loading module %s: %w", m.Name, err)
		}
		err = unix.FinitModule(int(f.Fd()), opts.moduleParams(m.Name), 0)
		f.Close()
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("loading module %s (params %q): %w", m.Name, opts.moduleParams(m.Name), err)
		}
	}
	return nil
}

// waitDevice polls until the block device node exists.
func waitDevice(dev string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(dev); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func mountRoot(opts options) error {
	if err := os.MkdirAll(newRoot, 0o755); err != nil {
		return err
	}
	var flags uintptr
	if opts.ReadOnly {
		flags |= unix.MS_RDONLY
	}
	if err := unix.Mount(opts.Root, newRoot, opts.RootFSType, flags, ""); err != nil {
		return fmt.Errorf("mounting root device %s (%s): %w", opts.Root, opts.RootFSType, err)
	}
	return nil
}

// growRoot grows the root filesystem to fill its drive: the host made the
// disk file larger than the image and left the filesystem to the guest
// (internal/disk.Grow). A failure is only a warning: the guest boots with
// the image's size.
func growRoot(con io.Writer, dir, dev string) {
	start := time.Now()
	from, to, err := ext4.GrowMounted(dir, dev)
	switch {
	case err != nil:
		fmt.Fprintf(con, "banger initrd: warning: %v (/ keeps its size of %d MiB)\n", err, from>>20)
	case to > from:
		fmt.Fprintf(con, "banger initrd: root filesystem grown from %d MiB to %d MiB in %dms\n",
			from>>20, to>>20, time.Since(start).Milliseconds())
	}
}

// switchRoot frees the initramfs, moves /dev, /proc and /sys and the new
// root onto / and chroots into it, like busybox's switch_root.
func switchRoot() error {
	cleanInitramfs()
	for _, d := range []string{"/dev", "/proc", "/sys"} {
		if err := os.MkdirAll(newRoot+d, 0o755); err != nil {
			return fmt.Errorf("preparing %s in the root filesystem: %w", d, err)
		}
		if err := unix.Mount(d, newRoot+d, "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("moving %s into the root filesystem: %w", d, err)
		}
	}
	if err := unix.Chdir(newRoot); err != nil {
		return fmt.Errorf("switching root: %w", err)
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("switching root: moving %s to /: %w", newRoot, err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("switching root: chroot: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("switching root: %w", err)
	}
	return nil
}

// cleanInitramfs deletes the initrd's files (the agent, modules) so their
// memory goes back to the guest. Mount points are left alone.
func cleanInitramfs() {
	ents, err := os.ReadDir("/")
	if err != nil {
		return
	}
	for _, e := range ents {
		switch "/" + e.Name() {
		case "/dev", "/proc", "/sys", newRoot:
			continue
		}
		os.RemoveAll("/" + e.Name())
	}
}

func release(cfg Config) string {
	var u unix.Utsname
	if err := unix.Uname(&u); err == nil {
		return unix.ByteSliceToString(u.Release[:])
	}
	return cfg.Release
}

func mountModules(dev, rel string) error {
	if err := waitDevice(dev, DeviceTimeout); err != nil {
		return fmt.Errorf("modules device %s did not appear after %s", dev, DeviceTimeout)
	}
	dir := filepath.Join("/lib/modules", rel)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	if err := unix.Mount(dev, dir, "ext4", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		return fmt.Errorf("mounting modules device %s on %s: %w", dev, dir, err)
	}
	return nil
}

// pickInit returns want when the root filesystem has it, else banger's
// agent, else an error that says what the image lacks.
func pickInit(con io.Writer, want string) (string, error) {
	if isExecutable(want) {
		return want, nil
	}
	if isExecutable(guest.AgentPath) {
		fmt.Fprintf(con, "banger initrd: %s not found in the root filesystem; running %s as init\n", want, guest.AgentPath)
		return guest.AgentPath, nil
	}
	return "", fmt.Errorf("the root filesystem has no init: neither %s nor %s exists (install an init system such as systemd-sysv, or banger's agent)",
		strings.TrimSpace(want), guest.AgentPath)
}

func isExecutable(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0
}
