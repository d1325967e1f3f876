package daemon

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/image"
	"banger/internal/kernel"
	"banger/internal/store"
	"banger/internal/vmm"
)

// The spec's drive devices come from the drives' order, whichever of the
// optional drives are there, and the command line names them.
func TestSpecForDriveOrder(t *testing.T) {
	m := newVMManager(vmParts{cfg: vmSettings{ConsoleLogMax: 1 << 20}})
	nic := vmm.NIC{ID: "eth0", Tap: "tap0", MAC: "02:00:00:00:00:01"}
	for _, tt := range []struct {
		name          string
		modules, seed bool
		want          string
	}{
		{"bare", false, false, "root=/dev/vda rw banger.hostname=v1 banger.net=x"},
		{"modules", true, false, "root=/dev/vda banger.modules=/dev/vdb rw banger.hostname=v1 banger.net=x"},
		{"seed", false, true, "root=/dev/vda rw banger.hostname=v1 banger.seed=/dev/vdb banger.net=x"},
		{"both", true, true, "root=/dev/vda banger.modules=/dev/vdb rw banger.hostname=v1 banger.seed=/dev/vdc banger.net=x"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			v := store.VM{ID: "id1", Name: "v1", Dir: t.TempDir(), VCPUs: 2, MemoryMiB: 512}
			kb := kernel.Bundle{Kernel: "/k/vmlinuz", Initrd: "/k/initrd"}
			if tt.modules {
				kb.Modules = "/k/modules.ext4"
			}
			if tt.seed {
				os.WriteFile(filepath.Join(v.Dir, seedFileName), nil, 0o600)
			}
			spec := m.specFor(v, kb, nic, "banger.net=x")
			if spec.Cmdline != tt.want {
				t.Errorf("cmdline\n got %s\nwant %s", spec.Cmdline, tt.want)
			}
			if !spec.Drives[0].Root || spec.Drives[0].Path != filepath.Join(v.Dir, rootDiskFile) {
				t.Errorf("first drive %+v, want the root disk", spec.Drives[0])
			}
			for _, d := range spec.Drives[1:] {
				if !d.ReadOnly {
					t.Errorf("drive %s is writable", d.ID)
				}
			}
			if len(spec.NICs) != 1 || spec.NICs[0] != nic || spec.ConsoleLogMax != 1<<20 || spec.VCPUs != 2 || spec.Kernel != kb.Kernel {
				t.Errorf("spec %+v", spec)
			}
		})
	}
}

// keyedMutex excludes per key, lets other keys through, and forgets a key
// nobody holds.
func TestKeyedMutex(t *testing.T) {
	var k keyedMutex
	unlockA := k.lock("a")
	k.lock("b")() // another key is not blocked
	got := make(chan struct{})
	go func() {
		defer k.lock("a")()
		close(got)
	}()
	select {
	case <-got:
		t.Fatal("a second holder of a got in")
	case <-time.After(50 * time.Millisecond):
	}
	unlockA()
	<-got
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() { defer wg.Done(); k.lock("c")() }()
	}
	wg.Wait()
	// The goroutine above may still be unlocking a.
	for deadline := time.Now().Add(time.Second); k.len() != 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if n := k.len(); n != 0 {
		t.Errorf("%d keys kept after every holder left", n)
	}
}

// A wait for a held key ends with its context, says what holds the key,
// and leaves the key forgotten once its holder lets go.
func TestKeyedMutexWaitEnds(t *testing.T) {
	var k keyedMutex
	unlock, err := k.lockFor(t.Context(), "vm", "vm snapshot")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	_, err = k.lockFor(ctx, "vm", "vm stop")
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "waiting behind vm snapshot") {
		t.Errorf("wait behind a holder: %v, want a deadline naming vm snapshot", err)
	}
	unlock()
	again, err := k.lockFor(t.Context(), "vm", "vm stop")
	if err != nil {
		t.Fatalf("after the holder left: %v", err)
	}
	again()
	if n := k.len(); n != 0 {
		t.Errorf("%d keys kept after every holder and waiter left", n)
	}
}

// A --disk below the image's size names the minimum in a form --disk
// takes, rounded up to whole MiB so that it is accepted.
func TestTooSmallNamesTheMinimum(t *testing.T) {
	im := image.Image{Name: "deb", SizeBytes: 1200<<20 + 1}
	err := tooSmall(512<<20, im)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.InvalidArgument {
		t.Fatalf("tooSmall = %#v, want an invalid-argument api error", err)
	}
	msg := ae.Error() + " " + ae.Hint
	for _, want := range []string{"--disk 512M is smaller than image deb", "at least 1201M", "use --disk 1201M or more"} {
		if !strings.Contains(msg, want) {
			t.Errorf("%q lacks %q", msg, want)
		}
	}
	if n, err := config.ParseSize("1201M"); err != nil || n < im.SizeBytes {
		t.Errorf("the minimum named, 1201M, is %d bytes (%v): below the image's %d", n, err, im.SizeBytes)
	}
}

// At start, a VM directory no row names (what a lost commit leaves) is
// removed; the named ones, and whatever is not a VM's directory, stay.
func TestCleanVMDirs(t *testing.T) {
	dir := t.TempDir()
	m := newVMManager(vmParts{cfg: vmSettings{VMsDir: dir}})
	for _, d := range []string{"00112233445566aa", "ffeeddccbbaa9988", "not-a-vm"} {
		os.MkdirAll(filepath.Join(dir, d, "sub"), 0o700)
	}
	os.WriteFile(filepath.Join(dir, "0123456789abcdef"), []byte("a file"), 0o600)
	m.cleanVMDirs([]store.VM{{ID: "00112233445566aa", Dir: filepath.Join(dir, "00112233445566aa")}})
	var left []string
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		left = append(left, e.Name())
	}
	if want := "00112233445566aa 0123456789abcdef not-a-vm"; strings.Join(left, " ") != want {
		t.Errorf("left %v, want %s", left, want)
	}
}
