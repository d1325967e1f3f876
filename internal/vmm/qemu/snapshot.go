package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"banger/internal/atomicfile"
	"banger/internal/disk"
	"banger/internal/vmm"
)

// Files of a snapshot directory (Snapshot writes them, Restore reads them).
const (
	// snapStateName is QEMU's migration stream: the device state, and
	// the guest RAM too when it was streamed (snapMemoryStream).
	snapStateName = "state"
	// snapMemoryName is a copy of the guest RAM file, when the machine's
	// RAM was a shared file (snapMemoryFile). Clones map it private
	// (copy-on-write): it is never written.
	snapMemoryName = "memory"
	// snapMetaName describes the snapshot; it is written last, so a
	// directory without it holds no snapshot.
	snapMetaName = "qemu-snapshot.json"
)

// snapFormat is the version of the snapshot directory's layout.
const snapFormat = 1

// How the guest RAM is kept in a snapshot.
const (
	snapMemoryFile   = "file"   // in snapMemoryName; the state leaves it out (x-ignore-shared)
	snapMemoryStream = "stream" // inside the state
)

// migrationPoll is how often the driver asks QEMU how a migration goes.
const migrationPoll = 5 * time.Millisecond

// snapMeta is snapMetaName: what a restore must match, and what was saved.
type snapMeta struct {
	Format     int                `json:"format"`
	QEMU       string             `json:"qemu_version"`
	Accel      vmm.Accel          `json:"accel"`
	Transport  vmm.AgentTransport `json:"agent_transport"`
	VCPUs      int                `json:"vcpus"`
	MemoryMiB  int                `json:"memory_mib"`
	Drives     []snapDrive        `json:"drives"`
	NICs       int                `json:"nics"`
	Memory     string             `json:"memory"` // snapMemoryFile or snapMemoryStream
	StateBytes int64              `json:"state_bytes"`
	Created    time.Time          `json:"created"`
}

// snapDrive is what of a drive the guest's device state depends on.
type snapDrive struct {
	ID       string `json:"id"`
	ReadOnly bool   `json:"read_only"`
}

// Snapshot saves the machine's device state and memory into dir (made if
// missing; it must not hold a snapshot already). A running machine is
// paused for it and resumed after, also when Snapshot fails; a paused
// one stays paused. The disks are not copied: freeze them (FreezeDisk)
// while the machine is paused, before or after Snapshot, so that they
// are the ones the snapshot saw.
//
// A cold-booted machine's RAM is a shared file: QEMU leaves it out of the
// migration stream (x-ignore-shared) and the driver copies the file to
// dir/memory while the guest is paused (reflink, else a sparse copy). A
// restored machine's RAM is private: QEMU streams it into dir/state and
// there is no dir/memory. On error nothing is left in dir of what
// Snapshot wrote.
func (m *Machine) Snapshot(ctx context.Context, dir string) (err error) {
	m.opMu.Lock()
	defer m.opMu.Unlock()
	start := time.Now()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("snapshot of vm %s: %w", m.spec.Name, err)
	}
	files := []string{filepath.Join(dir, snapStateName), filepath.Join(dir, snapMemoryName), filepath.Join(dir, snapMetaName)}
	for _, f := range files {
		if _, err := os.Lstat(f); err == nil {
			return fmt.Errorf("snapshot of vm %s: %s already exists: snapshot into a new directory", m.spec.Name, f)
		}
	}
	defer func() {
		if err != nil {
			for _, f := range files {
				os.Remove(f)
			}
			err = fmt.Errorf("snapshot of vm %s: %w", m.spec.Name, err)
		}
	}()
	version, err := m.drv.Version(ctx)
	if err != nil {
		return err
	}
	running, err := m.running(ctx)
	if err != nil {
		return err
	}
	if running {
		if err := m.Pause(ctx); err != nil {
			return err
		}
		defer func() {
			// Resume even when ctx is done: the guest must not stay
			// stopped because a snapshot failed.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			if rerr := m.Resume(rctx); rerr != nil {
				err = errors.Join(err, fmt.Errorf("resuming after the snapshot: %w", rerr))
			}
		}()
	}
	paused := time.Now()

	shared := m.memFile != ""
	size, err := m.migrateOut(ctx, files[0], shared)
	if err != nil {
		return err
	}
	saved := time.Now()
	meta := snapMeta{
		Format: snapFormat, QEMU: version, Accel: m.accel, Transport: m.transport,
		VCPUs: m.spec.VCPUs, MemoryMiB: m.spec.MemoryMiB, NICs: len(m.spec.NICs),
		Memory: snapMemoryStream, StateBytes: size, Created: time.Now().UTC(),
	}
	for _, d := range m.drives {
		meta.Drives = append(meta.Drives, snapDrive{ID: d.ID, ReadOnly: d.ReadOnly})
	}
	method := ""
	if shared {
		meta.Memory = snapMemoryFile
		// While paused: the copy is the RAM the state goes with.
		if method, err = disk.Clone(ctx, m.memFile, files[1], nil); err != nil {
			return fmt.Errorf("copying guest memory: %w", err)
		}
	}
	b, err := json.MarshalIndent(meta, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(files[2], append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("writing snapshot metadata: %w", err)
	}
	m.log.Info("snapshot saved", "dir", dir, "memory", meta.Memory, "copy", method, "state_bytes", size,
		"pause_ms", ms(paused.Sub(start)), "save_ms", ms(saved.Sub(paused)), "copy_ms", ms(time.Since(saved)),
		"total_ms", ms(time.Since(start)))
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// running reports whether the guest's vCPUs run (QMP query-status).
func (m *Machine) running(ctx context.Context) (bool, error) {
	ret, err := m.execute(ctx, "query-status", nil)
	if err != nil {
		return false, err
	}
	var st struct {
		Running bool `json:"running"`
	}
	if err := json.Unmarshal(ret, &st); err != nil {
		return false, fmt.Errorf("decoding query-status: %w", err)
	}
	return st.Running, nil
}

// migrateOut migrates the (paused) machine's state into a new file at
// path and returns its size. QEMU writes the file through a descriptor
// the driver passes it (getfd, migrate fd:): its seccomp filter forbids
// exec: migration, and after -runas it may not be allowed to open path.
// With ignoreShared the shared RAM is left out of the stream.
func (m *Machine) migrateOut(ctx context.Context, path string, ignoreShared bool) (int64, error) {
	if err := m.setMigration(ctx, ignoreShared); err != nil {
		return 0, err
	}
	// Unlimited bandwidth: the guest is paused, so only the time to
	// write counts (QEMU's default caps it at 32 MiB/s).
	if _, err := m.execute(ctx, "migrate-set-parameters", map[string]any{"max-bandwidth": int64(1) << 40}); err != nil {
		return 0, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if err := m.passFD(ctx, "snapshot-state", f); err != nil {
		return 0, err
	}
	if _, err := m.execute(ctx, "migrate", map[string]any{"uri": "fd:snapshot-state"}); err != nil {
		m.execute(ctx, "closefd", map[string]any{"fdname": "snapshot-state"})
		return 0, err
	}
	if err := m.waitMigration(ctx); err != nil {
		m.execute(context.WithoutCancel(ctx), "migrate_cancel", nil)
		return 0, fmt.Errorf("saving the machine state: %w\n%s", err, vmm.LogTail(m.paths.Log, 10))
	}
	if err := f.Sync(); err != nil {
		return 0, fmt.Errorf("syncing the machine state: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// setMigration sets the migration capabilities a snapshot or restore
// uses. x-ignore-shared is set either way: a capability stays as an
// earlier migration of this QEMU left it.
func (m *Machine) setMigration(ctx context.Context, ignoreShared bool) error {
	caps := []map[string]any{{"capability": "x-ignore-shared", "state": ignoreShared}}
	_, err := m.execute(ctx, "migrate-set-capabilities", map[string]any{"capabilities": caps})
	return err
}

// passFD hands QEMU a duplicate of f's descriptor under name (QMP getfd).
func (m *Machine) passFD(ctx context.Context, name string, f *os.File) error {
	c, err := m.qmpClient(ctx)
	if err != nil {
		return err
	}
	_, err = c.executeFD(ctx, "getfd", map[string]any{"fdname": name}, int(f.Fd()))
	return m.notRunning(err)
}

// waitMigration polls query-migrate until the migration (out or in)
// completed, failed or QEMU exited.
func (m *Machine) waitMigration(ctx context.Context) error {
	for {
		ret, err := m.execute(ctx, "query-migrate", nil)
		if err != nil {
			// QEMU ends when it cannot load a state: say that, not
			// how the QMP connection broke.
			select {
			case <-m.done:
				return fmt.Errorf("qemu exited during the migration (%s): %w", m.status, vmm.ErrNotRunning)
			case <-time.After(time.Second):
				return err
			}
		}
		var st struct {
			Status    string `json:"status"`
			ErrorDesc string `json:"error-desc"`
		}
		if err := json.Unmarshal(ret, &st); err != nil {
			return fmt.Errorf("decoding query-migrate: %w", err)
		}
		switch st.Status {
		case "completed":
			return nil
		case "failed", "cancelled":
			return fmt.Errorf("migration %s: %s", st.Status, st.ErrorDesc)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("migration still %q: %w", st.Status, ctx.Err())
		case <-m.done:
			return fmt.Errorf("qemu exited during the migration (%s): %w", m.status, vmm.ErrNotRunning)
		case <-time.After(migrationPoll):
		}
	}
}

// Restore starts a machine from a snapshot that Snapshot wrote into
// snapDir, and returns once the guest runs again where it was paused.
// spec must match the snapshot's machine: the same vcpus, memory, number
// of NICs, and drives in the same order with the same read-only flags;
// paths, formats (a clone's drive is typically a qcow2 overlay on the
// frozen file), taps, MACs and sockets may differ. The snapshot must come
// from this QEMU version, accelerator and agent transport. snapDir is
// only read: a snapshot's memory file is mapped private (copy-on-write),
// so any number of clones share its pages. A restored machine's RAM is
// private; its own snapshots stream the RAM (slower, no memory file).
//
// The guest's NIC keeps the MAC address it had: QEMU restores it with the
// device state, whatever spec says; the agent sets the new one.
//
// On error no process or socket is left behind.
func (d *Driver) Restore(ctx context.Context, spec vmm.Spec, snapDir string) (vmm.Machine, error) {
	start := time.Now()
	meta, err := d.checkSnapshot(ctx, spec, snapDir)
	if err != nil {
		return nil, fmt.Errorf("restoring vm %q from %s: %w", spec.Name, snapDir, err)
	}
	state, err := os.Open(filepath.Join(snapDir, snapStateName))
	if err != nil {
		return nil, fmt.Errorf("restoring vm %q: snapshot %s has no readable state (%w): take a new snapshot", spec.Name, snapDir, err)
	}
	defer state.Close()
	l, bin, err := d.prepare(spec)
	if err != nil {
		return nil, err
	}
	l.incoming = true
	if meta.Memory == snapMemoryFile {
		l.mem = memory{path: filepath.Join(snapDir, snapMemoryName)}
	}
	m, err := d.spawn(bin, l)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (vmm.Machine, error) {
		m.Kill()
		if m.exited() {
			err = fmt.Errorf("%w\n%s", err, vmm.LogTail(m.paths.Log, 20))
		}
		return nil, fmt.Errorf("restoring vm %q from %s: %w", spec.Name, snapDir, err)
	}
	if err := m.waitQMP(ctx); err != nil {
		return fail(err)
	}
	started := time.Now()
	if err := m.setMigration(ctx, meta.Memory == snapMemoryFile); err != nil {
		return fail(err)
	}
	if err := m.passFD(ctx, "snapshot-state", state); err != nil {
		return fail(err)
	}
	if _, err := m.execute(ctx, "migrate-incoming", map[string]any{"uri": "fd:snapshot-state"}); err != nil {
		return fail(err)
	}
	// A state QEMU cannot load ends QEMU: waitMigration sees it exit.
	if err := m.waitMigration(ctx); err != nil {
		return fail(fmt.Errorf("loading the machine state (corrupt, or not from a machine like this spec): %w", err))
	}
	loaded := time.Now()
	if err := m.Resume(ctx); err != nil {
		return fail(err)
	}
	if err := m.writePID(); err != nil {
		return fail(fmt.Errorf("writing pid file: %w", err))
	}
	m.log.Info("qemu restored", "snapshot", snapDir, "memory", meta.Memory,
		"qmp_ms", ms(started.Sub(start)), "load_ms", ms(loaded.Sub(started)), "total_ms", ms(time.Since(start)))
	return m, nil
}

// checkSnapshot reads snapDir's metadata and says what of spec or this
// driver does not match it.
func (d *Driver) checkSnapshot(ctx context.Context, spec vmm.Spec, snapDir string) (snapMeta, error) {
	var meta snapMeta
	b, err := os.ReadFile(filepath.Join(snapDir, snapMetaName))
	if errors.Is(err, fs.ErrNotExist) {
		return meta, fmt.Errorf("no %s: not a complete qemu snapshot", snapMetaName)
	}
	if err != nil {
		return meta, err
	}
	if err := json.Unmarshal(b, &meta); err != nil {
		return meta, fmt.Errorf("%s: %w: the snapshot is corrupt", snapMetaName, err)
	}
	if meta.Format != snapFormat {
		return meta, fmt.Errorf("snapshot format %d, this banger reads %d", meta.Format, snapFormat)
	}
	version, err := d.Version(ctx)
	if err != nil {
		return meta, err
	}
	var errs []error
	differ := func(what string, snap, here any) {
		errs = append(errs, fmt.Errorf("%s: snapshot %v, here %v", what, snap, here))
	}
	if meta.QEMU != version {
		differ("qemu version", meta.QEMU, version)
	}
	if meta.Accel != d.accel {
		differ("accelerator", meta.Accel, d.accel)
	}
	if meta.Transport != d.transport {
		differ("agent transport", meta.Transport, d.transport)
	}
	if meta.VCPUs != spec.VCPUs {
		differ("vcpus", meta.VCPUs, spec.VCPUs)
	}
	if meta.MemoryMiB != spec.MemoryMiB {
		differ("memory MiB", meta.MemoryMiB, spec.MemoryMiB)
	}
	if meta.NICs != len(spec.NICs) {
		differ("nics", meta.NICs, len(spec.NICs))
	}
	var drives []snapDrive
	for _, dr := range spec.Drives {
		drives = append(drives, snapDrive{ID: dr.ID, ReadOnly: dr.ReadOnly})
	}
	if !slices.EqualFunc(meta.Drives, drives, func(a, b snapDrive) bool { return a.ReadOnly == b.ReadOnly }) {
		differ("drives (read-only flags in order)", describeDrives(meta.Drives), describeDrives(drives))
	}
	switch meta.Memory {
	case snapMemoryStream:
	case snapMemoryFile:
		st, err := os.Stat(filepath.Join(snapDir, snapMemoryName))
		if err != nil {
			errs = append(errs, fmt.Errorf("guest memory file: %w", err))
		} else if st.Size() != int64(meta.MemoryMiB)<<20 {
			errs = append(errs, fmt.Errorf("guest memory file of %d bytes, want %d: the snapshot is corrupt", st.Size(), int64(meta.MemoryMiB)<<20))
		}
	default:
		errs = append(errs, fmt.Errorf("memory kept as %q: the snapshot is corrupt", meta.Memory))
	}
	if err := errors.Join(errs...); err != nil {
		return meta, fmt.Errorf("snapshot does not fit: %w", err)
	}
	return meta, nil
}

// describeDrives is how a drive list reads in an error: "2 [rw ro]".
func describeDrives(ds []snapDrive) string {
	s := strconv.Itoa(len(ds)) + " ["
	for i, d := range ds {
		if i > 0 {
			s += " "
		}
		if d.ReadOnly {
			s += "ro"
		} else {
			s += "rw"
		}
	}
	return s + "]"
}

// FreezeDisk switches the drive driveID to a new qcow2 file overlay
// whose backing file is the drive's current one: from then on the guest
// writes only to overlay, and the old file is never written again, so it
// can back other VMs' overlays. overlay must be an absolute path that
// does not exist. The driver makes it (qemu-img, so the caller needs
// qemu-utils) and hands it to QEMU as an open file (add-fd), because QEMU
// running as the -runas user may not be allowed to open it (two
// descriptors, read-only and read-write, kept while QEMU runs); then QMP
// blockdev-add and blockdev-snapshot move the drive onto it (QEMU drains
// and flushes the old file first). Read-only drives cannot
// be frozen: they never change, so use their file as is.
//
// Afterwards the drive's path is overlay and its format qcow2: the
// caller records that in the Spec it persists. A second freeze of the
// same drive freezes overlay in turn. On error overlay is removed and
// the drive is unchanged.
func (m *Machine) FreezeDisk(ctx context.Context, driveID, overlay string) (err error) {
	m.opMu.Lock()
	defer m.opMu.Unlock()
	i := slices.IndexFunc(m.drives, func(d vmm.Drive) bool { return d.ID == driveID })
	if i < 0 {
		ids := make([]string, len(m.drives))
		for j, d := range m.drives {
			ids[j] = d.ID
		}
		return fmt.Errorf("freezing disk of vm %s: no drive %q (drives: %v)", m.spec.Name, driveID, ids)
	}
	cur := m.drives[i]
	if cur.ReadOnly {
		return fmt.Errorf("freezing disk of vm %s: drive %q is read-only: it never changes, use its file as is", m.spec.Name, driveID)
	}
	if !filepath.IsAbs(overlay) {
		return fmt.Errorf("freezing disk of vm %s: overlay %q: must be an absolute path", m.spec.Name, overlay)
	}
	if _, err := os.Lstat(overlay); err == nil {
		return fmt.Errorf("freezing disk of vm %s: overlay %s already exists: choose a new path", m.spec.Name, overlay)
	}
	format := cur.Format
	if format == "" {
		format = vmm.FormatRaw
	}
	if err := disk.CreateOverlay(ctx, cur.Path, format, overlay, 0); err != nil {
		return fmt.Errorf("freezing drive %q of vm %s: %w", driveID, m.spec.Name, err)
	}
	defer func() {
		if err != nil {
			os.Remove(overlay)
			err = fmt.Errorf("freezing drive %q of vm %s: %w", driveID, m.spec.Name, err)
		}
	}()
	fdset, err := m.addFDSet(ctx, overlay)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			m.execute(context.WithoutCancel(ctx), "remove-fd", map[string]any{"fdset-id": fdset})
		}
	}()
	// The overlay as a node of its own (without locking, like the
	// drives, and without opening its backing: the drive's node becomes
	// that), then the drive moved onto it.
	node := frozenNode(overlay)
	_, err = m.execute(ctx, "blockdev-add", map[string]any{
		"driver":    vmm.FormatQCOW2,
		"node-name": node,
		"file":      map[string]any{"driver": "file", "filename": "/dev/fdset/" + strconv.Itoa(fdset), "locking": "off"},
		"backing":   nil,
	})
	if err != nil {
		return err
	}
	if _, err = m.execute(ctx, "blockdev-snapshot", map[string]any{"node": "vd" + strconv.Itoa(i), "overlay": node}); err != nil {
		m.execute(context.WithoutCancel(ctx), "blockdev-del", map[string]any{"node-name": node})
		return err
	}
	m.drives[i].Path, m.drives[i].Format = overlay, vmm.FormatQCOW2
	m.log.Info("disk frozen", "drive", driveID, "frozen", cur.Path, "overlay", overlay)
	return nil
}

// addFDSet opens path read-only and read-write and puts both
// descriptors into a new QEMU fd set (QMP add-fd), whose id it returns:
// QEMU opens "/dev/fdset/<id>" from it, and reopens it in either mode
// later (see driveFDs). The set stays while QEMU runs.
func (m *Machine) addFDSet(ctx context.Context, path string) (int, error) {
	c, err := m.qmpClient(ctx)
	if err != nil {
		return 0, err
	}
	fdset := -1
	for _, flag := range []int{os.O_RDWR, os.O_RDONLY} {
		f, err := os.OpenFile(path, flag, 0)
		if err != nil {
			return 0, err
		}
		args := map[string]any{}
		if fdset >= 0 {
			args["fdset-id"] = fdset
		}
		ret, err := c.executeFD(ctx, "add-fd", args, int(f.Fd()))
		f.Close()
		if err != nil {
			return 0, m.notRunning(err)
		}
		var r struct {
			FDSet int `json:"fdset-id"`
		}
		if err := json.Unmarshal(ret, &r); err != nil {
			return 0, fmt.Errorf("decoding add-fd: %w", err)
		}
		fdset = r.FDSet
	}
	return fdset, nil
}

// frozenNode names the block node of overlay after its file, which no
// other freeze of this QEMU uses: a counter in the machine would start
// again in a daemon that adopted a QEMU an earlier daemon froze a drive
// of, and QEMU refuses a node name it has. A node name is at most 31
// letters, digits, '-' and '_', starting with a letter.
func frozenNode(overlay string) string {
	base := strings.TrimSuffix(filepath.Base(overlay), filepath.Ext(overlay))
	var b strings.Builder
	b.WriteString("frozen-")
	for _, r := range base {
		if b.Len() == 31 {
			break
		}
		if r < 128 && (unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}
