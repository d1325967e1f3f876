package daemon

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"banger/internal/store"
)

// TestEnsureAgentKeyForOldVM: a VM made before agent keys (a seed without
// one) gets a key at its next start, in its directory and on its seed,
// with the seed's other files kept; a second start keeps the same key.
func TestEnsureAgentKeyForOldVM(t *testing.T) {
	v := store.VM{Name: "old", Dir: t.TempDir()}
	seed := filepath.Join(v.Dir, seedFileName)
	if err := writeSeed(seed, []seedFile{{"root", 0o700, ""}, {"root/.ssh/authorized_keys", 0o600, "ssh-ed25519 AAAA\n"}}); err != nil {
		t.Fatal(err)
	}
	if err := ensureAgentKey(v); err != nil {
		t.Fatal(err)
	}
	key := mustKey(t, v)
	files, err := readSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, f := range files {
		got[f.path] = f.data
	}
	if got["root/.ssh/authorized_keys"] != "ssh-ed25519 AAAA\n" || got[agentKeySeedPath] != hex.EncodeToString(key)+"\n" {
		t.Fatalf("seed after ensureAgentKey: %q", got)
	}
	if st, _ := os.Stat(seed); st.Mode().Perm() != 0o600 {
		t.Errorf("seed mode %v, want 0600", st.Mode().Perm())
	}
	if err := ensureAgentKey(v); err != nil {
		t.Fatal(err)
	}
	if again := mustKey(t, v); hex.EncodeToString(again) != hex.EncodeToString(key) {
		t.Fatal("a second start changed the agent key")
	}
	// A damaged key file is replaced, and the seed carries one key only.
	os.WriteFile(filepath.Join(v.Dir, agentKeyFile), []byte("nonsense"), 0o600)
	if err := ensureAgentKey(v); err != nil {
		t.Fatal(err)
	}
	files, _ = readSeed(seed)
	n := 0
	for _, f := range files {
		if f.path == agentKeySeedPath {
			n++
			if f.data != hex.EncodeToString(mustKey(t, v))+"\n" {
				t.Error("seed key differs from the host's copy")
			}
		}
	}
	if n != 1 {
		t.Fatalf("seed holds %d agent keys", n)
	}
}
