package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/config"
	"banger/internal/guest"
	"banger/internal/store"
)

// Credential sync: at every start, each host credential file that exists
// is copied into the guest (mode 0600, owned by root), so coding agents in
// the VM are logged in. The files are read as the invoking user, the one
// the daemon serves: a file that user could not read is not synced, even
// though bangerd runs as root. Contents are held in memory only for the
// copy: never logged, never stored, never in an API answer. What was
// synced (guest paths) is kept in the VM's record for vm inspect; what
// could not be is a warning in the daemon log, the start's answer and
// vm inspect.

// credentialSettings say which files a VM start syncs and as whom they
// are read.
type credentialSettings struct {
	Files []config.Credential
	// UID and GID are who reads the host files; -1: the daemon itself.
	UID, GID int
	// GuestRoot is prepended to guest paths when writing them; "" but in
	// the daemon's own tests, whose guest agent runs on the host.
	GuestRoot string
}

// maxCredentialBytes bounds one credential file: auth files are a few KiB.
const maxCredentialBytes = 1 << 20

// syncCredentials copies the credential files into v's guest through its
// agent. It returns the guest paths synced, in config order, and one
// warning for each file that exists but could not be synced. A file that
// does not exist is skipped without a word.
func (m *vmManager) syncCredentials(ctx context.Context, v store.VM) (synced, warnings []string) {
	cs := m.cfg.Credentials
	if len(cs.Files) == 0 {
		return nil, nil
	}
	begin := time.Now()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	type content struct {
		cred config.Credential
		data []byte
	}
	var found []content
	for _, c := range cs.Files {
		data, err := readCredential(c.Host, cs.UID, cs.GID)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue
		case err != nil:
			warnings = append(warnings, m.credentialWarning(v, c, err))
			continue
		}
		found = append(found, content{c, data})
	}
	if len(found) == 0 {
		return nil, warnings
	}
	a, err := m.agent(ctx, v)
	if err != nil {
		for _, f := range found {
			warnings = append(warnings, m.credentialWarning(v, f.cred, err))
		}
		return nil, warnings
	}
	dirs := make([]string, 0, len(found))
	for _, f := range found {
		dirs = append(dirs, cs.GuestRoot+path.Dir(f.cred.Guest))
	}
	makeGuestDirs(ctx, a, dirs)
	for _, f := range found {
		err := a.Put(ctx, cs.GuestRoot+f.cred.Guest, 0o600, 0, 0, bytes.NewReader(f.data))
		clear(f.data)
		if err != nil {
			warnings = append(warnings, m.credentialWarning(v, f.cred, err))
			continue
		}
		synced = append(synced, f.cred.Guest)
	}
	if len(synced) > 0 {
		m.log.Info("synced credential files", "vm", v.Name, "guest_paths", synced, "took", time.Since(begin).Round(time.Millisecond))
	}
	return synced, warnings
}

// credentialWarning logs, and words for the user, why c was not synced.
// err never carries the file's content.
func (m *vmManager) credentialWarning(v store.VM, c config.Credential, err error) string {
	m.log.Warn("credential file not synced", "vm", v.Name, "host_path", c.Host, "guest_path", c.Guest, "err", err)
	return fmt.Sprintf("credential file %s was not synced to %s: %v (the VM started without it; fix it, or drop it from credential_files, and restart the VM)",
		c.Host, c.Guest, err)
}

// makeGuestDirs creates the missing directories of each of dirs (and
// their parents) mode 0700 in the guest, leaving those that exist alone:
// the agent's put would make them 0755. A failure only means the put
// makes them.
func makeGuestDirs(ctx context.Context, a *guest.Client, dirs []string) {
	var argv []string
	seen := map[string]bool{}
	for _, d := range dirs {
		var chain []string
		for p := d; p != "/" && p != "." && !seen[p]; p = path.Dir(p) {
			seen[p] = true
			chain = append(chain, p)
		}
		for i := len(chain) - 1; i >= 0; i-- {
			argv = append(argv, chain[i])
		}
	}
	if len(argv) == 0 {
		return
	}
	// mkdir without -p reports the ones that exist and makes the rest, in
	// order, so a parent is made before its children.
	_, _ = a.Exec(ctx, guest.ExecRequest{Argv: append([]string{"mkdir", "-m", "0700", "--"}, argv...)}, nil, nil, io.Discard)
}

// readCredential reads the regular file p as uid:gid (see openAs). A file
// that is absent, or whose parent is not a directory, matches
// fs.ErrNotExist.
func readCredential(p string, uid, gid int) ([]byte, error) {
	f, err := openAs(p, uid, gid)
	if errors.Is(err, unix.ENOTDIR) {
		return nil, fs.ErrNotExist
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file (%s)", p, st.Mode().Type())
	}
	if st.Size() > maxCredentialBytes {
		return nil, fmt.Errorf("%s is %d bytes, more than a credential file's %d", p, st.Size(), maxCredentialBytes)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxCredentialBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", p, err)
	}
	if len(data) > maxCredentialBytes {
		clear(data)
		return nil, fmt.Errorf("%s is more than a credential file's %d bytes", p, maxCredentialBytes)
	}
	return data, nil
}

// openAs opens p for reading with the file-system identity of uid:gid
// when the daemon is root and uid is another user, so that permissions
// are checked as that user's: the daemon reads only what its user could.
// Otherwise it opens p as the daemon. It never blocks on a FIFO.
func openAs(p string, uid, gid int) (*os.File, error) {
	open := func() (*os.File, error) {
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: p, Err: err}
		}
		return os.NewFile(uintptr(fd), p), nil
	}
	if uid < 0 || uid == 0 || os.Geteuid() != 0 {
		return open()
	}
	type result struct {
		f   *os.File
		err error
	}
	done := make(chan result, 1)
	go func() {
		// setfsuid and setfsgid change only this thread, which is locked
		// to this goroutine. Should restoring root fail, the thread is
		// never unlocked, so it dies with the goroutine.
		runtime.LockOSThread()
		if err := setFS(uid, gid); err != nil {
			setFS(0, 0)
			done <- result{nil, err}
			return
		}
		f, err := open()
		if setFS(0, 0) != nil {
			done <- result{f, err}
			return
		}
		runtime.UnlockOSThread()
		done <- result{f, err}
	}()
	r := <-done
	return r.f, r.err
}

// setFS sets this thread's file-system uid and gid and checks they took
// (setfsuid reports no errors, only the previous value).
func setFS(uid, gid int) error {
	unix.Setfsgid(gid)
	unix.Setfsuid(uid)
	gotGID, _ := unix.SetfsgidRetGid(-1)
	gotUID, _ := unix.SetfsuidRetUid(-1)
	if gotUID != uid || gotGID != gid {
		return fmt.Errorf("cannot take the identity %d:%d to read as (have %d:%d)", uid, gid, gotUID, gotGID)
	}
	return nil
}
