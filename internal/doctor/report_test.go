package doctor

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestReportOK(t *testing.T) {
	tests := []struct {
		name   string
		checks []Check
		want   bool
	}{
		{"empty", nil, true},
		{"all ok", []Check{{Status: StatusOK, Required: true}}, true},
		{"optional warn", []Check{{Status: StatusWarn}}, true},
		{"required warn", []Check{{Status: StatusWarn, Required: true}}, true},
		{"optional fail", []Check{{Status: StatusFail}}, true},
		{"required fail", []Check{{Status: StatusOK}, {Status: StatusFail, Required: true}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := (Report{Checks: tt.checks}).OK(); got != tt.want {
				t.Errorf("OK() = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestRender(t *testing.T) {
	r := Report{
		Checks: []Check{
			{Name: "/dev/kvm", Status: StatusWarn, Detail: "/dev/kvm is missing: qemu will use software emulation (slow)", Fix: "load kvm_intel"},
			{Name: "mkfs.ext4", Status: StatusFail, Detail: "not found", Fix: "sudo apt-get install e2fsprogs", Required: true},
			{Name: "sudo", Status: StatusOK, Detail: "running as root"},
		},
		VMMSetting: "auto", VMM: "qemu", Accel: "tcg", VMMReason: "/dev/kvm is missing; firecracker needs it",
	}
	var b bytes.Buffer
	if err := Render(&b, r); err != nil {
		t.Fatal(err)
	}
	want := `warn  /dev/kvm   /dev/kvm is missing: qemu will use software emulation (slow)
                 fix: load kvm_intel
fail  mkfs.ext4  not found
                 fix: sudo apt-get install e2fsprogs
ok    sudo       running as root

vmm = auto: qemu (tcg): /dev/kvm is missing; firecracker needs it
not ready: 1 required check(s) failed, 1 warning(s)
`
	if diff := cmp.Diff(want, b.String()); diff != "" {
		t.Errorf("Render (-want +got):\n%s", diff)
	}
}

func TestReportJSON(t *testing.T) {
	r := Report{
		Checks:     []Check{{Name: "sudo", Status: StatusOK, Detail: "running as root"}},
		VMMSetting: "auto", VMM: "qemu", Accel: "tcg", VMMReason: "why",
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"ok":true,"checks":[{"name":"sudo","status":"ok","detail":"running as root","required":false}],` +
		`"vmm_setting":"auto","vmm":"qemu","accel":"tcg","vmm_reason":"why"}`
	if diff := cmp.Diff(want, string(b)); diff != "" {
		t.Errorf("JSON (-want +got):\n%s", diff)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil || back.VMM != "qemu" || len(back.Checks) != 1 {
		t.Errorf("round trip = %+v, %v", back, err)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
