package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Session is what the daemon records of one session: a long-lived
// command the guest agent of VM VMID runs.
type Session struct {
	VMID       string
	Name       string
	Argv       []string
	Dir        string
	StdinMode  string
	State      string // api.SessionRunning, SessionExited or SessionLost
	PID        int
	ExitCode   int // -1 until it exited
	ExitSignal int
	Reason     string // why it is lost
	StartedAt  time.Time
	EndedAt    time.Time // zero while running
}

const sessionColumns = `vm_id, name, argv, dir, stdin_mode, state, pid, exit_code, exit_signal, reason, started_at, ended_at`

func scanSession(sc interface{ Scan(...any) error }) (Session, error) {
	var s Session
	var argv string
	var started, ended int64
	err := sc.Scan(&s.VMID, &s.Name, &argv, &s.Dir, &s.StdinMode, &s.State, &s.PID, &s.ExitCode,
		&s.ExitSignal, &s.Reason, &started, &ended)
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal([]byte(argv), &s.Argv); err != nil {
		return s, fmt.Errorf("session %s: argv: %w", s.Name, err)
	}
	s.StartedAt = time.Unix(0, started)
	if ended != 0 {
		s.EndedAt = time.Unix(0, ended)
	}
	return s, nil
}

// PutSession inserts s, replacing any record of the same VM and name.
func (s *Store) PutSession(ctx context.Context, ss Session) error {
	argv, err := json.Marshal(ss.Argv)
	if err != nil {
		return err
	}
	var ended int64
	if !ss.EndedAt.IsZero() {
		ended = ss.EndedAt.UnixNano()
	}
	_, err = s.db.ExecContext(ctx, `INSERT OR REPLACE INTO sessions (`+sessionColumns+`)
		VALUES (?,?,?,?,?,?,?,?,?,?,?,?)`,
		ss.VMID, ss.Name, string(argv), ss.Dir, ss.StdinMode, ss.State, ss.PID, ss.ExitCode,
		ss.ExitSignal, ss.Reason, ss.StartedAt.UnixNano(), ended)
	return err
}

// EndSession records that a running session ended: exited (with its
// code and signal) or lost (with the reason). A session already ended is
// left as it is; the answer says whether this call ended it.
func (s *Store) EndSession(ctx context.Context, ss Session) (bool, error) {
	var ended int64
	if !ss.EndedAt.IsZero() {
		ended = ss.EndedAt.UnixNano()
	}
	res, err := s.db.ExecContext(ctx, `UPDATE sessions SET state=?, exit_code=?, exit_signal=?, reason=?, ended_at=?
		WHERE vm_id=? AND name=? AND state='running'`,
		ss.State, ss.ExitCode, ss.ExitSignal, ss.Reason, ended, ss.VMID, ss.Name)
	if err != nil {
		return false, err
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

// SessionByName returns VM vmID's session called name.
func (s *Store) SessionByName(ctx context.Context, vmID, name string) (Session, error) {
	ss, err := scanSession(s.db.QueryRowContext(ctx,
		`SELECT `+sessionColumns+` FROM sessions WHERE vm_id = ? AND name = ?`, vmID, name))
	if errors.Is(err, sql.ErrNoRows) {
		return Session{}, fmt.Errorf("session %q: %w", name, ErrNotExist)
	}
	return ss, err
}

// ListSessions returns VM vmID's sessions (all VMs' when vmID is empty),
// oldest first.
func (s *Store) ListSessions(ctx context.Context, vmID string) ([]Session, error) {
	q := `SELECT ` + sessionColumns + ` FROM sessions WHERE vm_id = ? OR ? = '' ORDER BY started_at`
	rows, err := s.db.QueryContext(ctx, q, vmID, vmID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Session
	for rows.Next() {
		ss, err := scanSession(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, ss)
	}
	return out, rows.Err()
}
