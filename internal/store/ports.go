package store

import (
	"context"
	"database/sql"
	"fmt"
	"net/netip"
	"time"
)

// Port is one port forward of a VM: host HostAddr:HostPort (Proto) to the
// guest's GuestPort. Proto, HostAddr and HostPort are unique on the host.
type Port struct {
	VMID      string
	Proto     string // "tcp" or "udp"
	HostAddr  string
	HostPort  int
	GuestPort int
	CreatedAt time.Time
}

// Key names the host side of p: "127.0.0.1:8080/tcp".
func (p Port) Key() string {
	if a, err := netip.ParseAddr(p.HostAddr); err == nil {
		return netip.AddrPortFrom(a, uint16(p.HostPort)).String() + "/" + p.Proto
	}
	return fmt.Sprintf("%s:%d/%s", p.HostAddr, p.HostPort, p.Proto)
}

// wildcard says whether addr listens on every address of its family.
func wildcard(addr string) bool {
	a, err := netip.ParseAddr(addr)
	return err == nil && a.IsUnspecified()
}

const portColumns = `vm_id, proto, host_addr, host_port, guest_port, created_at`

// AddPorts records the forwards ps of vmID, all or none, in one write
// transaction. A forward whose host side another forward (of any VM)
// already has, or overlaps (0.0.0.0 or :: against any address, same
// protocol and port), is refused with an error wrapping ErrExist that
// names it and the VM holding it; a VM that does not exist, ErrNotExist.
func (s *Store) AddPorts(ctx context.Context, vmID string, ps []Port) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM vms WHERE id = ?`, vmID).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("vm %s: %w", vmID, ErrNotExist)
		}
		now := time.Now().UnixNano()
		for _, p := range ps {
			if err := checkPortFree(ctx, tx, p); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO ports (`+portColumns+`) VALUES (?,?,?,?,?,?)`,
				vmID, p.Proto, p.HostAddr, p.HostPort, p.GuestPort, now); err != nil {
				if isUniqueViolation(err) {
					return fmt.Errorf("%s is given twice: %w", p.Key(), ErrExist)
				}
				return err
			}
		}
		return nil
	})
}

// CheckPorts fails as AddPorts would when a recorded forward has the
// host side of one of ps, or overlaps it; it records nothing.
func (s *Store) CheckPorts(ctx context.Context, ps []Port) error {
	for _, p := range ps {
		if err := checkPortFree(ctx, s.db, p); err != nil {
			return err
		}
	}
	return nil
}

type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// checkPortFree fails when a recorded forward has p's host side or one
// that overlaps it.
func checkPortFree(ctx context.Context, q querier, p Port) error {
	rows, err := q.QueryContext(ctx, `SELECT p.host_addr, COALESCE(v.name, p.vm_id) FROM ports p
		LEFT JOIN vms v ON v.id = p.vm_id WHERE p.proto = ? AND p.host_port = ?`, p.Proto, p.HostPort)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var addr, holder string
		if err := rows.Scan(&addr, &holder); err != nil {
			return err
		}
		if addr == p.HostAddr || wildcard(addr) || wildcard(p.HostAddr) {
			other := Port{Proto: p.Proto, HostAddr: addr, HostPort: p.HostPort}
			return &PortTakenError{Port: p, Other: other, VM: holder}
		}
	}
	return rows.Err()
}

// PortTakenError says a forward's host side is another forward's.
type PortTakenError struct {
	Port  Port   // the one refused
	Other Port   // the recorded one it collides with
	VM    string // the name of the VM holding Other
}

func (e *PortTakenError) Error() string {
	if e.Other.Key() == e.Port.Key() {
		return fmt.Sprintf("%s is already forwarded to vm %q", e.Port.Key(), e.VM)
	}
	return fmt.Sprintf("%s overlaps %s, already forwarded to vm %q", e.Port.Key(), e.Other.Key(), e.VM)
}

func (e *PortTakenError) Unwrap() error { return ErrExist }

// PortsOf returns the forwards of vmID, by protocol, address and port.
func (s *Store) PortsOf(ctx context.Context, vmID string) ([]Port, error) {
	return s.queryPorts(ctx, `SELECT `+portColumns+` FROM ports WHERE vm_id = ? ORDER BY proto, host_addr, host_port`, vmID)
}

// Ports returns every forward of every VM.
func (s *Store) Ports(ctx context.Context) ([]Port, error) {
	return s.queryPorts(ctx, `SELECT `+portColumns+` FROM ports ORDER BY vm_id, proto, host_addr, host_port`)
}

func (s *Store) queryPorts(ctx context.Context, q string, args ...any) ([]Port, error) {
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Port
	for rows.Next() {
		var p Port
		var created int64
		if err := rows.Scan(&p.VMID, &p.Proto, &p.HostAddr, &p.HostPort, &p.GuestPort, &created); err != nil {
			return nil, err
		}
		p.CreatedAt = time.Unix(0, created)
		out = append(out, p)
	}
	return out, rows.Err()
}

// RemovePorts removes the forwards of vmID with the host sides of keys
// (Proto, HostAddr, HostPort; a non-zero GuestPort must match too), all or
// none: one that vmID does not have fails the lot with an error wrapping
// ErrNotExist naming it. It returns the forwards removed.
func (s *Store) RemovePorts(ctx context.Context, vmID string, keys []Port) ([]Port, error) {
	var out []Port
	err := s.tx(ctx, func(tx *sql.Tx) error {
		for _, k := range keys {
			var p Port
			var created int64
			err := tx.QueryRowContext(ctx, `SELECT `+portColumns+` FROM ports WHERE vm_id = ? AND proto = ? AND host_addr = ? AND host_port = ?`,
				vmID, k.Proto, k.HostAddr, k.HostPort).Scan(&p.VMID, &p.Proto, &p.HostAddr, &p.HostPort, &p.GuestPort, &created)
			if err == sql.ErrNoRows || (err == nil && k.GuestPort != 0 && k.GuestPort != p.GuestPort) {
				return fmt.Errorf("forward %s: %w", k.Key(), ErrNotExist)
			}
			if err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM ports WHERE proto = ? AND host_addr = ? AND host_port = ?`,
				p.Proto, p.HostAddr, p.HostPort); err != nil {
				return err
			}
			p.CreatedAt = time.Unix(0, created)
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
