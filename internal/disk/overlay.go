package disk

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// MethodOverlay is the clone method of a qcow2 layer over a read-only
// base: nothing is copied.
const MethodOverlay = "qcow2-overlay"

// QEMUImg is the qemu-img binary CreateOverlay runs.
var QEMUImg = "qemu-img"

// CreateOverlay makes path a new qcow2 file of size bytes (0: the
// backing file's size) whose backing file is backing, of format
// backingFormat ("raw" or "qcow2"). backing must be absolute: the header
// keeps the name as given. path must not exist; on error it is removed.
func CreateOverlay(ctx context.Context, backing, backingFormat, path string, size int64) error {
	if !strings.HasPrefix(backing, "/") {
		return fmt.Errorf("overlay backing %q: must be an absolute path", backing)
	}
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("overlay %s: %w", path, os.ErrExist)
	}
	args := []string{"create", "-q", "-f", "qcow2", "-b", backing, "-F", backingFormat, path}
	if size > 0 {
		args = append(args, strconv.FormatInt(size, 10))
	}
	out, err := exec.CommandContext(ctx, QEMUImg, args...).CombinedOutput()
	if err != nil {
		os.Remove(path)
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("creating overlay %s: %s not found (install qemu-utils)", path, QEMUImg)
		}
		return fmt.Errorf("creating overlay %s: %v: %s", path, err, strings.TrimSpace(string(out)))
	}
	return os.Chmod(path, 0o600)
}

// qcow2Magic starts every qcow2 file ("QFI\xfb").
const qcow2Magic = 0x514649fb

// maxBackingName bounds the backing file name read from a header (QEMU's
// own limit is 1023 bytes).
const maxBackingName = 1023

// Backing returns the backing file named in the header of the qcow2 file
// at path, or "" when it has none. It reports whether path is qcow2 at
// all: a raw file gives ("", false, nil).
func Backing(path string) (backing string, isQCOW2 bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return "", false, err
	}
	defer f.Close()
	var hdr [20]byte
	if _, err := io.ReadFull(f, hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return "", false, nil
		}
		return "", false, err
	}
	if binary.BigEndian.Uint32(hdr[0:4]) != qcow2Magic {
		return "", false, nil
	}
	off := binary.BigEndian.Uint64(hdr[8:16])
	n := binary.BigEndian.Uint32(hdr[16:20])
	if off == 0 || n == 0 {
		return "", true, nil
	}
	if n > maxBackingName {
		return "", true, fmt.Errorf("%s: backing file name of %d bytes: corrupt header", path, n)
	}
	name := make([]byte, n)
	if _, err := f.ReadAt(name, int64(off)); err != nil {
		return "", true, fmt.Errorf("%s: reading backing file name: %w", path, err)
	}
	return string(name), true, nil
}
