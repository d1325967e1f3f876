package vmm

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// CheckCmdline returns nil when process pid has arg as one whole argument
// and, when program is not empty, the base name of its argv[0] contains
// program. Drivers call it before adopting a process, so that a handle
// whose PID was reused is not mistaken for their VMM. Every error it
// returns wraps ErrNotRunning.
func CheckCmdline(pid int, program, arg string) error {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return fmt.Errorf("pid %d: %w: %w", pid, ErrNotRunning, err)
	}
	argv := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
	if program != "" && !strings.Contains(filepath.Base(argv[0]), program) {
		return fmt.Errorf("pid %d is %q, not %s: %w", pid, argv[0], program, ErrNotRunning)
	}
	for _, a := range argv {
		if a == arg {
			return nil
		}
	}
	return fmt.Errorf("pid %d is not the vmm of this vm (no argument %q; PID reused?): %w", pid, arg, ErrNotRunning)
}

// LogTail returns the last lines (at most maxLines, from the last 4 KiB)
// of the log file at path, for error messages; "" when it cannot be read.
func LogTail(path string, maxLines int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	const maxBytes = 4096
	if st, err := f.Stat(); err == nil && st.Size() > maxBytes {
		f.Seek(st.Size()-maxBytes, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > maxLines {
		lines = lines[len(lines)-maxLines:]
	}
	return strings.TrimSpace(string(bytes.Join(lines, []byte("\n"))))
}
