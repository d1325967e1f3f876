package store

import (
	"context"
	"database/sql"
	"fmt"
	"net/netip"
	"time"
)

// Lease is one guest address held by a VM.
type Lease struct {
	IP        netip.Addr
	VMID      string
	MAC       string
	Tap       string
	CreatedAt time.Time
}

// AllocateLease gives vmID an address chosen by pick from those not in
// use, in one write transaction, so concurrent creates never get the same
// address. A VM that already holds a lease gets it back.
func (s *Store) AllocateLease(ctx context.Context, vmID, mac string, pick func(inUse map[netip.Addr]bool) (netip.Addr, error)) (Lease, error) {
	var out Lease
	err := s.tx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT ip, vm_id, mac, tap, created_at FROM leases`)
		if err != nil {
			return err
		}
		inUse := map[netip.Addr]bool{}
		for rows.Next() {
			l, err := scanLease(rows)
			if err != nil {
				rows.Close()
				return err
			}
			if l.VMID == vmID {
				out = l
			}
			inUse[l.IP] = true
		}
		rows.Close()
		if out.IP.IsValid() {
			return nil
		}
		ip, err := pick(inUse)
		if err != nil {
			return err
		}
		now := time.Now()
		if _, err := tx.ExecContext(ctx, `INSERT INTO leases (ip, vm_id, mac, created_at) VALUES (?,?,?,?)`,
			ip.String(), vmID, mac, now.UnixNano()); err != nil {
			return fmt.Errorf("leasing %s: %w", ip, err)
		}
		out = Lease{IP: ip, VMID: vmID, MAC: mac, CreatedAt: now}
		return nil
	})
	return out, err
}

// SetLeaseTap records the tap a VM's lease uses.
func (s *Store) SetLeaseTap(ctx context.Context, vmID, tap string) error {
	_, err := s.db.ExecContext(ctx, `UPDATE leases SET tap = ? WHERE vm_id = ?`, tap, vmID)
	return err
}

// LeaseOf returns the VM's lease, or ErrNotExist.
func (s *Store) LeaseOf(ctx context.Context, vmID string) (Lease, error) {
	l, err := scanLease(s.db.QueryRowContext(ctx, `SELECT ip, vm_id, mac, tap, created_at FROM leases WHERE vm_id = ?`, vmID))
	if err == sql.ErrNoRows {
		return Lease{}, fmt.Errorf("lease of vm %s: %w", vmID, ErrNotExist)
	}
	return l, err
}

// ReleaseLeases frees the VM's addresses.
func (s *Store) ReleaseLeases(ctx context.Context, vmID string) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM leases WHERE vm_id = ?`, vmID)
	return err
}

// Leases returns every lease by address.
func (s *Store) Leases(ctx context.Context) ([]Lease, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT ip, vm_id, mac, tap, created_at FROM leases ORDER BY created_at`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Lease
	for rows.Next() {
		l, err := scanLease(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return out, rows.Err()
}

// PruneLeases removes leases of VMs that no longer exist and returns them.
func (s *Store) PruneLeases(ctx context.Context) ([]Lease, error) {
	var out []Lease
	err := s.tx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT ip, vm_id, mac, tap, created_at FROM leases
			WHERE vm_id NOT IN (SELECT id FROM vms)`)
		if err != nil {
			return err
		}
		for rows.Next() {
			l, err := scanLease(rows)
			if err != nil {
				rows.Close()
				return err
			}
			out = append(out, l)
		}
		rows.Close()
		_, err = tx.ExecContext(ctx, `DELETE FROM leases WHERE vm_id NOT IN (SELECT id FROM vms)`)
		return err
	})
	return out, err
}

func scanLease(sc interface{ Scan(...any) error }) (Lease, error) {
	var l Lease
	var ip string
	var created int64
	if err := sc.Scan(&ip, &l.VMID, &l.MAC, &l.Tap, &created); err != nil {
		return Lease{}, err
	}
	l.IP, _ = netip.ParseAddr(ip)
	l.CreatedAt = time.Unix(0, created)
	return l, nil
}
