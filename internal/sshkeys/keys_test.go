package sshkeys

import (
	"banger/internal/prereq"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/ssh"
)

func TestEnsureUserKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ssh", "id_ed25519")
	pub, err := EnsureUserKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(pub, "ssh-ed25519 ") {
		t.Fatalf("public line %q", pub)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("private key: %v %v", fi, err)
	}
	again, err := EnsureUserKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Fields(again)[1] != strings.Fields(pub)[1] {
		t.Fatalf("second call made a new key")
	}
	if _, err := Signer(path); err != nil {
		t.Fatal(err)
	}
}

func TestPin(t *testing.T) {
	path := filepath.Join(t.TempDir(), "known_hosts")
	a, _ := Generate("a")
	b, _ := Generate("b")
	steps := []struct{ host, key string }{{"172.16.0.2", a.Public}, {"172.16.0.3", a.Public}, {"172.16.0.2", b.Public}}
	for _, s := range steps {
		if err := Pin(path, s.host, s.key); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := os.ReadFile(path)
	f := func(p Pair) string { return strings.Join(strings.Fields(p.Public)[:2], " ") }
	want := "172.16.0.3 " + f(a) + "\n172.16.0.2 " + f(b) + "\n"
	if diff := cmp.Diff(want, string(got)); diff != "" {
		t.Errorf("known_hosts (-want +got):\n%s", diff)
	}
}

// Probe succeeds only against a server holding the pinned host key that
// accepts the user's key.
func TestProbe(t *testing.T) {
	host, _ := Generate("host")
	other, _ := Generate("other")
	user, _ := Generate("user")
	userSigner, err := ssh.ParsePrivateKey(user.Private)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, host, userSigner.PublicKey())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name    string
		hostKey string
		ok      bool
	}{
		{"pinned key", host.Public, true},
		{"changed key", other.Public, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Probe(ctx, addr, "root", tc.hostKey, userSigner)
			if (err == nil) != tc.ok {
				t.Fatalf("Probe = %v, want ok=%v", err, tc.ok)
			}
			if !tc.ok && !errors.Is(err, ErrHostKeyChanged) {
				t.Fatalf("Probe = %v, want ErrHostKeyChanged", err)
			}
		})
	}
}

// serve runs a minimal ssh server on 127.0.0.1 that accepts only userKey.
func serve(t *testing.T, host Pair, userKey ssh.PublicKey) string {
	t.Helper()
	hs, err := ssh.ParsePrivateKey(host.Private)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(_ ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
		if string(k.Marshal()) == string(userKey.Marshal()) {
			return nil, nil
		}
		return nil, os.ErrPermission
	}}
	cfg.AddHostKey(hs)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, chans, reqs, err := ssh.NewServerConn(c, cfg)
				if err != nil {
					return
				}
				go ssh.DiscardRequests(reqs)
				for ch := range chans {
					ch.Reject(ssh.Prohibited, "no")
				}
			}()
		}
	}()
	return l.Addr().String()
}

// ssh never forwards the host's agent, X11 or ports into a guest, even
// when ~/.ssh/config asks for it: options on the command line win.
func TestArgsForwardNothing(t *testing.T) {
	args := strings.Join(Args("/k", "/kh", "root", "172.16.0.2", false), " ")
	for _, want := range []string{"-o ForwardAgent=no", "-o ForwardX11=no", "-o ClearAllForwardings=yes"} {
		if !strings.Contains(args, want) {
			t.Errorf("ssh args %q lack %q", args, want)
		}
	}
}

// The real ssh agrees: a config with ForwardAgent yes is overridden.
func TestArgsOverrideUserConfig(t *testing.T) {
	if _, err := exec.LookPath("ssh"); err != nil {
		prereq.Missing(t, "ssh not installed (apt-get install openssh-client)")
	}
	cfg := filepath.Join(t.TempDir(), "config")
	os.WriteFile(cfg, []byte("Host *\n  ForwardAgent yes\n  ForwardX11 yes\n  LocalForward 9999 127.0.0.1:22\n"), 0o600)
	args := append([]string{"-G", "-F", cfg}, Args("/k", "/kh", "root", "172.16.0.2", false)...)
	out, err := exec.Command("ssh", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh -G: %v\n%s", err, out)
	}
	got := string(out)
	for _, want := range []string{"forwardagent no", "forwardx11 no", "clearallforwardings yes"} {
		if !strings.Contains(got, want+"\n") {
			t.Errorf("ssh -G does not show %q:\n%s", want, got)
		}
	}
}
