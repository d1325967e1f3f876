package daemon

import (
	"errors"
	"os"
	"path/filepath"
)

// FindAgent locates the static guest agent: $BANGER_AGENT_BIN, beside the
// running binary, or in ../lib/banger/ relative to it (make install).
func FindAgent() (string, error) {
	if p := os.Getenv("BANGER_AGENT_BIN"); p != "" {
		return p, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	dir := filepath.Dir(exe)
	for _, cand := range []string{
		filepath.Join(dir, "banger-agent"),
		filepath.Join(dir, "..", "lib", "banger", "banger-agent"),
	} {
		if st, err := os.Stat(cand); err == nil && st.Mode().IsRegular() {
			return filepath.Clean(cand), nil
		}
	}
	return "", errors.New("banger-agent not found beside bangerd or in ../lib/banger (run: sudo make install)")
}
