package kernel

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
)

// kernelKind tells a bzImage from an ELF vmlinux by their magic numbers.
func kernelKind(data []byte) (string, error) {
	switch {
	case len(data) > 0x206 && string(data[0x202:0x206]) == "HdrS":
		return "bzImage", nil
	case bytes.HasPrefix(data, []byte("\x7fELF")):
		return "elf", nil
	}
	return "", fmt.Errorf("%w: not a Linux kernel (no bzImage \"HdrS\" header at 0x202 and no ELF magic)", ErrInvalid)
}

// kernelRelease returns the kernel's release (uname -r) from a bzImage's
// version string or an ELF's "Linux version" banner, or "".
func kernelRelease(data []byte) string {
	if kind, _ := kernelKind(data); kind == "bzImage" && len(data) > 0x210 {
		off := int(binary.LittleEndian.Uint16(data[0x20e:])) + 0x200
		if off < len(data) {
			end := bytes.IndexByte(data[off:], 0)
			if f := bytes.Fields(data[off : off+max(end, 0)]); len(f) > 0 {
				return string(f[0])
			}
		}
		return ""
	}
	i := bytes.Index(data, []byte("Linux version "))
	if i < 0 {
		return ""
	}
	f := bytes.Fields(data[i+len("Linux version ") : min(len(data), i+200)])
	if len(f) == 0 {
		return ""
	}
	return string(f[0])
}

// vmlinuxFromBzImage returns the ELF vmlinux inside an LZ4-compressed
// bzImage when that ELF has a PVH entry point (Xen note
// XEN_ELFNOTE_PHYS32_ENTRY), which QEMU and Firecracker boot directly.
// Other compressions or a missing note give an error; callers then use
// the bzImage.
func vmlinuxFromBzImage(bz []byte) ([]byte, error) {
	if kind, err := kernelKind(bz); err != nil || kind != "bzImage" {
		return nil, errors.New("not a bzImage")
	}
	if len(bz) < 0x250 {
		return nil, errors.New("truncated bzImage header")
	}
	setupSects := int(bz[0x1f1])
	if setupSects == 0 {
		setupSects = 4
	}
	pOff := int(binary.LittleEndian.Uint32(bz[0x248:]))
	pLen := int(binary.LittleEndian.Uint32(bz[0x24c:]))
	start := (setupSects+1)*512 + pOff
	if pLen < 8 || start < 0 || start+pLen > len(bz) {
		return nil, errors.New("bzImage payload out of range")
	}
	elfData, err := lz4Legacy(bz[start : start+pLen])
	if err != nil {
		return nil, err
	}
	if !hasPVHNote(elfData) {
		return nil, errors.New("vmlinux has no PVH entry note")
	}
	return elfData, nil
}

const lz4LegacyMagic = 0x184C2102

// lz4Legacy decodes the LZ4 legacy frame format the kernel build uses
// (lz4 -l), followed by the kernel's 4-byte uncompressed-size trailer.
func lz4Legacy(src []byte) ([]byte, error) {
	if len(src) < 4 || binary.LittleEndian.Uint32(src) != lz4LegacyMagic {
		return nil, errors.New("payload is not LZ4 (legacy frame)")
	}
	src = src[4:]
	var out []byte
	if len(src) >= 4 {
		// The trailer is a hint only; cap it so corrupt input cannot
		// make us allocate gigabytes up front.
		out = make([]byte, 0, min(binary.LittleEndian.Uint32(src[len(src)-4:]), 256<<20))
	}
	for len(src) > 4 {
		n := int(binary.LittleEndian.Uint32(src))
		src = src[4:]
		if n == lz4LegacyMagic {
			continue
		}
		if n <= 0 || n > len(src) {
			return nil, errors.New("corrupt LZ4 block size")
		}
		var err error
		if out, err = lz4Block(src[:n], out); err != nil {
			return nil, err
		}
		src = src[n:]
	}
	return out, nil
}

// lz4Block appends the decoded LZ4 block src to dst.
func lz4Block(src, dst []byte) ([]byte, error) {
	bad := errors.New("corrupt LZ4 block")
	i := 0
	for i < len(src) {
		token := src[i]
		i++
		lit := int(token >> 4)
		if lit == 15 {
			for {
				if i >= len(src) {
					return nil, bad
				}
				b := src[i]
				i++
				lit += int(b)
				if b != 255 {
					break
				}
			}
		}
		if i+lit > len(src) {
			return nil, bad
		}
		dst = append(dst, src[i:i+lit]...)
		i += lit
		if i == len(src) {
			break // the last sequence has literals only
		}
		if i+2 > len(src) {
			return nil, bad
		}
		off := int(src[i]) | int(src[i+1])<<8
		i += 2
		ml := int(token & 15)
		if ml == 15 {
			for {
				if i >= len(src) {
					return nil, bad
				}
				b := src[i]
				i++
				ml += int(b)
				if b != 255 {
					break
				}
			}
		}
		ml += 4
		if off == 0 || off > len(dst) {
			return nil, bad
		}
		from := len(dst) - off
		if off >= ml {
			dst = append(dst, dst[from:from+ml]...)
			continue
		}
		for k := 0; k < ml; k++ { // overlapping: copy byte by byte
			dst = append(dst, dst[from+k])
		}
	}
	return dst, nil
}

// hasPVHNote reports whether the ELF has a Xen PHYS32_ENTRY note.
func hasPVHNote(data []byte) bool {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return false
	}
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		notes := make([]byte, p.Filesz)
		if _, err := p.ReadAt(notes, 0); err != nil {
			continue
		}
		for len(notes) >= 12 {
			namesz := int(binary.LittleEndian.Uint32(notes))
			descsz := int(binary.LittleEndian.Uint32(notes[4:]))
			typ := binary.LittleEndian.Uint32(notes[8:])
			name := notes[12:min(len(notes), 12+namesz)]
			if typ == 18 && bytes.HasPrefix(name, []byte("Xen")) {
				return true
			}
			adv := 12 + align4(namesz) + align4(descsz)
			if adv > len(notes) {
				break
			}
			notes = notes[adv:]
		}
	}
	return false
}

func align4(n int) int { return (n + 3) &^ 3 }

// writeVmlinux extracts the PVH vmlinux from the bzImage at bzPath into
// dst. On error nothing is written and the bzImage should be used.
func writeVmlinux(bzPath, dst string) error {
	bz, err := os.ReadFile(bzPath)
	if err != nil {
		return err
	}
	elfData, err := vmlinuxFromBzImage(bz)
	if err != nil {
		return err
	}
	if err := writeFileSync(dst, elfData); err != nil {
		os.Remove(dst)
		return err
	}
	return nil
}
