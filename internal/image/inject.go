package image

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"banger/internal/atomicfile"
	"banger/internal/guest"
)

// AgentUnitName is the systemd unit that runs the guest agent.
const AgentUnitName = "banger-agent.service"

// agentUnit starts the agent early (it only needs the root filesystem and
// retries until its transport appears) and restarts it for ever.
const agentUnit = `[Unit]
Description=banger guest agent
DefaultDependencies=no
After=local-fs.target systemd-modules-load.service
Conflicts=shutdown.target
Before=shutdown.target
StartLimitIntervalSec=0

[Service]
Type=simple
ExecStart=` + guest.AgentPath + `
Restart=always
RestartSec=1
OOMScoreAdjust=-900

[Install]
WantedBy=sysinit.target multi-user.target
`

// agentWants are the targets the unit is enabled in (what
// "systemctl enable" would link, given WantedBy).
var agentWants = []string{"sysinit.target.wants", "multi-user.target.wants"}

// WriteAgentFiles writes the agent's files under tree, which may be a
// whole root filesystem or an overlay to copy into one later: the binary
// (0755) and, when systemd is true, the unit and its enablement links.
func WriteAgentFiles(tree, agentBin string, systemd bool) error {
	if err := copyAtomic(agentBin, filepath.Join(tree, guest.AgentPath), 0o755); err != nil {
		return fmt.Errorf("installing agent: %w", err)
	}
	if !systemd {
		return nil
	}
	unitDir := filepath.Join(tree, "etc/systemd/system")
	unit := filepath.Join(unitDir, AgentUnitName)
	if err := writeAtomicBytes(unit, []byte(agentUnit), 0o644); err != nil {
		return fmt.Errorf("writing agent unit: %w", err)
	}
	for _, wants := range agentWants {
		link := filepath.Join(unitDir, wants, AgentUnitName)
		if err := relink("/etc/systemd/system/"+AgentUnitName, link); err != nil {
			return fmt.Errorf("enabling agent unit: %w", err)
		}
	}
	return nil
}

// copyAtomic copies src to dst with mode, atomically.
func copyAtomic(src, dst string, mode os.FileMode) error {
	in, _, err := openRegular(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return writeAtomicWith(dst, mode, func(w io.Writer) error {
		_, err := io.Copy(w, in)
		return err
	})
}

// openRegular opens p for reading without following a symlink, and only
// when it is a regular file.
func openRegular(p string) (*os.File, os.FileInfo, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, err
	}
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = fmt.Errorf("%s is not a regular file", p)
	}
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, st, nil
}

func writeAtomicBytes(dst string, data []byte, mode os.FileMode) error {
	return writeAtomicWith(dst, mode, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// writeAtomicWith writes dst atomically (see atomicfile.Write). Parent
// directories are created 0755.
func writeAtomicWith(dst string, mode os.FileMode, fill func(io.Writer) error) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	err := atomicfile.Write(dst, mode, func(f *os.File) error { return fill(f) })
	if err != nil {
		return fmt.Errorf("writing %s: %w", dst, err)
	}
	return nil
}

// relink makes link point to target, replacing what was there.
func relink(target, link string) error {
	if cur, err := os.Readlink(link); err == nil && cur == target {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		return err
	}
	if err := os.Remove(link); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return os.Symlink(target, link)
}
