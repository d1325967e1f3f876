package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// Vsock context ids: 0-2 are reserved (hypervisor, local, host) and
// 0xffffffff is VMADDR_CID_ANY, so VMs get MinCID..MaxCID.
const (
	MinCID uint32 = 3
	MaxCID uint32 = 0xfffffffe
)

// ErrNoCID reports that every context id is taken or refused.
var ErrNoCID = errors.New("no free vsock context id")

// AllocateCID returns the vsock context id of VM vmID, assigning one in
// the same write transaction when it has none, so concurrent calls never
// hand out the same id. A VM keeps its id across restarts and daemon
// restarts; deleting the VM frees it. When the VM's id is in avoid (the
// host refused it: another VMM on the host holds it), the VM gets the
// lowest id that no other VM holds and that is not in avoid.
func (s *Store) AllocateCID(ctx context.Context, vmID string, avoid map[uint32]bool) (uint32, error) {
	var cid uint32
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var cur uint32
		err := tx.QueryRowContext(ctx, `SELECT vsock_cid FROM vms WHERE id = ?`, vmID).Scan(&cur)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("vm %s: %w", vmID, ErrNotExist)
		}
		if err != nil {
			return err
		}
		if cur != 0 && !avoid[cur] {
			cid = cur
			return nil
		}
		taken, err := takenCIDs(ctx, tx, vmID)
		if err != nil {
			return err
		}
		for c := MinCID; c <= MaxCID; c++ {
			if !taken[c] && !avoid[c] {
				cid = c
				break
			}
			if c == MaxCID {
				return ErrNoCID
			}
		}
		_, err = tx.ExecContext(ctx, `UPDATE vms SET vsock_cid = ? WHERE id = ?`, cid, vmID)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("allocating a vsock cid: %w", err)
	}
	return cid, nil
}

func takenCIDs(ctx context.Context, tx *sql.Tx, except string) (map[uint32]bool, error) {
	rows, err := tx.QueryContext(ctx, `SELECT vsock_cid FROM vms WHERE vsock_cid != 0 AND id != ?`, except)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	taken := map[uint32]bool{}
	for rows.Next() {
		var c uint32
		if err := rows.Scan(&c); err != nil {
			return nil, err
		}
		taken[c] = true
	}
	return taken, rows.Err()
}
