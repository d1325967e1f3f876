package doctor

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// versionTimeout bounds each `<binary> --version`.
const versionTimeout = 3 * time.Second

// sbinDirs are searched after PATH: unprivileged users on Debian lack them
// in PATH, but bangerd (root) has them.
var sbinDirs = []string{"/usr/local/sbin", "/usr/sbin", "/sbin"}

// find looks a binary up like exec.LookPath, then in sbinDirs.
func (o Options) find(name string) (string, error) {
	p, err := o.LookPath(name)
	if err == nil || strings.ContainsRune(name, '/') {
		return p, err
	}
	for _, dir := range sbinDirs {
		if p, serr := o.LookPath(filepath.Join(dir, name)); serr == nil {
			return p, nil
		}
	}
	return "", err
}

// versionCheck runs `path args...` and fills c with the first line of its
// output, or a warning (a failure when required) when it does not run.
func versionCheck(ctx context.Context, c Check, path, fix string, args ...string) Check {
	v, err := commandVersion(ctx, path, args...)
	if err != nil {
		c.Status, c.Fix = StatusWarn, fix
		if c.Required {
			c.Status = StatusFail
		}
		c.Detail = fmt.Sprintf("%s does not run: %v", path, err)
		return c
	}
	c.Status, c.Detail = StatusOK, joinNonEmpty(v, "at "+path)
	return c
}

// commandVersion returns the first non-empty output line of a command.
func commandVersion(ctx context.Context, path string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, versionTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return "", fmt.Errorf("`%s %s` did not finish in %v", filepath.Base(path), strings.Join(args, " "), versionTimeout)
	}
	if err != nil {
		first := firstLine(string(out))
		if first == "" {
			return "", err
		}
		return "", fmt.Errorf("%w: %s", err, first)
	}
	return firstLine(string(out)), nil
}

func firstLine(s string) string {
	for l := range strings.Lines(s) {
		if l = strings.TrimSpace(l); l != "" {
			return l
		}
	}
	return ""
}

// nearestDir returns path or its nearest existing ancestor.
func nearestDir(path string, exists func(string) bool) string {
	path = filepath.Clean(path)
	for !exists(path) {
		parent := filepath.Dir(path)
		if parent == path {
			break
		}
		path = parent
	}
	return path
}

// statfsFree returns the bytes available to unprivileged users on the
// filesystem holding path.
func statfsFree(path string) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", path, err)
	}
	return st.Bavail * uint64(st.Bsize), nil //nolint:gosec // Bsize is positive
}

// probeNFTables lists the tables of the current network namespace over
// netlink: it fails when nf_tables is missing or access is denied.
func probeNFTables(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	conn, err := nftables.New()
	if err != nil {
		return fmt.Errorf("opening netlink: %w", err)
	}
	if _, err := conn.ListTables(); err != nil {
		if errors.Is(err, unix.EPERM) {
			return fmt.Errorf("listing tables: %w (needs root or CAP_NET_ADMIN)", err)
		}
		return fmt.Errorf("listing tables: %w", err)
	}
	return nil
}
