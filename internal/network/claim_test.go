package network

import (
	"errors"
	"strings"
	"testing"
)

// Two daemons in one network namespace: the second is refused and told
// whose network it is; a daemon in another namespace is not; the claim
// goes with its holder.
func TestClaimPerNamespace(t *testing.T) {
	requireNetns(t)
	ClaimDir = t.TempDir()
	a, b := newNS(t, "cla"), newNS(t, "clb")
	var first *Claim
	a.must(t, "first claim", func() (err error) {
		first, err = TakeClaim("/home/alice/banger/state")
		return err
	})
	err := a.do(func() error {
		c, err := TakeClaim("/home/bob/banger/state")
		if err == nil {
			c.Release()
		}
		return err
	})
	if !errors.Is(err, ErrClaimed) {
		t.Fatalf("second claim in the same namespace: %v, want ErrClaimed", err)
	}
	for _, want := range []string{"/home/alice/banger/state", "banger daemon stop", "another network namespace"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q does not say %q", err, want)
		}
	}
	b.must(t, "claim in another namespace", func() error {
		c, err := TakeClaim("/home/bob/banger/state")
		if err == nil {
			c.Release()
		}
		return err
	})
	first.Release()
	a.must(t, "claim after the holder released", func() error {
		c, err := TakeClaim("/home/bob/banger/state")
		if err == nil {
			c.Release()
		}
		return err
	})
}
