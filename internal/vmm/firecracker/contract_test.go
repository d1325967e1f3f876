package firecracker

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"banger/internal/prereq"
	"banger/internal/vmm"
	"banger/internal/vmm/vmmtest"
)

// newStandinDriver returns a driver whose firecracker binary is this test
// binary playing the stand-in in mode, and the file the stand-in records
// requests to. KVM is assumed: this host has none.
func newStandinDriver(t *testing.T, mode string) (*Driver, string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(t.TempDir(), "requests.jsonl")
	t.Setenv(standinEnv, mode)
	t.Setenv(standinLogEnv, logPath)
	d := New(Options{Bin: exe, SocketTimeout: 5 * time.Second, CheckKVM: func() error { return nil }})
	return d, logPath
}

func testSpec(t *testing.T) vmm.Spec {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []string{"vmlinux", "initrd.img", "rootfs.ext4", "modules.ext4"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(f), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return vmm.Spec{
		ID: "vm-0123abcd", Name: "test", Dir: filepath.Join(dir, "vm"),
		VCPUs: 2, MemoryMiB: 1024,
		Kernel:  filepath.Join(dir, "vmlinux"),
		Initrd:  filepath.Join(dir, "initrd.img"),
		Cmdline: "root=/dev/vda rw banger.agent=vsock -- --banger-init",
		Drives: []vmm.Drive{
			{ID: "root", Path: filepath.Join(dir, "rootfs.ext4"), Root: true},
			{ID: "modules", Path: filepath.Join(dir, "modules.ext4"), ReadOnly: true},
		},
		NICs:       []vmm.NIC{{ID: "eth0", Tap: "tap-test0", MAC: "02:fc:00:00:00:01"}},
		ConsoleLog: filepath.Join(dir, "console.log"),
	}
}

func readRecorded(t *testing.T, path string) []recorded {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []recorded
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r recorded
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("bad record %q: %v", sc.Text(), err)
		}
		out = append(out, r)
	}
	return out
}

// calls lists requests as "METHOD /path", with the action type of
// /actions and the state of /vm.
func calls(reqs []recorded) []string {
	var out []string
	for _, r := range reqs {
		s := r.Method + " " + r.Path
		var b map[string]any
		if json.Unmarshal(r.Body, &b) == nil {
			if v, ok := b["action_type"]; ok {
				s += " " + fmt.Sprint(v)
			}
			if v, ok := b["state"]; ok && r.Path == "/vm" {
				s += " " + fmt.Sprint(v)
			}
		}
		out = append(out, s)
	}
	return out
}

// validateAll checks every recorded request against the API spec. When
// the spec is absent it skips the test: call it last.
func validateAll(t *testing.T, s *apiSpec, reqs []recorded) {
	t.Helper()
	if len(reqs) == 0 {
		t.Fatal("no requests recorded")
	}
	if s == nil {
		prereq.Missing(t, "Firecracker API spec absent: behaviour checked, but %d requests NOT validated against the API contract (shared/firecracker/firecracker.yaml beside the checkout, or $%s)", len(reqs), specEnv)
	}
	for _, r := range reqs {
		if err := s.validate(r.Method, r.Path, r.Body); err != nil {
			t.Errorf("request breaks the Firecracker v1.16.1 API contract: %v\nbody: %s", err, r.Body)
		}
	}
}

var bootResource = map[string]bool{"/machine-config": true, "/boot-source": true, "/drives": true, "/network-interfaces": true, "/vsock": true}

// checkOrder enforces Firecracker's ordering rules: no boot resource is
// configured after InstanceStart, and a snapshot load comes before any
// boot resource (and is never combined with InstanceStart).
func checkOrder(reqs []recorded) error {
	started, loaded, configured := false, false, ""
	for i, r := range reqs {
		top := "/" + strings.SplitN(strings.TrimPrefix(r.Path, "/"), "/", 2)[0]
		c := calls([]recorded{r})[0]
		switch {
		case r.Method == "PUT" && bootResource[top]:
			if started {
				return fmt.Errorf("request %d %s: configured after InstanceStart", i, c)
			}
			if loaded {
				return fmt.Errorf("request %d %s: configured after a snapshot load", i, c)
			}
			configured = c
		case c == "PUT /actions InstanceStart":
			if loaded {
				return fmt.Errorf("request %d: InstanceStart after a snapshot load", i)
			}
			started = true
		case c == "PUT /snapshot/load":
			if configured != "" {
				return fmt.Errorf("request %d: snapshot load after %s", i, configured)
			}
			if started {
				return fmt.Errorf("request %d: snapshot load after InstanceStart", i)
			}
			loaded = true
		}
	}
	return nil
}

func TestCheckOrderCatches(t *testing.T) {
	rec := func(m, p, body string) recorded { return recorded{Method: m, Path: p, Body: json.RawMessage(body)} }
	start := rec("PUT", "/actions", `{"action_type":"InstanceStart"}`)
	load := rec("PUT", "/snapshot/load", `{"snapshot_path":"/s"}`)
	drive := rec("PUT", "/drives/root", `{}`)
	logger := rec("PUT", "/logger", `{}`)
	tests := []struct {
		name    string
		reqs    []recorded
		wantErr string
	}{
		{"boot", []recorded{logger, drive, start}, ""},
		{"restore", []recorded{logger, load}, ""},
		{"drive after start", []recorded{drive, start, drive}, "after InstanceStart"},
		{"load after drive", []recorded{drive, load}, "snapshot load after PUT /drives/root"},
		{"drive after load", []recorded{load, drive}, "after a snapshot load"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkOrder(tt.reqs)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("checkOrder = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestContractBootToShutdown runs a whole VM life against the stand-in:
// boot, agent dial, pause, resume, snapshot, shutdown. Every request is
// checked against the spec and Firecracker's ordering rules.
func TestContractBootToShutdown(t *testing.T) {
	apiSpec := loadSpec(t)
	d, logPath := newStandinDriver(t, modeOK)
	spec := testSpec(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	m := vmmtest.Start(ctx, t, d, spec)
	checkDriveLinks(t, spec)
	echoThroughAgent(ctx, t, m)
	p := m.(vmm.Pauser)
	if err := p.Pause(ctx); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	if err := p.Resume(ctx); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	snapDir := t.TempDir()
	if err := m.(vmm.Snapshotter).Snapshot(ctx, snapDir); err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	for _, f := range []string{SnapshotStateName, SnapshotMemoryName} {
		if _, err := os.Stat(filepath.Join(snapDir, f)); err != nil {
			t.Errorf("snapshot file: %v", err)
		}
	}
	if err := m.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	vmmtest.WaitDone(t, m)

	reqs := readRecorded(t, logPath)
	want := []string{
		"GET /version", "PUT /logger", "PUT /metrics",
		"PUT /machine-config", "PUT /boot-source", "PUT /drives/root", "PUT /drives/modules",
		"PUT /network-interfaces/eth0", "PUT /vsock", "PUT /actions InstanceStart",
		"PATCH /vm Paused", "PATCH /vm Resumed",
		"PATCH /vm Paused", "PUT /snapshot/create", "PATCH /vm Resumed",
		"PUT /actions SendCtrlAltDel",
	}
	if diff := cmp.Diff(want, calls(reqs)); diff != "" {
		t.Errorf("request sequence (-want +got):\n%s", diff)
	}
	if err := checkOrder(reqs); err != nil {
		t.Error(err)
	}
	checkBootBodies(t, spec, reqs)
	if b, _ := os.ReadFile(spec.ConsoleLog); !strings.Contains(string(b), standinBanner) {
		t.Errorf("console log %q lacks the serial output %q", b, standinBanner)
	}
	for _, f := range []string{LogName, MetricsName} {
		if _, err := os.Stat(filepath.Join(spec.Dir, f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	vmmtest.AssertNoLeftovers(t, spec.Dir, "drive-root", "drive-modules")
	validateAll(t, apiSpec, reqs)
}

// checkDriveLinks checks that the drive names firecracker opens, in the
// VM directory, point at spec's drives.
func checkDriveLinks(t *testing.T, spec vmm.Spec) {
	t.Helper()
	for _, dr := range spec.Drives {
		got, err := os.Readlink(filepath.Join(spec.Dir, driveName(dr.ID)))
		if err != nil || got != dr.Path {
			t.Errorf("drive link %s -> %q (%v), want -> %s", driveName(dr.ID), got, err, dr.Path)
		}
	}
}

// checkBootBodies checks what the boot requests say, beyond the schema.
func checkBootBodies(t *testing.T, spec vmm.Spec, reqs []recorded) {
	t.Helper()
	bodies := map[string]json.RawMessage{}
	for _, r := range reqs {
		bodies[r.Method+" "+r.Path] = r.Body
	}
	var got struct {
		Boot    BootSource
		Root    DriveConfig
		Modules DriveConfig
		NIC     NetworkInterface
		Vsock   VsockConfig
		Machine MachineConfig
		Logger  LoggerConfig
	}
	for key, dst := range map[string]any{
		"PUT /boot-source": &got.Boot, "PUT /drives/root": &got.Root, "PUT /drives/modules": &got.Modules,
		"PUT /network-interfaces/eth0": &got.NIC, "PUT /vsock": &got.Vsock, "PUT /machine-config": &got.Machine,
		"PUT /logger": &got.Logger,
	} {
		if err := json.Unmarshal(bodies[key], dst); err != nil {
			t.Fatalf("%s: %v", key, err)
		}
	}
	if !strings.HasPrefix(got.Boot.BootArgs, "console=ttyS0 reboot=k panic=1") || !strings.HasSuffix(got.Boot.BootArgs, spec.Cmdline) {
		t.Errorf("boot_args %q: want Firecracker's console/reboot args first and the spec's cmdline (with its init args) last", got.Boot.BootArgs)
	}
	if strings.Contains(got.Boot.BootArgs, "virtio_mmio.device") {
		t.Errorf("boot_args %q: Firecracker adds virtio_mmio.device= itself", got.Boot.BootArgs)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"kernel", got.Boot.KernelImagePath, spec.Kernel},
		{"initrd", got.Boot.InitrdPath, spec.Initrd},
		// Relative to firecracker's working directory, the VM directory
		// (see driveName): symlinks there point at the drives.
		{"root drive", got.Root, DriveConfig{DriveID: "root", PathOnHost: "drive-root", IsRootDevice: true}},
		{"modules drive", got.Modules, DriveConfig{DriveID: "modules", PathOnHost: "drive-modules", IsReadOnly: true}},
		{"nic", got.NIC, NetworkInterface{IfaceID: "eth0", HostDevName: "tap-test0", GuestMAC: "02:fc:00:00:00:01"}},
		{"vsock", got.Vsock, VsockConfig{GuestCID: 3, UDSPath: filepath.Join(spec.Dir, VsockSocketName)}},
		{"machine", got.Machine, MachineConfig{VCPUCount: 2, MemSizeMiB: 1024}},
		{"logger path", got.Logger.LogPath, filepath.Join(spec.Dir, LogName)},
	}
	for _, c := range checks {
		if diff := cmp.Diff(c.want, c.got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", c.name, diff)
		}
	}
}

// echoThroughAgent dials the agent port over the stand-in's hybrid vsock
// and checks bytes go both ways.
func echoThroughAgent(ctx context.Context, t *testing.T, m vmm.Machine) {
	t.Helper()
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := m.DialAgent(dctx)
	if err != nil {
		t.Fatalf("DialAgent: %v", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if err := vmmtest.Echo(dctx, conn); err != nil {
		t.Fatal(err)
	}
}
