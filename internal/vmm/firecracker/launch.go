package firecracker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"banger/internal/vmm"
	"banger/internal/vmm/fchost"
)

// layout is where one VM's files are, on the host and as firecracker sees
// them. Without the jailer both are the same; under the jailer firecracker
// sees paths inside its chroot.
type layout struct {
	dir        string // spec.Dir
	jailRoot   string // chroot of a jailed firecracker; "" without the jailer
	apiSock    string // host path of the API socket
	apiSockArg string // --api-sock as passed to firecracker
	cmdlineArg string // argument unique to this VM in the process's cmdline
	vsock      string // host path of the vsock Unix socket
	vsockArg   string // uds_path as firecracker sees it
	log        string // firecracker's log file (also its stderr)
	logArg     string
	metrics    string
	metricsArg string
	// guestPath maps a host file the VM uses (kernel, initrd, snapshot)
	// to the path firecracker sees.
	guestPath func(host string) (string, error)
	// drivePath makes a drive visible to firecracker under a name that
	// depends only on the drive id (see driveName) and returns the path
	// firecracker sees.
	drivePath func(id, host string) (string, error)
	// clean, when set, removes what the layout created (the jail).
	clean func()
	// owner, when set, is the uid and gid the files firecracker opens
	// must belong to (the jailer's --uid and --gid).
	owner *[2]int
}

func (l *layout) cleanup() {
	if l.clean != nil {
		l.clean()
	}
}

func plainLayout(dir string) *layout {
	l := &layout{
		dir:     dir,
		apiSock: filepath.Join(dir, APISocketName),
		vsock:   filepath.Join(dir, VsockSocketName),
		log:     filepath.Join(dir, LogName),
		metrics: filepath.Join(dir, MetricsName),
		// Absolute: firecracker runs in dir, where relative paths would
		// mean something else.
		guestPath: filepath.Abs,
		drivePath: func(id, host string) (string, error) { return symlinkDrive(dir, id, host) },
	}
	l.apiSockArg, l.vsockArg, l.logArg, l.metricsArg = l.apiSock, l.vsock, l.log, l.metrics
	l.cmdlineArg = l.apiSock
	return l
}

// driveName is the name under which firecracker opens the drive id: a
// symlink in the VM directory (opened relative to firecracker's working
// directory, the VM directory) or a hard link in the jail root.
// Firecracker records drive paths in its snapshot and reopens them on
// load ("at the same relative paths", docs/snapshotting), so a name that
// depends on the drive id alone lets a VM restored in another directory,
// from disks at other paths, find its drives.
func driveName(id string) string { return "drive-" + id }

// symlinkDrive points <dir>/drive-<id> at host and returns the relative
// path firecracker opens.
func symlinkDrive(dir, id, host string) (string, error) {
	target, err := filepath.Abs(host)
	if err != nil {
		return "", fmt.Errorf("drive %s: %w", id, err)
	}
	link := filepath.Join(dir, driveName(id))
	if err := os.Remove(link); err != nil && !os.IsNotExist(err) {
		return "", fmt.Errorf("drive %s: removing stale link: %w", id, err)
	}
	if err := os.Symlink(target, link); err != nil {
		return "", fmt.Errorf("drive %s: linking %s into the vm directory: %w", id, host, err)
	}
	return driveName(id), nil
}

// live reports whether something accepts connections on the Unix socket.
func live(path string) bool {
	c, err := net.DialTimeout("unix", path, 200*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// launch starts firecracker for spec, waits for its API, checks the API
// version and configures logger and metrics: the steps that are the same
// for a boot and a snapshot restore.
func (d *Driver) launch(ctx context.Context, spec vmm.Spec) (*machine, error) {
	_, statErr := os.Stat(spec.Dir)
	createdDir := os.IsNotExist(statErr)
	lay, cmd, err := d.command(spec)
	if err != nil {
		return nil, err
	}
	if err := prepareDir(spec, lay); err != nil {
		return nil, err
	}
	m := &machine{log: d.log, spec: spec, lay: lay, client: NewClient(lay.apiSock), createdDir: createdDir}
	if err := d.spawn(m, cmd); err != nil {
		m.removeFiles()
		return nil, err
	}
	if err := m.waitAPI(ctx, d.opts.SocketTimeout); err != nil {
		m.abort()
		return nil, err
	}
	if !fchost.SupportedAPIVersion(m.version) {
		m.abort()
		return nil, fmt.Errorf("%w: %s speaks API %s, banger needs 1.x not older than %s: install a newer firecracker or point firecracker_bin at one", vmm.ErrUnavailable, d.opts.Bin, m.version, fchost.MinAPIVersion)
	}
	if err := m.client.PutLogger(ctx, LoggerConfig{LogPath: lay.logArg, Level: "Info", ShowLevel: true}); err != nil {
		m.abort()
		return nil, err
	}
	if err := m.client.PutMetrics(ctx, MetricsConfig{MetricsPath: lay.metricsArg}); err != nil {
		m.abort()
		return nil, err
	}
	return m, nil
}

// command builds the firecracker (or jailer) command for spec.
func (d *Driver) command(spec vmm.Spec) (*layout, *exec.Cmd, error) {
	if d.opts.JailerBin != "" {
		return d.jailerCommand(spec)
	}
	lay := plainLayout(spec.Dir)
	cmd := exec.Command(d.opts.Bin, "--api-sock", lay.apiSockArg, "--id", instanceID(spec))
	// Drives are given relative to the VM directory (see driveName).
	cmd.Dir = spec.Dir
	return lay, cmd, nil
}

// spawn starts cmd with the serial console on stdout going to the
// console log and stderr going to firecracker's log.
func (d *Driver) spawn(m *machine, cmd *exec.Cmd) error {
	consolePath := m.spec.ConsoleLog
	if consolePath == "" {
		consolePath = filepath.Join(m.spec.Dir, "console.log")
	}
	console, err := os.OpenFile(consolePath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("opening console log: %w", err)
	}
	defer console.Close()
	logf, err := os.OpenFile(m.lay.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("opening firecracker log: %w", err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = console, logf
	p, err := startProcess(cmd)
	if err != nil {
		return fmt.Errorf("starting %s: %w", cmd.Path, err)
	}
	m.proc = p
	m.watchExit()
	return nil
}

// waitAPI polls GET /version until it answers, the process exits, the
// timeout passes or ctx is done.
func (m *machine) waitAPI(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	delay := 5 * time.Millisecond
	for {
		attempt, cancelAttempt := context.WithTimeout(ctx, time.Second)
		v, err := m.client.Version(attempt)
		cancelAttempt()
		if err == nil {
			m.version = v
			return nil
		}
		var apiErr *APIError
		if errors.As(err, &apiErr) {
			return fmt.Errorf("asking firecracker for its version: %w", err)
		}
		select {
		case <-m.proc.done:
			return m.exitedError("before its API socket was ready")
		case <-ctx.Done():
			return fmt.Errorf("waiting for the firecracker API socket %s: %w (last error: %v; see %s)", m.lay.apiSock, ctx.Err(), err, m.lay.log)
		case <-time.After(delay):
		}
		delay = min(delay*2, 100*time.Millisecond)
	}
}

// exitedError describes an unexpected exit of firecracker, with the end
// of its log.
func (m *machine) exitedError(when string) error {
	msg := fmt.Sprintf("firecracker exited %s", when)
	if st := m.proc.exitStatus(); st != "" {
		msg += " (" + st + ")"
	}
	if t := vmm.LogTail(m.lay.log, 5); t != "" {
		msg += ": " + t
	}
	return fmt.Errorf("%s: %w", msg, vmm.ErrNotRunning)
}

// instanceID is the --id of the firecracker process: letters, digits and
// hyphens, at most 64.
func instanceID(spec vmm.Spec) string {
	id := spec.ID
	if id == "" {
		id = spec.Name
	}
	b := []byte(id)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			b[i] = '-'
		}
	}
	if len(b) > 64 {
		b = b[:64]
	}
	if len(b) == 0 {
		return "banger-vm"
	}
	return string(b)
}
