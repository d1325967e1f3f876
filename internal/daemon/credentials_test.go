package daemon

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"banger/internal/config"
	"banger/internal/vmm"
	"banger/internal/vmm/vmmtest"
)

// nobody is the user the tests read host files as, to see the daemon
// read with its user's permissions rather than root's.
const nobody = 65534

// credRig is a lifeRig whose VMs sync credential files from a fake home;
// the in-process agent writes the guest's files under guestRoot.
type credRig struct {
	*lifeRig
	home, guestRoot string
	log             *bytes.Buffer
}

func newCredRig(t *testing.T) *credRig {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the guest's files are owned by root, and host files are read as another user")
	}
	r := &credRig{lifeRig: newLifeRig(t, vmmtest.MemOptions{}), home: t.TempDir(), guestRoot: t.TempDir(), log: &bytes.Buffer{}}
	// The user must be able to reach the home, as in real life.
	os.Chmod(filepath.Dir(r.home), 0o755)
	os.Chmod(r.home, 0o755)
	cfg := config.Default()
	cfg.CredentialFiles = append(cfg.CredentialFiles, "~/.config/locked.json", "~/fifo.json", "~/dir.json")
	r.m = newVMManager(vmParts{store: r.st, net: r.net, drivers: map[string]vmm.Driver{"mem": r.d}, def: "mem",
		log: slog.New(slog.NewTextHandler(r.log, nil)),
		cfg: vmSettings{VMsDir: filepath.Join(r.dir, "vms"), Credentials: credentialSettings{
			Files: cfg.Credentials(r.home), UID: nobody, GID: nobody, GuestRoot: r.guestRoot}}})
	return r
}

// hostFile writes a file of the fake home, owned by nobody unless mode
// says it is root's own.
func (r *credRig) hostFile(t *testing.T, rel, content string, mode os.FileMode, owner int) {
	t.Helper()
	p := filepath.Join(r.home, rel)
	for d := filepath.Dir(p); d != r.home; d = filepath.Dir(d) {
		os.MkdirAll(d, 0o755)
		os.Chown(d, nobody, nobody)
	}
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	os.Chmod(p, mode)
	os.Chown(p, owner, owner)
}

// Every start copies the host's credential files that exist into the
// guest, 0600 and root's, under /root, in directories made 0700; an absent
// one is not created; one the user cannot read, a FIFO and a directory are
// each a warning (in the log, the answer and inspect) and the VM starts.
// No content is logged or stored.
func TestCredentialSyncAtStart(t *testing.T) {
	r := newCredRig(t)
	const opencode, claude = `{"opencode":"s3cret-oc-1"}`, `{"claude":"s3cret-cl-1"}`
	r.hostFile(t, ".local/share/opencode/auth.json", opencode, 0o600, nobody)
	r.hostFile(t, ".claude/.credentials.json", claude, 0o600, nobody)
	// ~/.pi/agent/auth.json is absent.
	r.hostFile(t, ".config/locked.json", `{"locked":"s3cret-root-only"}`, 0o600, 0)
	if err := syscall.Mkfifo(filepath.Join(r.home, "fifo.json"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(filepath.Join(r.home, "dir.json"), 0o755)

	v := r.vm(t, "cred")
	begin := time.Now()
	got, err := r.start(t.Context(), t, v, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(begin); took > 3*time.Second {
		t.Errorf("start took %s: the FIFO held it up?", took)
	}
	want := []string{"/root/.local/share/opencode/auth.json", "/root/.claude/.credentials.json"}
	if diff := cmp.Diff(want, got.Credentials); diff != "" {
		t.Errorf("synced (-want +got):\n%s", diff)
	}
	for path, content := range map[string]string{want[0]: opencode, want[1]: claude} {
		gp := filepath.Join(r.guestRoot, path)
		b, err := os.ReadFile(gp)
		if err != nil || string(b) != content {
			t.Errorf("guest %s: %q, %v; want %q", path, b, err, content)
			continue
		}
		st, _ := os.Stat(gp)
		if sys := st.Sys().(*syscall.Stat_t); st.Mode().Perm() != 0o600 || sys.Uid != 0 || sys.Gid != 0 {
			t.Errorf("guest %s: mode %v owner %d:%d, want 0600 root", path, st.Mode(), sys.Uid, sys.Gid)
		}
	}
	for _, d := range []string{"/root/.local", "/root/.local/share", "/root/.local/share/opencode", "/root/.claude"} {
		if st, err := os.Stat(filepath.Join(r.guestRoot, d)); err != nil || st.Mode().Perm() != 0o700 {
			t.Errorf("guest dir %s: %v; want made 0700", d, err)
		}
	}
	for _, absent := range []string{"/root/.pi", "/root/.config/locked.json", "/root/fifo.json", "/root/dir.json"} {
		if _, err := os.Lstat(filepath.Join(r.guestRoot, absent)); err == nil {
			t.Errorf("guest %s exists; it was not synced", absent)
		}
	}
	if len(got.Warnings) != 3 {
		t.Fatalf("warnings %q, want 3 (locked, fifo, dir)", got.Warnings)
	}
	for i, frag := range []string{"locked.json", "fifo.json", "dir.json"} {
		mustHave(t, "warning", got.Warnings[i], frag, "was not synced", "started without it")
	}
	mustHave(t, "warning", got.Warnings[0], "permission denied")
	mustHave(t, "warning", got.Warnings[1], "not a regular file")
	mustHave(t, "daemon log", r.log.String(), "credential file not synced", "locked.json", "synced credential files")
	if insp := r.m.view(t.Context(), r.state(t, "cred")); !slices.Equal(insp.Credentials, want) || len(insp.Warnings) != 3 {
		t.Errorf("inspect: credentials %q warnings %q", insp.Credentials, insp.Warnings)
	}
	r.noSecrets(t, "s3cret")

	// Host changes reach the guest at the next start: a new content, a
	// file that appears, a file that becomes readable.
	if _, err := r.m.stop(t.Context(), "cred", false, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	r.hostFile(t, ".claude/.credentials.json", `{"claude":"s3cret-cl-2"}`, 0o600, nobody)
	r.hostFile(t, ".pi/agent/auth.json", `{"pi":"s3cret-pi-1"}`, 0o600, nobody)
	os.Chown(filepath.Join(r.home, ".config/locked.json"), nobody, nobody)
	os.Remove(filepath.Join(r.home, "fifo.json"))
	os.Remove(filepath.Join(r.home, "dir.json"))
	got, err = r.start(t.Context(), t, r.state(t, "cred"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, "/root/.pi/agent/auth.json", "/root/.config/locked.json")
	if diff := cmp.Diff(want, got.Credentials); diff != "" || len(got.Warnings) != 0 {
		t.Errorf("second start: synced (-want +got):\n%s\nwarnings %q", diff, got.Warnings)
	}
	if b, _ := os.ReadFile(filepath.Join(r.guestRoot, "/root/.claude/.credentials.json")); string(b) != `{"claude":"s3cret-cl-2"}` {
		t.Errorf("the changed file in the guest: %q", b)
	}
	r.noSecrets(t, "s3cret")
}

// With credential_files = [] nothing is synced and the agent is not asked.
func TestCredentialSyncNone(t *testing.T) {
	r := newCredRig(t)
	r.m.cfg.Credentials.Files = nil
	got, err := r.start(t.Context(), t, r.vm(t, "bare"), 5*time.Second)
	if err != nil || len(got.Credentials) != 0 || len(got.Warnings) != 0 {
		t.Fatalf("start: %v, credentials %q, warnings %q", err, got.Credentials, got.Warnings)
	}
	if rec := r.state(t, "bare"); rec.Synced != "[]" {
		t.Errorf("synced %q, want []", rec.Synced)
	}
}

// noSecrets fails when a credential's content is in the daemon's log or
// anywhere in its state directory (the database included).
func (r *credRig) noSecrets(t *testing.T, marker string) {
	t.Helper()
	if strings.Contains(r.log.String(), marker) {
		t.Errorf("the daemon log holds a credential's content:\n%s", r.log)
	}
	filepath.Walk(r.dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return nil
		}
		if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(marker)) {
			t.Errorf("%s holds a credential's content", p)
		}
		return nil
	})
}

// openAs as root for another user reads only what that user could.
func TestOpenAsUsesTheUsersPermissions(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	dir := t.TempDir()
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(dir, 0o755)
	mine, theirs := filepath.Join(dir, "mine"), filepath.Join(dir, "root-only")
	os.WriteFile(mine, []byte("a"), 0o600)
	os.Chown(mine, nobody, nobody)
	os.WriteFile(theirs, []byte("b"), 0o600)
	if b, err := readCredential(mine, nobody, nobody); err != nil || string(b) != "a" {
		t.Errorf("the user's own file: %q, %v", b, err)
	}
	if _, err := readCredential(theirs, nobody, nobody); !os.IsPermission(err) {
		t.Errorf("root's file read as the user: %v, want permission denied", err)
	}
	if b, err := readCredential(theirs, 0, 0); err != nil || string(b) != "b" {
		t.Errorf("root's file read as root: %q, %v", b, err)
	}
	// The daemon's own threads stay root.
	if b, err := os.ReadFile(theirs); err != nil || string(b) != "b" {
		t.Errorf("after openAs the daemon reads %q, %v", b, err)
	}
	big := filepath.Join(dir, "big")
	os.WriteFile(big, make([]byte, maxCredentialBytes+1), 0o644)
	if _, err := readCredential(big, nobody, nobody); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Errorf("a 1 MiB+1 file: %v", err)
	}
	if _, err := readCredential(filepath.Join(mine, "x"), nobody, nobody); !os.IsNotExist(err) {
		t.Errorf("a path through a file: %v, want not exist", err)
	}
}

func mustHave(t *testing.T, what, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%s lacks %q: %s", what, sub, s)
		}
	}
}
