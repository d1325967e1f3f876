package qemu

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"banger/internal/vmm"
)

func TestCmdline(t *testing.T) {
	tests := []struct {
		name    string
		accel   vmm.Accel
		tsc     int
		cmdline string
		want    string
	}{
		{"tcg adds tsc fix", vmm.AccelTCG, 2096017, "root=/dev/vda",
			"console=ttyS0 panic=1 tsc_early_khz=2096017 tsc=reliable root=/dev/vda"},
		{"tcg without known tsc", vmm.AccelTCG, 0, "", "console=ttyS0 panic=1"},
		{"kvm needs no tsc fix", vmm.AccelKVM, 2096017, "quiet", "console=ttyS0 panic=1 quiet"},
		{"spec console and panic win", vmm.AccelKVM, 0, "console=hvc0 panic=5", "console=hvc0 panic=5"},
		{"init args stay last", vmm.AccelKVM, 0, "quiet -- console=x",
			"console=ttyS0 panic=1 quiet -- console=x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := launch{spec: vmm.Spec{Cmdline: tt.cmdline}, accel: tt.accel, tscKHz: tt.tsc}
			if diff := cmp.Diff(tt.want, l.cmdline()); diff != "" {
				t.Errorf("cmdline (-want +got):\n%s", diff)
			}
		})
	}
}

func TestArgs(t *testing.T) {
	spec := vmm.Spec{
		Dir: "/run/vm,1", VCPUs: 2, MemoryMiB: 512, Kernel: "/k/vmlinux", Initrd: "/k/initrd",
		ConsoleLog: "/run/vm,1/console.log",
		Drives: []vmm.Drive{
			{ID: "root", Path: "/img/root.ext4", Root: true},
			{ID: "modules", Path: "/k/mod,ules.img", ReadOnly: true},
		},
		NICs: []vmm.NIC{{ID: "eth0", Tap: "tap0", MAC: "02:00:00:00:00:01"}},
	}
	l := launch{spec: spec, accel: vmm.AccelTCG, transport: vmm.TransportVirtioSerial, paths: pathsFor(spec.Dir),
		mem: memory{path: "/run/vm,1/memory", shared: true}}
	got := strings.Join(l.args(), " ")
	wantInOrder := []string{
		"-M microvm,accel=tcg,acpi=on,memory-backend=mem -cpu max -smp 2 -m 512M",
		"-object memory-backend-file,id=mem,size=512M,mem-path=/run/vm,,1/memory,share=on,discard-data=on",
		"-nodefaults -no-user-config -nographic -no-reboot",
		"-kernel /k/vmlinux -initrd /k/initrd -append console=ttyS0 panic=1",
		"-chardev file,id=console,append=on,path=/run/vm,,1/console.log -serial chardev:console",
		"-qmp unix:/run/vm,,1/qmp.sock,server=on,wait=off",
		"-add-fd fd=3,set=1,opaque=root -add-fd fd=4,set=1,opaque=root -add-fd fd=5,set=2,opaque=modules",
		"-drive id=vd0,file=/dev/fdset/1,file.locking=off,format=raw,if=none,discard=unmap -device virtio-blk-device,drive=vd0",
		"-drive id=vd1,file=/dev/fdset/2,file.locking=off,format=raw,if=none,readonly=on -device virtio-blk-device,drive=vd1",
		"-netdev tap,id=net0,ifname=tap0,script=no,downscript=no -device virtio-net-device,netdev=net0,mac=02:00:00:00:00:01",
		"-device virtio-serial-device -chardev socket,id=agent,path=/run/vm,,1/agent.sock,server=on,wait=off -device virtserialport,chardev=agent,name=banger.agent",
	}
	rest := got
	for _, w := range wantInOrder {
		i := strings.Index(rest, w)
		if i < 0 {
			t.Fatalf("args lack (in order) %q:\n%s", w, got)
		}
		rest = rest[i+len(w):]
	}

	l.accel, l.transport, l.spec.VsockCID = vmm.AccelKVM, vmm.TransportVsock, 42
	got = strings.Join(l.args(), " ")
	for _, w := range []string{"accel=kvm", "-cpu host", "-device vhost-vsock-device,guest-cid=42"} {
		if !strings.Contains(got, w) {
			t.Errorf("kvm/vsock args lack %q:\n%s", w, got)
		}
	}
	if strings.Contains(got, "virtio-serial") {
		t.Errorf("vsock args still have virtio-serial:\n%s", got)
	}
	if strings.Contains(got, "-incoming") {
		t.Errorf("cold boot args have -incoming:\n%s", got)
	}
}

// TestArgsRestore: a restore waits for the state (-incoming defer, -S)
// and maps the snapshot's memory private, or uses anonymous RAM when the
// snapshot streamed it; the backend keeps the id migration matches.
func TestArgsRestore(t *testing.T) {
	spec := vmm.Spec{Dir: "/run/vm", VCPUs: 1, MemoryMiB: 256, Kernel: "/k", ConsoleLog: "/run/vm/c.log"}
	for _, tt := range []struct {
		name string
		mem  memory
		want string
	}{
		{"memory file", memory{path: "/snap/memory"}, "-object memory-backend-file,id=mem,size=256M,mem-path=/snap/memory,share=off "},
		{"streamed", memory{}, "-object memory-backend-ram,id=mem,size=256M "},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l := launch{spec: spec, accel: vmm.AccelTCG, transport: vmm.TransportVirtioSerial, paths: pathsFor(spec.Dir), mem: tt.mem, incoming: true}
			got := strings.Join(l.args(), " ") + " "
			for _, w := range []string{tt.want, "memory-backend=mem", "-incoming defer -S "} {
				if !strings.Contains(got, w) {
					t.Errorf("args lack %q:\n%s", w, got)
				}
			}
		})
	}
}

func TestParseVersion(t *testing.T) {
	out := "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers\n"
	if v, err := parseVersion([]byte(out)); err != nil || v != "7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)" {
		t.Errorf("parseVersion = %q, %v", v, err)
	}
	if v, err := parseVersion([]byte("something else\n")); err == nil {
		t.Errorf("parseVersion of no version = %q, want an error", v)
	}
}

// TestVersionCached: Version runs the binary once and remembers; a binary
// that prints no version is an error, not an empty version.
func TestVersionCached(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "qemu-system-x86_64")
	count := filepath.Join(dir, "count")
	script := "#!/bin/sh\necho x >> " + count + "\necho 'QEMU emulator version 9.9.9'\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	d := New(Options{Bin: bin, TSCkHz: 1, Accel: vmm.AccelTCG, Transport: vmm.TransportVirtioSerial})
	for range 2 {
		if v, err := d.Version(t.Context()); err != nil || v != "9.9.9" {
			t.Fatalf("Version = %q, %v; want 9.9.9", v, err)
		}
	}
	if b, _ := os.ReadFile(count); string(b) != "x\n" {
		t.Errorf("binary ran %d times, want once", strings.Count(string(b), "x"))
	}
	os.WriteFile(bin, []byte("#!/bin/sh\necho nothing\n"), 0o755)
	d = New(Options{Bin: bin, TSCkHz: 1, Accel: vmm.AccelTCG, Transport: vmm.TransportVirtioSerial})
	if v, err := d.Version(t.Context()); err == nil {
		t.Errorf("Version of a binary that names none = %q, want an error", v)
	}
	d = New(Options{Bin: filepath.Join(dir, "missing"), TSCkHz: 1, Accel: vmm.AccelTCG, Transport: vmm.TransportVirtioSerial})
	if _, err := d.Version(t.Context()); !errors.Is(err, vmm.ErrUnavailable) {
		t.Errorf("Version of a missing binary = %v, want ErrUnavailable", err)
	}
}

func TestValidateSpec(t *testing.T) {
	good := vmm.Spec{Dir: "/tmp/vm", VCPUs: 1, MemoryMiB: 128, Kernel: "/k", ConsoleLog: "/tmp/vm/c.log"}
	tests := []struct {
		name   string
		modify func(*vmm.Spec)
		want   string // substring of the error; "" for valid
	}{
		{"valid", func(*vmm.Spec) {}, ""},
		{"no kernel", func(s *vmm.Spec) { s.Kernel = "" }, "kernel is empty"},
		{"no vcpus", func(s *vmm.Spec) { s.VCPUs = 0 }, "vcpus 0"},
		{"tiny memory", func(s *vmm.Spec) { s.MemoryMiB = 1 }, "memory 1 MiB"},
		{"bad tap", func(s *vmm.Spec) { s.NICs = []vmm.NIC{{ID: "n", Tap: "a,b"}} }, "bad tap name"},
		{"long dir", func(s *vmm.Spec) { s.Dir = "/" + strings.Repeat("x", 120) }, "too long"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := good
			tt.modify(&s)
			err := validateSpec(s)
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Errorf("validateSpec = %v, want error containing %q", err, tt.want)
			}
		})
	}
}

// TestStartCIDInUse: when vhost-vsock refuses the guest cid (another VM
// on the host holds it), Start says so with vmm.ErrCIDInUse, so the
// daemon can pick another. A stand-in QEMU prints what QEMU 7.2 prints.
func TestStartCIDInUse(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "qemu-system-x86_64")
	script := "#!/bin/sh\necho 'qemu-system-x86_64: -device vhost-vsock-device,guest-cid=3: vhost-vsock: unable to set guest cid: Address already in use' >&2\nexit 1\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	d := New(Options{Bin: bin, TSCkHz: 1, Transport: vmm.TransportVsock})
	spec := vmm.Spec{Dir: filepath.Join(dir, "vm"), VCPUs: 1, MemoryMiB: 64, Kernel: "/k", ConsoleLog: dir + "/c.log", VsockCID: 3}
	_, err := d.Start(t.Context(), spec)
	if !errors.Is(err, vmm.ErrCIDInUse) {
		t.Fatalf("Start = %v, want ErrCIDInUse", err)
	}
	spec.VsockCID = 0
	if _, err := d.Start(t.Context(), spec); err == nil || !strings.Contains(err.Error(), "vsock cid 0") {
		t.Fatalf("Start without a cid = %v, want a refusal", err)
	}
}

func TestConfineArgs(t *testing.T) {
	for _, tt := range []struct {
		name    string
		runAs   string
		sandbox bool
		want    []string
	}{
		{"root, sandboxed", "", true, []string{"-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"}},
		{"dropped, sandboxed", "banger-vmm", true, []string{"-sandbox", "on,obsolete=deny,elevateprivileges=allow,spawn=deny,resourcecontrol=deny", "-runas", "banger-vmm"}},
		{"dropped only", "banger-vmm", false, []string{"-runas", "banger-vmm"}},
		{"neither", "", false, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l := launch{runAs: tt.runAs, sandbox: tt.sandbox}
			if diff := cmp.Diff(tt.want, l.confineArgs()); diff != "" {
				t.Errorf("confineArgs (-want +got):\n%s", diff)
			}
		})
	}
}
