package daemon

import (
	"errors"
	"strings"
	"testing"

	"banger/internal/api"
	"banger/internal/store"
)

// A stored policy that does not parse is enforced as the most
// restrictive one, never as the default.
func TestPolicyOf(t *testing.T) {
	for _, tc := range []struct {
		net  string
		want api.NetPolicy
	}{
		{"", api.NetPolicy{}},
		{"{}", api.NetPolicy{}},
		{`{"mode":"allow","allow":["a.test"],"isolate":true}`, api.NetPolicy{Mode: api.NetAllow, Allow: []string{"a.test"}, Isolate: true}},
		{`{"mode":`, api.NetPolicy{Mode: api.NetNone, Isolate: true}},
	} {
		got := policyOf(store.VM{Net: tc.net})
		if got.String() != tc.want.String() {
			t.Errorf("policyOf(%q) = %s, want %s", tc.net, got, tc.want)
		}
	}
}

// A malformed --net is refused as invalid, saying what is accepted.
func TestCreatePolicyRefusesMalformed(t *testing.T) {
	m := newVMManager(vmParts{})
	_, err := m.createPolicy(t.Context(), api.CreateVMRequest{Net: "allow=a.test:0"})
	var ae *api.Error
	if err == nil || !strings.Contains(err.Error(), api.NetForms) || !errors.As(err, &ae) || ae.Code != api.InvalidArgument {
		t.Fatalf("createPolicy(allow=a.test:0) = %v, want an invalid argument listing the forms", err)
	}
	p, err := m.createPolicy(t.Context(), api.CreateVMRequest{})
	if err != nil || p.EffectiveMode() != api.NetNAT || p.Isolate {
		t.Fatalf("createPolicy of the default = %+v, %v", p, err)
	}
}
