package disk

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// MethodOverlay is the clone method of a qcow2 layer over a read-only
// base: nothing is copied.
const MethodOverlay = "qcow2-overlay"

// QEMUImg is the qemu-img binary the tests check layers with.
var QEMUImg = "qemu-img"

// The layout of the qcow2 files CreateOverlay writes, the one qemu-img
// create -f qcow2 makes (version 3, 64 KiB clusters, 16-bit refcounts):
// cluster 0 the header, 1 the refcount table, 2 its one refcount block,
// then the L1 table, all zero (nothing is allocated: every read falls
// through to the backing file).
const (
	qcow2ClusterBits   = 16
	qcow2ClusterSize   = 1 << qcow2ClusterBits
	qcow2HeaderLen     = 112 // version 3 fields and the compression type byte, padded
	qcow2RefcountOrder = 4   // 16-bit refcounts
	qcow2ExtBackingFmt = 0xe2792aca
	// An L2 table of one cluster maps clusterSize/8 clusters.
	qcow2L2Bytes = qcow2ClusterSize * (qcow2ClusterSize / 8)
)

// CreateOverlay makes path a new qcow2 file of size bytes (0: the
// backing file's size; rounded up to 512) whose backing file is backing,
// of format backingFormat ("raw" or "qcow2"). backing must be absolute:
// the header keeps the name as given. path must not exist; on error it is
// removed. The file is written here, as qemu-img create would write it,
// in well under a millisecond (qemu-img itself takes ~50 ms to start);
// nothing of the backing file is read but its size when size is 0.
func CreateOverlay(ctx context.Context, backing, backingFormat, path string, size int64) error {
	if !strings.HasPrefix(backing, "/") {
		return fmt.Errorf("overlay backing %q: must be an absolute path", backing)
	}
	if backingFormat != "raw" && backingFormat != "qcow2" {
		return fmt.Errorf("overlay backing format %q: use raw or qcow2", backingFormat)
	}
	if len(backing) > maxBackingName {
		return fmt.Errorf("overlay backing %q: name longer than %d bytes", backing, maxBackingName)
	}
	if size == 0 {
		var err error
		if size, err = imageSize(backing, backingFormat); err != nil {
			return fmt.Errorf("overlay backing %s: %w", backing, err)
		}
	}
	if size <= 0 {
		return fmt.Errorf("overlay %s: size %d: must be positive", path, size)
	}
	size = (size + 511) &^ 511
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("overlay %s: %w", path, err)
	}
	err = writeQCOW2(f, backing, backingFormat, size)
	if err == nil {
		// On the disk before a row names it: a power loss must not
		// leave a VM whose disk is an empty file.
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("creating overlay %s: %w", path, err)
	}
	return nil
}

// syncDir makes the entries of dir durable (a new file's name).
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// writeQCOW2 writes an empty qcow2 image of size bytes over backing into
// the new, empty file f.
func writeQCOW2(f *os.File, backing, backingFormat string, size int64) error {
	l1Size := (size + qcow2L2Bytes - 1) / qcow2L2Bytes
	l1Clusters := (l1Size*8 + qcow2ClusterSize - 1) / qcow2ClusterSize
	const refTable, refBlock, l1Table = 1 * qcow2ClusterSize, 2 * qcow2ClusterSize, 3 * qcow2ClusterSize
	clusters := 3 + l1Clusters
	if clusters > qcow2ClusterSize/2 {
		return fmt.Errorf("size %d: too large for one refcount block", size)
	}

	hdr := make([]byte, qcow2ClusterSize)
	be := binary.BigEndian
	be.PutUint32(hdr[0:], qcow2Magic)
	be.PutUint32(hdr[4:], 3) // version
	be.PutUint32(hdr[20:], qcow2ClusterBits)
	be.PutUint64(hdr[24:], uint64(size))
	be.PutUint32(hdr[32:], 0) // no encryption
	be.PutUint32(hdr[36:], uint32(l1Size))
	be.PutUint64(hdr[40:], l1Table)
	be.PutUint64(hdr[48:], refTable)
	be.PutUint32(hdr[56:], 1) // refcount table clusters
	// 60: no snapshots; 72, 80, 88: no incompatible, compatible or
	// autoclear features.
	be.PutUint32(hdr[96:], qcow2RefcountOrder)
	be.PutUint32(hdr[100:], qcow2HeaderLen)
	// 104: compression type 0, zlib.
	off := qcow2HeaderLen
	be.PutUint32(hdr[off:], qcow2ExtBackingFmt)
	be.PutUint32(hdr[off+4:], uint32(len(backingFormat)))
	copy(hdr[off+8:], backingFormat)
	off += 8 + (len(backingFormat)+7)&^7
	off += 8 // the end of the extensions: type 0, length 0
	be.PutUint64(hdr[8:], uint64(off))
	be.PutUint32(hdr[16:], uint32(len(backing)))
	copy(hdr[off:], backing)

	table := make([]byte, 8)
	be.PutUint64(table, refBlock)
	block := make([]byte, 2*clusters)
	for i := range clusters {
		be.PutUint16(block[2*i:], 1)
	}
	for _, w := range []struct {
		b   []byte
		off int64
	}{{hdr[:off+len(backing)], 0}, {table, refTable}, {block, refBlock}} {
		if _, err := f.WriteAt(w.b, w.off); err != nil {
			return err
		}
	}
	// The L1 table is all zero: the file only needs to reach its end.
	return f.Truncate(l1Table + l1Size*8)
}

// imageSize is the disk size of the image at path of format: a raw
// file's length, or a qcow2 header's size field.
func imageSize(path, format string) (int64, error) {
	if format == "raw" {
		st, err := os.Stat(path)
		if err != nil {
			return 0, err
		}
		return st.Size(), nil
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var hdr [32]byte
	if _, err := f.ReadAt(hdr[:], 0); err != nil {
		return 0, fmt.Errorf("reading qcow2 header: %w", err)
	}
	if binary.BigEndian.Uint32(hdr[0:4]) != qcow2Magic {
		return 0, errors.New("not a qcow2 file")
	}
	return int64(binary.BigEndian.Uint64(hdr[24:32])), nil
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
