package vmmtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"

	"banger/internal/disk"
	"banger/internal/vmm"
)

// Event ops of snapshots, in MemDriver.Events.
const (
	OpSnapshot = "snapshot" // Snapshot wrote its state
	OpFreeze   = "freeze"   // FreezeDisk switched a drive; Detail is the new file
	OpRestore  = "restore"  // Restore started a machine; Spec set
)

// memStateFile is what MemMachine.Snapshot writes into its dir.
const memStateFile = "memdriver-state.json"

// memState is a MemMachine's snapshot: the spec it ran with and its
// pretend memory.
type memState struct {
	Spec   vmm.Spec          `json:"spec"`
	Memory map[string]string `json:"memory"`
}

var (
	_ vmm.Snapshotter = (*MemMachine)(nil)
	_ vmm.DiskFreezer = (*MemMachine)(nil)
	_ vmm.Restorer    = (*MemDriver)(nil)
	_ vmm.Versioner   = (*MemDriver)(nil)
)

// SetMemory sets key in the machine's pretend guest memory, which a
// snapshot keeps and a restore brings back.
func (m *MemMachine) SetMemory(key, value string) {
	m.vm.mu.Lock()
	defer m.vm.mu.Unlock()
	m.vm.memory[key] = value
}

// Memory returns the machine's pretend guest memory.
func (m *MemMachine) Memory() map[string]string {
	m.vm.mu.Lock()
	defer m.vm.mu.Unlock()
	return maps.Clone(m.vm.memory)
}

// Restored reports whether the machine was started by Restore.
func (m *MemMachine) Restored() bool {
	m.vm.mu.Lock()
	defer m.vm.mu.Unlock()
	return m.vm.restored
}

// fail is MemOptions.Fail for op, or nil.
func (d *MemDriver) fail(op string) error {
	if d.opts.Fail == nil {
		return nil
	}
	return d.opts.Fail(op)
}

// Snapshot writes the machine's spec and memory into dir. A MemOptions.Fail
// error for OpSnapshot is returned after half the file is written, as a
// disk that fills would leave it.
func (m *MemMachine) Snapshot(ctx context.Context, dir string) error {
	vm := m.vm
	vm.mu.Lock()
	if vm.exit != "" {
		vm.mu.Unlock()
		return fmt.Errorf("snapshot of vm %s: %w", vm.spec.Name, vmm.ErrNotRunning)
	}
	b, err := json.Marshal(memState{Spec: vm.spec, Memory: vm.memory})
	vm.mu.Unlock()
	if err != nil {
		return err
	}
	path := filepath.Join(dir, memStateFile)
	if err := vm.d.fail(OpSnapshot); err != nil {
		os.WriteFile(path, b[:len(b)/2], 0o600)
		return fmt.Errorf("snapshot of vm %s: %w", vm.spec.Name, err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("snapshot of vm %s: %w", vm.spec.Name, err)
	}
	vm.d.host.record(Event{Op: OpSnapshot, ID: vm.spec.ID, PID: vm.pid, Detail: dir})
	return nil
}

// FreezeDisk makes overlay a qcow2 layer over the drive's file and
// switches the drive to it, as QEMU's blockdev-snapshot-sync does.
func (m *MemMachine) FreezeDisk(ctx context.Context, driveID, overlay string) error {
	vm := m.vm
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.exit != "" {
		return fmt.Errorf("freezing drive %s of vm %s: %w", driveID, vm.spec.Name, vmm.ErrNotRunning)
	}
	for i, dr := range vm.spec.Drives {
		if dr.ID != driveID {
			continue
		}
		if err := vm.d.fail(OpFreeze); err != nil {
			return fmt.Errorf("freezing drive %s of vm %s: %w", driveID, vm.spec.Name, err)
		}
		format := dr.Format
		if format == "" {
			format = vmm.FormatRaw
		}
		if err := disk.CreateOverlay(ctx, dr.Path, format, overlay, 0); err != nil {
			return err
		}
		vm.spec.Drives = append([]vmm.Drive(nil), vm.spec.Drives...)
		vm.spec.Drives[i].Path, vm.spec.Drives[i].Format = overlay, vmm.FormatQCOW2
		vm.d.host.record(Event{Op: OpFreeze, ID: vm.spec.ID, PID: vm.pid, Detail: overlay})
		return nil
	}
	return fmt.Errorf("vm %s has no drive %q", vm.spec.Name, driveID)
}

// Version returns MemOptions.Version, default "mem 1".
func (d *MemDriver) Version(context.Context) (string, error) {
	if d.opts.Version == "" {
		return "mem 1", nil
	}
	return d.opts.Version, nil
}

// Restore starts a machine from a snapshot written by Snapshot: spec must
// have the snapshot's vcpus, memory, and drives and NICs in the same
// number and formats (their paths, which must exist, and taps may
// differ). The machine runs with the snapshot's memory.
func (d *MemDriver) Restore(ctx context.Context, spec vmm.Spec, snapDir string) (vmm.Machine, error) {
	m, err := d.restore(ctx, spec, snapDir)
	if err != nil {
		d.host.record(Event{Op: OpStartFailed, ID: spec.ID, Spec: spec, Err: err})
		return nil, err
	}
	return m, nil
}

func (d *MemDriver) restore(ctx context.Context, spec vmm.Spec, snapDir string) (vmm.Machine, error) {
	b, err := os.ReadFile(filepath.Join(snapDir, memStateFile))
	if err != nil {
		return nil, fmt.Errorf("restoring vm %q: %w", spec.Name, err)
	}
	var st memState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("restoring vm %q: corrupt snapshot: %w", spec.Name, err)
	}
	if err := d.fail(OpRestore); err != nil {
		return nil, fmt.Errorf("restoring vm %q: %w", spec.Name, err)
	}
	var errs []error
	if spec.VCPUs != st.Spec.VCPUs || spec.MemoryMiB != st.Spec.MemoryMiB {
		errs = append(errs, fmt.Errorf("%d vcpus and %d MiB, the snapshot %d and %d", spec.VCPUs, spec.MemoryMiB, st.Spec.VCPUs, st.Spec.MemoryMiB))
	}
	if len(spec.Drives) != len(st.Spec.Drives) || len(spec.NICs) != len(st.Spec.NICs) {
		errs = append(errs, fmt.Errorf("%d drives and %d nics, the snapshot %d and %d", len(spec.Drives), len(spec.NICs), len(st.Spec.Drives), len(st.Spec.NICs)))
	} else {
		for i, dr := range spec.Drives {
			if dr.ID != st.Spec.Drives[i].ID || dr.Format != st.Spec.Drives[i].Format {
				errs = append(errs, fmt.Errorf("drive %d is %s (%s), the snapshot's %s (%s)", i, dr.ID, dr.Format, st.Spec.Drives[i].ID, st.Spec.Drives[i].Format))
			}
			if _, err := os.Stat(dr.Path); err != nil {
				errs = append(errs, fmt.Errorf("drive %s: %w", dr.ID, err))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("restoring vm %q: spec does not match the snapshot: %w", spec.Name, err)
	}
	m, err := d.start(ctx, spec)
	if err != nil {
		return nil, err
	}
	m.vm.mu.Lock()
	m.vm.memory = maps.Clone(st.Memory)
	if m.vm.memory == nil {
		m.vm.memory = map[string]string{}
	}
	m.vm.restored = true
	m.vm.mu.Unlock()
	d.host.record(Event{Op: OpRestore, ID: spec.ID, PID: m.vm.pid, Spec: spec})
	return m, nil
}
