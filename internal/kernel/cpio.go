package kernel

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"syscall"
)

// cpioWriter writes a cpio archive in the "newc" format the kernel
// unpacks as an initramfs (see the kernel's
// Documentation/driver-api/early-userspace/buffer-format.rst).
type cpioWriter struct {
	w   io.Writer
	ino uint32
	err error
}

func newCpioWriter(w io.Writer) *cpioWriter { return &cpioWriter{w: w} }

// Dir adds a directory.
func (c *cpioWriter) Dir(name string, perm uint32) error {
	return c.entry(name, syscall.S_IFDIR|perm, 2, 0, 0, nil, 0)
}

// File adds a regular file of size bytes read from r.
func (c *cpioWriter) File(name string, perm uint32, r io.Reader, size int64) error {
	return c.entry(name, syscall.S_IFREG|perm, 1, 0, 0, r, size)
}

// Symlink adds a symbolic link to target.
func (c *cpioWriter) Symlink(name, target string) error {
	return c.entry(name, syscall.S_IFLNK|0o777, 1, 0, 0, strings.NewReader(target), int64(len(target)))
}

// CharDev adds a character device node.
func (c *cpioWriter) CharDev(name string, perm uint32, major, minor uint32) error {
	return c.entry(name, syscall.S_IFCHR|perm, 1, major, minor, nil, 0)
}

// Close writes the trailer. It does not close the underlying writer.
func (c *cpioWriter) Close() error {
	c.ino = ^uint32(0) // trailer inode 0 below
	if err := c.header("TRAILER!!!", 0, 0, 1, 0, 0, 0); err != nil {
		return err
	}
	return c.err
}

func (c *cpioWriter) entry(name string, mode, nlink, rmaj, rmin uint32, data io.Reader, size int64) error {
	if c.err != nil {
		return c.err
	}
	name = strings.TrimPrefix(name, "/")
	if name == "" || strings.Contains(name, "\x00") {
		return fmt.Errorf("cpio: bad name %q", name)
	}
	if size < 0 || size > 0xffffffff {
		return fmt.Errorf("cpio: %s: size %d out of range", name, size)
	}
	c.ino++
	if err := c.header(name, c.ino, mode, nlink, uint32(size), rmaj, rmin); err != nil {
		return err
	}
	if data != nil {
		n, err := io.CopyN(c.w, data, size)
		if err != nil {
			c.err = fmt.Errorf("cpio: writing %s (%d of %d bytes): %w", name, n, size, err)
			return c.err
		}
	}
	return c.pad(size)
}

func (c *cpioWriter) header(name string, ino, mode, nlink, size, rmaj, rmin uint32) error {
	if ino == ^uint32(0) {
		ino = 0
	}
	h := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%s\x00",
		ino, mode, 0, 0, nlink, 0, size, 0, 0, rmaj, rmin, len(name)+1, 0, name)
	if _, err := io.WriteString(c.w, h); err != nil {
		c.err = err
		return err
	}
	return c.pad(int64(len(h)))
}

// pad writes zeros up to the next multiple of four.
func (c *cpioWriter) pad(n int64) error {
	if p := (4 - n%4) % 4; p > 0 {
		if _, err := c.w.Write(make([]byte, p)); err != nil {
			c.err = err
			return err
		}
	}
	return nil
}

// walkCpio reads a newc archive up to its trailer, checking every header.
// The kernel accepts trailing zero padding, so nothing after it is read.
func walkCpio(r io.Reader) error {
	hdr := make([]byte, 110)
	var off int64
	for n := 0; ; n++ {
		if _, err := io.ReadFull(r, hdr); err != nil {
			return fmt.Errorf("entry %d at offset %d: %w", n, off, err)
		}
		if m := string(hdr[:6]); m != "070701" && m != "070702" {
			return fmt.Errorf("entry %d at offset %d: bad magic %q", n, off, m)
		}
		field := func(i int) (int64, error) {
			return strconv.ParseInt(string(hdr[6+8*i:14+8*i]), 16, 64)
		}
		size, err1 := field(6)
		nameLen, err2 := field(11)
		if err := errors.Join(err1, err2); err != nil || nameLen < 1 || nameLen > 4096 {
			return fmt.Errorf("entry %d at offset %d: bad header", n, off)
		}
		nameBuf := make([]byte, (110+nameLen+3)&^3-110)
		if _, err := io.ReadFull(r, nameBuf); err != nil {
			return fmt.Errorf("entry %d: truncated name: %w", n, err)
		}
		if string(nameBuf[:nameLen-1]) == "TRAILER!!!" {
			return nil
		}
		padded := (size + 3) &^ 3
		if got, err := io.CopyN(io.Discard, r, padded); err != nil {
			return fmt.Errorf("entry %q: %d of %d bytes: %w", nameBuf[:nameLen-1], got, padded, err)
		}
		off += 110 + int64(len(nameBuf)) + padded
	}
}
