package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Snapshot is one snapshot's record: a VM's memory and device state (in
// Dir) and its frozen disk layer, with what a restore must match.
type Snapshot struct {
	ID         string
	Name       string
	State      string // api.SnapshotCreating until whole, then api.SnapshotReady
	Kind       string // api.SnapshotUser or api.SnapshotWarm
	SourceVM   string // name of the VM it was taken of
	Image      string
	Kernel     string
	VMM        string
	VMMVersion string
	VCPUs      int
	MemoryMiB  int
	DiskBytes  int64
	Layer      string // the frozen layer (a file name in the layer store)
	Dir        string // memory and device state
	Spec       string // JSON of the vmm.Spec the VM ran with
	Meta       string // JSON the daemon keeps beside (see daemon.snapshotMeta)
	CreatedAt  time.Time
}

const snapshotColumns = `id, name, state, kind, source_vm, image, kernel, vmm, vmm_version,
	vcpus, memory_mib, disk_bytes, layer, dir, spec, meta, created_at`

func scanSnapshot(sc interface{ Scan(...any) error }) (Snapshot, error) {
	var s Snapshot
	var created int64
	err := sc.Scan(&s.ID, &s.Name, &s.State, &s.Kind, &s.SourceVM, &s.Image, &s.Kernel, &s.VMM, &s.VMMVersion,
		&s.VCPUs, &s.MemoryMiB, &s.DiskBytes, &s.Layer, &s.Dir, &s.Spec, &s.Meta, &created)
	s.CreatedAt = time.Unix(0, created)
	return s, err
}

// CreateSnapshot inserts s. A taken name returns an error wrapping
// ErrExist.
func (s *Store) CreateSnapshot(ctx context.Context, sn Snapshot) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO snapshots (`+snapshotColumns+`)
		VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
		sn.ID, sn.Name, sn.State, nzKind(sn.Kind), sn.SourceVM, sn.Image, sn.Kernel, sn.VMM, sn.VMMVersion,
		sn.VCPUs, sn.MemoryMiB, sn.DiskBytes, sn.Layer, sn.Dir, nz(sn.Spec), nz(sn.Meta), time.Now().UnixNano())
	if isUniqueViolation(err) {
		return fmt.Errorf("snapshot %q: %w", sn.Name, ErrExist)
	}
	return err
}

func nzKind(k string) string {
	if k == "" {
		return "user"
	}
	return k
}

// UpdateSnapshot replaces the mutable fields of the snapshot with sn.ID.
func (s *Store) UpdateSnapshot(ctx context.Context, sn Snapshot) error {
	return s.tx(ctx, func(tx *sql.Tx) error { return updateSnapshot(ctx, tx, sn) })
}

func updateSnapshot(ctx context.Context, tx *sql.Tx, sn Snapshot) error {
	res, err := tx.ExecContext(ctx, `UPDATE snapshots SET state=?, vmm_version=?, layer=?, spec=?, meta=? WHERE id=?`,
		sn.State, sn.VMMVersion, sn.Layer, nz(sn.Spec), nz(sn.Meta), sn.ID)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("snapshot %s: %w", sn.ID, ErrNotExist)
	}
	return nil
}

// FinishSnapshot records sn (made whole: ready, with its frozen layer)
// and the new layer of the VM it was taken of in one transaction, so
// that no state has the snapshot's layer as the VM's too.
func (s *Store) FinishSnapshot(ctx context.Context, sn Snapshot, vmID, vmLayer string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		if err := updateSnapshot(ctx, tx, sn); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `UPDATE vms SET layer=?, updated_at=? WHERE id=?`, vmLayer, time.Now().UnixNano(), vmID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("vm %s: %w", vmID, ErrNotExist)
		}
		return nil
	})
}

// SnapshotByName returns the snapshot called name (or with that id).
func (s *Store) SnapshotByName(ctx context.Context, name string) (Snapshot, error) {
	sn, err := scanSnapshot(s.db.QueryRowContext(ctx, `SELECT `+snapshotColumns+` FROM snapshots WHERE name = ? OR id = ?`, name, name))
	if errors.Is(err, sql.ErrNoRows) {
		return Snapshot{}, fmt.Errorf("snapshot %q: %w", name, ErrNotExist)
	}
	return sn, err
}

// ListSnapshots returns all snapshots, oldest first.
func (s *Store) ListSnapshots(ctx context.Context) ([]Snapshot, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+snapshotColumns+` FROM snapshots ORDER BY created_at`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Snapshot
	for rows.Next() {
		sn, err := scanSnapshot(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, sn)
	}
	return out, rows.Err()
}

// DeleteSnapshot removes the snapshot's record.
func (s *Store) DeleteSnapshot(ctx context.Context, id string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM snapshots WHERE id = ?`, id)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("snapshot %s: %w", id, ErrNotExist)
	}
	return nil
}

// SnapshotsUsingImage returns the names of snapshots of VMs of image,
// but for those of kind except (which go with the image).
func (s *Store) SnapshotsUsingImage(ctx context.Context, image, except string) ([]string, error) {
	return s.names(ctx, `SELECT name FROM snapshots WHERE image = ? AND kind != ? ORDER BY name`, image, except)
}

// SnapshotsUsingKernel returns the names of snapshots whose VM booted
// kernel.
func (s *Store) SnapshotsUsingKernel(ctx context.Context, kernel string) ([]string, error) {
	return s.names(ctx, `SELECT name FROM snapshots WHERE kernel = ? ORDER BY name`, kernel)
}
