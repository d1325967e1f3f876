package vmm

import "testing"

func TestDriveDevice(t *testing.T) {
	for i, want := range map[int]string{0: "/dev/vda", 1: "/dev/vdb", 25: "/dev/vdz", 26: "/dev/vdaa", 27: "/dev/vdab", 701: "/dev/vdzz", 702: "/dev/vdaaa"} {
		if got := DriveDevice(i); got != want {
			t.Errorf("DriveDevice(%d) = %s, want %s", i, got, want)
		}
	}
}
