package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// VM is one VM's record.
type VM struct {
	ID         string
	Name       string
	State      string
	Image      string
	Kernel     string
	VMM        string
	VCPUs      int
	MemoryMiB  int
	DiskBytes  int64
	Dir        string
	DiskMethod string
	Spec       string // JSON of vmm.Spec
	Handle     string // JSON of vmm.Handle
	LastError  string
	VsockCID   uint32 // set only by AllocateCID; 0: none yet
	Workspace  string // JSON of api.WorkspaceSource; "{}" when none
	Synced     string // JSON list of the credential files synced at the last start
	Net        string // JSON of api.NetPolicy; "{}": the default (nat)
	Layer      string // the root disk's qcow2 layer (a file name in the layers directory); "": a raw disk in Dir
	Origin     string // the snapshot it was restored from, if any
	Boot       string // how its last start went: cold or warm, and why
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

const vmColumns = `id, name, state, image, kernel, vmm, vcpus, memory_mib, disk_bytes, dir,
	disk_method, spec, handle, last_error, vsock_cid, workspace, synced, net, layer, origin, boot, created_at, updated_at`

func scanVM(sc interface{ Scan(...any) error }) (VM, error) {
	var v VM
	var created, updated int64
	err := sc.Scan(&v.ID, &v.Name, &v.State, &v.Image, &v.Kernel, &v.VMM, &v.VCPUs, &v.MemoryMiB,
		&v.DiskBytes, &v.Dir, &v.DiskMethod, &v.Spec, &v.Handle, &v.LastError, &v.VsockCID, &v.Workspace, &v.Synced,
		&v.Net, &v.Layer, &v.Origin, &v.Boot, &created, &updated)
	v.CreatedAt = time.Unix(0, created)
	v.UpdatedAt = time.Unix(0, updated)
	return v, err
}

// VMChange is one committed change to a VM record.
type VMChange struct {
	Action string // VMCreated, VMUpdated or VMDeleted
	ID     string
	Name   string
	State  string // empty for VMDeleted
}

// VMChange actions.
const (
	VMCreated = "created"
	VMUpdated = "updated"
	VMDeleted = "deleted"
)

// OnVMChange sets f to be called after every committed CreateVM, UpdateVM
// and DeleteVM, on the caller's goroutine: f must not block or call back
// into the store.
func (s *Store) OnVMChange(f func(VMChange)) { s.onVM.Store(&f) }

func (s *Store) vmChanged(c VMChange) {
	if f := s.onVM.Load(); f != nil {
		(*f)(c)
	}
}

// CreateVM inserts v. A taken name returns an error wrapping ErrExist.
func (s *Store) CreateVM(ctx context.Context, v VM) error {
	now := time.Now().UnixNano()
	_, err := s.db.ExecContext(ctx, `INSERT INTO vms (`+vmColumns+`)
		VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,0,?,?,?,?,?,?,?,?)`,
		v.ID, v.Name, v.State, v.Image, v.Kernel, v.VMM, v.VCPUs, v.MemoryMiB, v.DiskBytes, v.Dir,
		v.DiskMethod, nz(v.Spec), nz(v.Handle), v.LastError, nz(v.Workspace), nzList(v.Synced),
		nz(v.Net), v.Layer, v.Origin, v.Boot, now, now)
	if isUniqueViolation(err) {
		return fmt.Errorf("vm %q: %w", v.Name, ErrExist)
	}
	if err == nil {
		s.vmChanged(VMChange{Action: VMCreated, ID: v.ID, Name: v.Name, State: v.State})
	}
	return err
}

func nz(s string) string {
	if s == "" {
		return "{}"
	}
	return s
}

func nzList(s string) string {
	if s == "" {
		return "[]"
	}
	return s
}

// UpdateVM replaces the mutable fields of the VM with v.ID.
func (s *Store) UpdateVM(ctx context.Context, v VM) error {
	res, err := s.db.ExecContext(ctx, `UPDATE vms SET state=?, vmm=?, spec=?, handle=?, last_error=?,
		disk_method=?, dir=?, workspace=?, synced=?, net=?, layer=?, origin=?, boot=?, updated_at=? WHERE id=?`,
		v.State, v.VMM, nz(v.Spec), nz(v.Handle), v.LastError, v.DiskMethod, v.Dir,
		nz(v.Workspace), nzList(v.Synced), nz(v.Net), v.Layer, v.Origin, v.Boot, time.Now().UnixNano(), v.ID)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("vm %s: %w", v.ID, ErrNotExist)
	}
	s.vmChanged(VMChange{Action: VMUpdated, ID: v.ID, Name: v.Name, State: v.State})
	return nil
}

// VMByName returns the VM called name.
func (s *Store) VMByName(ctx context.Context, name string) (VM, error) {
	v, err := scanVM(s.db.QueryRowContext(ctx, `SELECT `+vmColumns+` FROM vms WHERE name = ? OR id = ?`, name, name))
	if errors.Is(err, sql.ErrNoRows) {
		return VM{}, fmt.Errorf("vm %q: %w", name, ErrNotExist)
	}
	return v, err
}

// ListVMs returns all VMs, oldest first.
func (s *Store) ListVMs(ctx context.Context) ([]VM, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+vmColumns+` FROM vms ORDER BY created_at`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []VM
	for rows.Next() {
		v, err := scanVM(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// DeleteVM removes the VM, its leases, sessions and port forwards in one
// transaction.
func (s *Store) DeleteVM(ctx context.Context, id string) error {
	var name string
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if err := tx.QueryRowContext(ctx, `SELECT name FROM vms WHERE id = ?`, id).Scan(&name); errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("vm %s: %w", id, ErrNotExist)
		} else if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM leases WHERE vm_id = ?`, id); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE vm_id = ?`, id); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM ports WHERE vm_id = ?`, id); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM vms WHERE id = ?`, id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("vm %s: %w", id, ErrNotExist)
		}
		return nil
	})
	if err == nil {
		s.vmChanged(VMChange{Action: VMDeleted, ID: id, Name: name})
	}
	return err
}

// VMsUsingImage returns the names of VMs created from image.
func (s *Store) VMsUsingImage(ctx context.Context, image string) ([]string, error) {
	return s.names(ctx, `SELECT name FROM vms WHERE image = ? ORDER BY name`, image)
}

// VMsUsingKernel returns the names of VMs that boot kernel.
func (s *Store) VMsUsingKernel(ctx context.Context, kernel string) ([]string, error) {
	return s.names(ctx, `SELECT name FROM vms WHERE kernel = ? ORDER BY name`, kernel)
}

func (s *Store) names(ctx context.Context, q string, args ...any) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, rows.Err()
}
