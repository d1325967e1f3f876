// Package store keeps bangerd's state in a SQLite database (modernc.org/sqlite,
// no cgo): VMs (with their vsock context ids), images, kernels and IP leases. Every write is a transaction,
// so a crash at any point loses nothing already acknowledged.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync/atomic"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// Sentinel errors. Wrap them with %w; callers test with errors.Is.
var (
	ErrNotExist = errors.New("does not exist")
	ErrExist    = errors.New("already exists")
)

// Store is the state database. It is safe for concurrent use, also by
// several processes.
type Store struct {
	db *sql.DB
	// onVM, when set, hears of every committed VM change (see OnVMChange).
	onVM atomic.Pointer[func(VMChange)]
}

// Open opens (creating if needed) the database at path and applies any
// pending migrations.
func Open(ctx context.Context, path string) (*Store, error) {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "foreign_keys(1)")
	// FULL: a commit is on the disk when it returns, so what the daemon
	// acknowledged survives a power loss, not only a crash (NORMAL, in WAL
	// mode, may roll the last commits back).
	q.Add("_pragma", "synchronous(FULL)")
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	s := &Store{db: db}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("migrating %s: %w", path, err)
	}
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// SchemaVersion returns the number of migrations applied.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	err := s.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v)
	return v, err
}

// migrations are applied in order, each in its own transaction. Append
// only: never edit a migration that has shipped.
var migrations = []string{
	// 1: VMs. Images and kernels keep their manifests in their stores.
	`CREATE TABLE vms (
		id         TEXT PRIMARY KEY,
		name       TEXT NOT NULL UNIQUE,
		state      TEXT NOT NULL,
		image      TEXT NOT NULL DEFAULT '',
		kernel     TEXT NOT NULL DEFAULT '',
		vmm        TEXT NOT NULL DEFAULT '',
		vcpus      INTEGER NOT NULL DEFAULT 1,
		memory_mib INTEGER NOT NULL DEFAULT 512,
		disk_bytes INTEGER NOT NULL DEFAULT 0,
		dir        TEXT NOT NULL DEFAULT '',
		disk_method TEXT NOT NULL DEFAULT '',
		spec       TEXT NOT NULL DEFAULT '{}',
		handle     TEXT NOT NULL DEFAULT '{}',
		last_error TEXT NOT NULL DEFAULT '',
		created_at INTEGER NOT NULL,
		updated_at INTEGER NOT NULL
	);`,
	// 2: IP leases, one per VM NIC.
	`CREATE TABLE leases (
		ip     TEXT PRIMARY KEY,
		vm_id  TEXT NOT NULL,
		mac    TEXT NOT NULL DEFAULT '',
		tap    TEXT NOT NULL DEFAULT '',
		created_at INTEGER NOT NULL
	);
	CREATE INDEX leases_vm ON leases(vm_id);`,
	// 3: each VM's vsock context id, unique among this daemon's VMs;
	// 0 means none assigned yet.
	`ALTER TABLE vms ADD COLUMN vsock_cid INTEGER NOT NULL DEFAULT 0;
	CREATE UNIQUE INDEX vms_vsock_cid ON vms(vsock_cid) WHERE vsock_cid != 0;`,
	// 4: where a VM's workspace came from (JSON of api.WorkspaceSource)
	// and which credential files were synced into it (JSON list of guest
	// paths, never contents).
	`ALTER TABLE vms ADD COLUMN workspace TEXT NOT NULL DEFAULT '{}';
	ALTER TABLE vms ADD COLUMN synced TEXT NOT NULL DEFAULT '[]';`,
	// 5: sessions: long-lived guest commands. The guest agent owns the
	// process; this row is what the daemon knows of it.
	`CREATE TABLE sessions (
		vm_id      TEXT NOT NULL,
		name       TEXT NOT NULL,
		argv       TEXT NOT NULL DEFAULT '[]',
		dir        TEXT NOT NULL DEFAULT '',
		stdin_mode TEXT NOT NULL DEFAULT 'pipe',
		state      TEXT NOT NULL,
		pid        INTEGER NOT NULL DEFAULT 0,
		exit_code  INTEGER NOT NULL DEFAULT -1,
		exit_signal INTEGER NOT NULL DEFAULT 0,
		reason     TEXT NOT NULL DEFAULT '',
		started_at INTEGER NOT NULL,
		ended_at   INTEGER NOT NULL DEFAULT 0,
		PRIMARY KEY (vm_id, name)
	);`,
	// 6: networking per VM: its egress policy (JSON of api.NetPolicy; '{}'
	// is the default, nat) and its port forwards.
	`ALTER TABLE vms ADD COLUMN net TEXT NOT NULL DEFAULT '{}';
	CREATE TABLE ports (
		vm_id      TEXT NOT NULL,
		proto      TEXT NOT NULL,
		host_addr  TEXT NOT NULL,
		host_port  INTEGER NOT NULL,
		guest_port INTEGER NOT NULL,
		created_at INTEGER NOT NULL,
		PRIMARY KEY (proto, host_addr, host_port)
	);
	CREATE INDEX ports_vm ON ports(vm_id);`,
	// 7: snapshots and disk layers. A VM's root disk may be a qcow2 layer
	// (vms.layer, a file name in the layers directory) over its image or a
	// snapshot's frozen layer; vms.origin is the snapshot it was restored
	// from, if any; vms.boot says how its last start went (cold or warm,
	// and why).
	`ALTER TABLE vms ADD COLUMN layer TEXT NOT NULL DEFAULT '';
	ALTER TABLE vms ADD COLUMN origin TEXT NOT NULL DEFAULT '';
	ALTER TABLE vms ADD COLUMN boot TEXT NOT NULL DEFAULT '';
	CREATE TABLE snapshots (
		id          TEXT PRIMARY KEY,
		name        TEXT NOT NULL UNIQUE,
		state       TEXT NOT NULL,
		kind        TEXT NOT NULL DEFAULT 'user',
		source_vm   TEXT NOT NULL DEFAULT '',
		image       TEXT NOT NULL DEFAULT '',
		kernel      TEXT NOT NULL DEFAULT '',
		vmm         TEXT NOT NULL DEFAULT '',
		vmm_version TEXT NOT NULL DEFAULT '',
		vcpus       INTEGER NOT NULL DEFAULT 0,
		memory_mib  INTEGER NOT NULL DEFAULT 0,
		disk_bytes  INTEGER NOT NULL DEFAULT 0,
		layer       TEXT NOT NULL DEFAULT '',
		dir         TEXT NOT NULL DEFAULT '',
		spec        TEXT NOT NULL DEFAULT '{}',
		meta        TEXT NOT NULL DEFAULT '{}',
		created_at  INTEGER NOT NULL
	);`,
}

func (s *Store) migrate(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL DEFAULT (strftime('%s','now')))`); err != nil {
		return err
	}
	for i, m := range migrations {
		version := i + 1
		err := s.tx(ctx, func(tx *sql.Tx) error {
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_migrations WHERE version = ?`, version).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				return nil
			}
			for _, stmt := range splitStatements(m) {
				if _, err := tx.ExecContext(ctx, stmt); err != nil {
					return fmt.Errorf("migration %d: %w", version, err)
				}
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations(version) VALUES (?)`, version)
			return err
		})
		if err != nil {
			return err
		}
	}
	var max int
	if err := s.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version),0) FROM schema_migrations`).Scan(&max); err != nil {
		return err
	}
	if max > len(migrations) {
		return fmt.Errorf("database schema version %d is newer than this bangerd knows (%d): upgrade banger", max, len(migrations))
	}
	return nil
}

func splitStatements(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ";") {
		if strings.TrimSpace(p) != "" {
			out = append(out, p)
		}
	}
	return out
}

// tx runs fn in an immediate (write-locking) transaction.
func (s *Store) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

func isUniqueViolation(err error) bool {
	return err != nil && strings.Contains(err.Error(), "UNIQUE constraint failed")
}
