// Package atomicfile replaces files so that a reader, or the file system
// after a crash, sees either the old content or the new, never a part.
package atomicfile

import (
	"io/fs"
	"os"
	"path/filepath"
)

// Write creates or replaces the file at path with what fill writes. fill
// gets a fresh temp file in path's directory, created exclusively with
// mode 0600 and an unpredictable name (.tmp-<base>-<random>, for sweeps
// of what a crash left), so nothing planted there is written through.
// Once fill returns nil the temp file gets mode (after whatever fill did
// to it, so a chown in fill cannot clear setuid), is synced, renamed over
// path, and the directory is synced. On error the
// temp file is removed and path is left as it was. The parent directory
// must exist.
func Write(path string, mode fs.FileMode, fill func(f *os.File) error) error {
	return write(path, mode, fill, true)
}

// Replace is WriteFile without the syncs: a reader sees the old content
// or the new, and so does the file system after a crash once the caller
// has synced it (one syncfs for many files, where each sync is a disk
// flush: about 130 ms in a guest under software emulation). Until then
// a crash may keep the old file.
func Replace(path string, data []byte, mode fs.FileMode) error {
	return write(path, mode, func(f *os.File) error {
		_, err := f.Write(data)
		return err
	}, false)
}

func write(path string, mode fs.FileMode, fill func(f *os.File) error, sync bool) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	err = fill(f)
	if err == nil {
		err = f.Chmod(mode)
	}
	if err == nil && sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if !sync {
		return nil
	}
	return syncDir(dir)
}

// WriteFile is Write with data as the content.
func WriteFile(path string, data []byte, mode fs.FileMode) error {
	return Write(path, mode, func(f *os.File) error {
		_, err := f.Write(data)
		return err
	})
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
