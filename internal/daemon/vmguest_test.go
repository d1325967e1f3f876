package daemon

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/config"
	"banger/internal/disk"
	"banger/internal/image"
	"banger/internal/store"
)

// prepareGuest writes the host key, root's authorized_keys and the sshd
// drop-in into the VM's disk, makes the user key when missing, and keeps
// the public host key for vm ssh to pin.
func TestPrepareGuest(t *testing.T) {
	for _, tool := range []string{"mkfs.ext4", "debugfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed", tool)
		}
	}
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	os.MkdirAll(filepath.Join(tree, "etc/ssh/sshd_config.d"), 0o755)
	os.MkdirAll(filepath.Join(tree, "root"), 0o700)
	img := filepath.Join(dir, "rootfs.ext4")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", tree, img, "16M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs: %v\n%s", err, out)
	}
	dirs := config.Dirs{State: filepath.Join(dir, "state"), Config: filepath.Join(dir, "config")}
	m := &vmManager{s: &Server{opts: Options{Dirs: dirs, Config: config.Default()}}}
	v := store.VM{Name: "g1", Dir: filepath.Join(dir, "vm")}
	os.MkdirAll(v.Dir, 0o755)
	ctx := context.Background()
	if err := m.prepareGuest(ctx, v, image.Image{}, img); err != nil {
		t.Fatal(err)
	}
	userPub, err := os.ReadFile(filepath.Join(dirs.Config, "ssh", "id_ed25519.pub"))
	if err != nil {
		t.Fatalf("user key not made: %v", err)
	}
	hostPub, err := hostKey(v)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, want string }{
		{"/root/.ssh/authorized_keys", strings.TrimSpace(string(userPub))},
		{"/etc/ssh/ssh_host_ed25519_key.pub", hostPub},
		{"/etc/ssh/ssh_host_ed25519_key", "BEGIN OPENSSH PRIVATE KEY"},
		{"/etc/ssh/sshd_config.d/banger.conf", "PasswordAuthentication no"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			b, err := disk.ReadFile(ctx, img, tc.path)
			if err != nil || !strings.Contains(string(b), tc.want) {
				t.Fatalf("%s = %q, %v; want it to contain %q", tc.path, b, err, tc.want)
			}
		})
	}
	out, _ := exec.Command("debugfs", "-R", "stat /etc/ssh/ssh_host_ed25519_key", img).CombinedOutput()
	if !strings.Contains(string(out), "Mode:  0600") || !strings.Contains(string(out), "User:     0") {
		t.Errorf("host key is not 0600 root:\n%s", out)
	}
}
