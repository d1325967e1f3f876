package daemon

import (
	"testing"

	"banger/internal/config"
)

// VMMs run as the vmm user when there is one: QEMU through -runas, the
// Firecracker jailer through --uid/--gid.
func TestDriverOptionsDropPrivileges(t *testing.T) {
	cfg := config.Default()
	cfg.JailerBin = "/usr/bin/jailer"
	qo, fo := driverOptions(cfg, nil, &vmmUser{name: "banger-vmm", uid: 991, gid: 992})
	if qo.RunAs != "banger-vmm" || qo.NoSandbox {
		t.Errorf("qemu options: RunAs %q NoSandbox %v, want banger-vmm and the sandbox on", qo.RunAs, qo.NoSandbox)
	}
	if fo.JailerUID != 991 || fo.JailerGID != 992 || fo.JailerBin != "/usr/bin/jailer" {
		t.Errorf("firecracker options: jailer %q uid %d gid %d, want 991:992", fo.JailerBin, fo.JailerUID, fo.JailerGID)
	}
	qo, fo = driverOptions(cfg, nil, nil)
	if qo.RunAs != "" || fo.JailerUID != 0 {
		t.Errorf("without a vmm user: RunAs %q, JailerUID %d; want root", qo.RunAs, fo.JailerUID)
	}
}
