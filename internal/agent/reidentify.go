package agent

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/atomicfile"
	"banger/internal/guest"
	"banger/internal/guestnet"
)

// system is what reidentify changes beyond files under the server's root:
// the kernel's clock, network and hostname, and the running sshd. Tests
// on a host swap it for a recorder; in a guest it is realSystem.
type system struct {
	setClock    func(time.Time) error
	setNetwork  func(guestnet.Config) error
	setHostname func(string) error
	restartSSHD func(context.Context) error
	// sshdReadsKeys reports whether the running sshd reads its host key
	// for each connection (nil: it is restarted). It only reads, so it
	// runs beside the other steps.
	sshdReadsKeys func() bool
}

// realSystem changes the guest it runs in. sshd is reloaded (reloadSSHD)
// only when its listeners do not read the host key afresh for each
// connection anyway (keysReadPerConnection): a restore need not wait for
// sshd to re-execute.
func realSystem() system {
	return system{
		setClock: func(t time.Time) error {
			ts := unix.NsecToTimespec(t.UnixNano())
			return unix.ClockSettime(unix.CLOCK_REALTIME, &ts)
		},
		setNetwork: func(c guestnet.Config) error {
			nic, err := guestnet.FirstNIC()
			if err != nil {
				return err
			}
			return guestnet.Replace(nic, c)
		},
		setHostname:   func(h string) error { return unix.Sethostname([]byte(h)) },
		restartSSHD:   func(ctx context.Context) error { return reloadSSHD(ctx, "/proc") },
		sshdReadsKeys: func() bool { return keysReadPerConnection("/proc", "/") },
	}
}

// Where reidentify writes, under the server's root.
const (
	machineIDPath     = "etc/machine-id"
	dbusMachineIDPath = "var/lib/dbus/machine-id"
	hostKeyPath       = "etc/ssh/ssh_host_ed25519_key"
)

// sshdRestartTimeout bounds the wait for sshd to listen again.
const sshdRestartTimeout = 10 * time.Second

// reidentify applies a restored guest's new identity (see
// guest.OpReidentify), the agent key last, as the answer is written. Two
// requests never run at once.
func (s *Server) reidentify(ctx context.Context, fw *guest.FrameWriter, req *guest.ReidentifyRequest) error {
	id, err := req.Parse()
	if err != nil {
		return fw.WriteError(err)
	}
	s.reidentifyMu.Lock()
	defer s.reidentifyMu.Unlock()
	var staged *stagedKey
	if id.AgentKey != nil {
		if staged, err = stageKey(s.keyFile, id.AgentKey); err != nil {
			return fw.WriteError(fmt.Errorf("reidentify: agent key: %w", err))
		}
		defer staged.discard()
	}
	var took []any // per step, for the log: a restore's budget is tight
	for _, st := range s.identitySteps(ctx, req, id) {
		t0 := time.Now()
		err := st.do()
		took = append(took, st.name, time.Since(t0).Round(time.Millisecond).String())
		if err != nil {
			s.logger.Error("reidentify", "step", st.name, "err", err)
			return fw.WriteError(fmt.Errorf("reidentify: %s: %w", st.name, err))
		}
	}
	// The key is swapped as the answer goes out, not after: a host that
	// reconnects the moment it reads the answer must find the new key in
	// force. If the answer cannot be written the host does not know it
	// worked, so the old key comes back.
	var old []byte
	if staged != nil {
		old = s.key()
		s.setKey(id.AgentKey)
		if err := staged.commit(); err != nil {
			s.logger.Error("saving the new agent key (in force until the agent restarts)", "path", s.keyFile, "err", err)
		}
	}
	if err := fw.WriteJSON(guest.FrameResponse, guest.Response{}); err != nil {
		if staged != nil {
			s.restoreKey(old)
		}
		return err
	}
	// The files went in unsynced: one sync of their file systems, after
	// the answer, makes them durable for the price of one disk flush
	// rather than two per file, off the restore's path.
	t0 := time.Now()
	syncFS(s.root, filepath.Dir(s.keyFile))
	took = append(took, "sync", time.Since(t0).Round(time.Millisecond).String())
	s.logger.Info("reidentified", "hostname", req.Hostname, "mac", id.MAC.String(), "address", id.Address.String(),
		slog.Group("took", took...))
	return nil
}

// syncFS flushes the file systems that hold dirs (syncfs(2): the same one
// twice costs nothing the second time). It is best effort: the files are
// consistent either way, only perhaps old after a crash.
func syncFS(dirs ...string) {
	for _, d := range dirs {
		if f, err := os.Open(d); err == nil {
			unix.Syncfs(int(f.Fd()))
			f.Close()
		}
	}
}

// identityStep is one part of a new identity.
type identityStep struct {
	name string
	do   func() error
}

// identitySteps are the parts of req (parsed as id) in the order they
// are applied. Two of them only wait for work started at once beside the
// file steps, each of which costs a restore tens of milliseconds under
// software emulation: the network (its change does not touch the files)
// and the check of how sshd reads its keys (it only reads /proc).
func (s *Server) identitySteps(ctx context.Context, req *guest.ReidentifyRequest, id guest.Identity) []identityStep {
	nc := guestnet.Config{Addr: id.Address, GW: id.Gateway, DNS: id.DNS, MAC: id.MAC}
	network := make(chan error, 1)
	readsKeys := make(chan bool, 1)
	start := func() error {
		go func() { network <- s.sys.setNetwork(nc) }()
		go func() { readsKeys <- s.sys.sshdReadsKeys != nil && s.sys.sshdReadsKeys() }()
		return nil
	}
	return []identityStep{
		{"clock", func() error { return s.sys.setClock(req.Time) }},
		{"network started", start},
		{"resolv.conf", func() error {
			if len(id.DNS) == 0 {
				return nil
			}
			return guestnet.WriteResolvConf(s.root, id.DNS)
		}},
		{"hostname", func() error {
			if err := s.sys.setHostname(req.Hostname); err != nil {
				return err
			}
			return guestnet.WriteHostname(s.root, req.Hostname)
		}},
		{"machine-id", func() error { return writeMachineID(s.root, req.MachineID) }},
		{"ssh host key", func() error { return writeHostKey(s.root, req.HostKey, req.HostKeyPub) }},
		{"network", func() error { return <-network }},
		{"sshd", func() error {
			if <-readsKeys {
				return nil // the next connection reads the new key
			}
			rctx, cancel := context.WithTimeout(ctx, sshdRestartTimeout)
			defer cancel()
			return s.sys.restartSSHD(rctx)
		}},
	}
}

// restoreKey puts the key old back in force, in memory and in the key
// file (nil: none was in force; the file is removed).
func (s *Server) restoreKey(old []byte) {
	s.keyMu.Lock()
	s.newKey = old
	s.keyMu.Unlock()
	var err error
	if old == nil {
		err = os.Remove(s.keyFile)
	} else {
		err = atomicfile.WriteFile(s.keyFile, []byte(hex.EncodeToString(old)+"\n"), 0o600)
	}
	if err != nil {
		s.logger.Error("restoring the agent key", "path", s.keyFile, "err", err)
	}
}

// writeMachineID replaces root's /etc/machine-id, and the D-Bus copy
// where it is a file of its own rather than a symlink to it.
func writeMachineID(root, id string) error {
	content := []byte(id + "\n")
	if err := writeOrOverwrite(filepath.Join(root, machineIDPath), content, 0o444); err != nil {
		return err
	}
	dbus := filepath.Join(root, dbusMachineIDPath)
	if st, err := os.Lstat(dbus); err == nil && st.Mode().IsRegular() {
		return writeOrOverwrite(dbus, content, 0o444)
	}
	return nil
}

// writeOrOverwrite replaces path atomically (unsynced: reidentify syncs
// once for all its files), or writes over it in place
// when it is a mount point (systemd bind-mounts /run/machine-id over
// /etc/machine-id while it has not committed one), which a rename cannot
// replace.
func writeOrOverwrite(path string, data []byte, mode os.FileMode) error {
	err := atomicfile.Replace(path, data, mode)
	if !errors.Is(err, unix.EBUSY) {
		return err
	}
	return os.WriteFile(path, data, mode)
}

// writeHostKey replaces the ed25519 SSH host key pair, the public half
// first: sshd serves the private one, so a connection between the two
// already gets the new key. Both are unsynced (reidentify syncs once);
// a crash before that sync may leave the old pair, and the VM's next
// cold boot writes its own pair from its seed anyway.
func writeHostKey(root, private, public string) error {
	p := filepath.Join(root, hostKeyPath)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	if err := atomicfile.Replace(p+".pub", []byte(strings.TrimSpace(public)+"\n"), 0o644); err != nil {
		return err
	}
	return atomicfile.Replace(p, []byte(strings.TrimSpace(private)+"\n"), 0o600)
}

// sshdSessionPaths are where OpenSSH 9.8 and later install sshd-session,
// the program a listener runs for each connection; the one in
// OpenSSH_9.8 is the first such release.
var sshdSessionPaths = []string{
	"usr/lib/openssh/sshd-session", "usr/libexec/openssh/sshd-session",
	"usr/libexec/sshd-session", "usr/lib/ssh/sshd-session",
}

// keysReadPerConnection reports whether every sshd listener under
// procDir loads the host key files for each connection itself, so a new
// key is served from the next connection on: an OpenSSH before 9.8 (no
// sshd-session under root) re-executes itself for each connection, and
// the new process reads its keys (checked with Debian 12's 9.2p1), unless
// the listener runs with -r (no re-execution). A later OpenSSH may hand
// the listener's keys to sshd-session, so it is reloaded.
func keysReadPerConnection(procDir, root string) bool {
	for _, p := range sshdSessionPaths {
		if _, err := os.Stat(filepath.Join(root, p)); err == nil {
			return false
		}
	}
	for pid := range sshdListeners(procDir) {
		b, err := os.ReadFile(filepath.Join(procDir, strconv.Itoa(pid), "cmdline"))
		// A listener's title ("sshd: /usr/sbin/sshd -D [listener] ...")
		// may have replaced its argv: split on spaces too.
		args := strings.FieldsFunc(string(b), func(r rune) bool { return r == 0 || r == ' ' })
		if err != nil || noReexec(args) {
			return false
		}
	}
	return true
}

// noReexec reports whether sshd's argv has -r, alone or among other
// flags ("-Dr"); the letters of options that take a value end a cluster.
func noReexec(argv []string) bool {
	for _, a := range argv[min(1, len(argv)):] {
		if a == "--" {
			return false
		}
		if len(a) < 2 || a[0] != '-' {
			continue
		}
		for _, c := range a[1:] {
			if c == 'r' {
				return true
			}
			if strings.ContainsRune("CcEfghkopu", c) {
				break
			}
		}
	}
	return false
}

// sshdPoll is how often reloadSSHD looks for the re-executed listeners.
const sshdPoll = 10 * time.Millisecond

// reloadSSHD sends SIGHUP to every sshd process that listens on a TCP
// socket, on which sshd re-executes itself and reads its config and host
// keys again (Debian's ssh.service reloads it the same way), and waits
// until as many sshd processes listen again, none on a socket of before
// (a daemonizing sshd comes back under a new pid). It is one path with
// or without systemd, needs no unit name, and waits for the listener
// itself; open SSH sessions (other processes) are not touched. No
// listener is fine: no sshd runs,
// or a socket-activated one starts per connection and reads the key
// then. A listener that does not come back (a key it cannot load) is an
// error once ctx is done.
func reloadSSHD(ctx context.Context, procDir string) error {
	before := sshdListeners(procDir)
	old := map[uint64]bool{}
	for pid, socks := range before {
		for ino := range socks {
			old[ino] = true
		}
		if err := unix.Kill(pid, unix.SIGHUP); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("signalling sshd (pid %d): %w", pid, err)
		}
	}
	for len(before) > 0 {
		fresh, stale := 0, false
		for _, socks := range sshdListeners(procDir) {
			if overlaps(socks, old) {
				stale = true
			} else {
				fresh++
			}
		}
		if !stale && fresh >= len(before) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("sshd is not listening again after SIGHUP (can it load the new host key? see its log): %w", ctx.Err())
		case <-time.After(sshdPoll):
		}
	}
	return nil
}

// sshdListeners maps each sshd process under procDir that listens on a
// TCP socket to the inodes of those sockets.
func sshdListeners(procDir string) map[int]map[uint64]bool {
	ents, _ := os.ReadDir(procDir)
	out := map[int]map[uint64]bool{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, _ := os.ReadFile(filepath.Join(procDir, e.Name(), "comm"))
		if strings.TrimSpace(string(b)) != "sshd" {
			continue
		}
		if l := listening(procDir, pid); len(l) > 0 {
			out[pid] = l
		}
	}
	return out
}

// listening returns the inodes of the TCP sockets in LISTEN state that
// process pid holds.
func listening(procDir string, pid int) map[uint64]bool {
	listen := map[uint64]bool{}
	for _, f := range []string{"net/tcp", "net/tcp6"} {
		b, _ := os.ReadFile(filepath.Join(procDir, f))
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fs := strings.Fields(line)
			if len(fs) > 9 && fs[3] == "0A" { // TCP_LISTEN
				if ino, err := strconv.ParseUint(fs[9], 10, 64); err == nil {
					listen[ino] = true
				}
			}
		}
	}
	fdDir := filepath.Join(procDir, strconv.Itoa(pid), "fd")
	fds, _ := os.ReadDir(fdDir)
	out := map[uint64]bool{}
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
		if err != nil || !strings.HasPrefix(target, "socket:[") {
			continue
		}
		ino, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(target, "socket:["), "]"), 10, 64)
		if err == nil && listen[ino] {
			out[ino] = true
		}
	}
	return out
}

func overlaps(a, b map[uint64]bool) bool {
	for k := range a {
		if b[k] {
			return true
		}
	}
	return false
}

// stagedKey is a new agent key written next to the key file, to be
// renamed over it once the host has the answer.
type stagedKey struct {
	tmp, path string
	done      bool
}

// stageKey writes key as hex to a temp file beside path (root-only).
func stageKey(path string, key []byte) (*stagedKey, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(dir, ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return nil, err
	}
	_, err = f.WriteString(hex.EncodeToString(key) + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return nil, err
	}
	return &stagedKey{tmp: f.Name(), path: path}, nil
}

// commit renames the staged key over the key file.
func (k *stagedKey) commit() error {
	k.done = true
	if err := os.Rename(k.tmp, k.path); err != nil {
		os.Remove(k.tmp)
		return err
	}
	return nil // synced with the rest (reidentify's syncFS)
}

// discard removes the staged key unless it was committed.
func (k *stagedKey) discard() {
	if !k.done {
		os.Remove(k.tmp)
	}
}

// Pretend makes reidentify change nothing of the machine the agent runs
// on: the guest's files go under root, and the clock, network, hostname
// and sshd changes are only reported to record (step, what). It is for
// tests of the host side (the daemon's, over an in-memory VMM), which
// serve this agent in-process and must not touch the test machine.
func (s *Server) Pretend(root string, record func(step, what string)) {
	s.root = root
	s.sys = system{
		setClock: func(t time.Time) error { record("clock", t.UTC().Format(time.RFC3339)); return nil },
		setNetwork: func(c guestnet.Config) error {
			record("network", fmt.Sprintf("%s %s via %s", c.MAC, c.Addr, c.GW))
			return nil
		},
		setHostname: func(h string) error { record("hostname", h); return nil },
		restartSSHD: func(context.Context) error { record("sshd", "reloaded"); return nil },
	}
}
