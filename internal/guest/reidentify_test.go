package guest

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func validIdentity() ReidentifyRequest {
	return ReidentifyRequest{
		Time: time.Now(), Hostname: "fork-1", MAC: "02:42:AC:10:00:05",
		Address: "172.16.0.5/24", Gateway: "172.16.0.1", DNS: []string{"1.1.1.1", "2606:4700::1111"},
		MachineID:  "0123456789abcdef0123456789abcdef",
		HostKey:    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n-----END OPENSSH PRIVATE KEY-----\n",
		HostKeyPub: "ssh-ed25519 AAAAC3 root@fork-1\n",
		AgentKey:   strings.Repeat("ab", KeySize),
	}
}

func TestReidentifyValidate(t *testing.T) {
	id, err := validIdentity().Parse()
	if err != nil {
		t.Fatalf("a valid request: %v", err)
	}
	if id.MAC.String() != "02:42:ac:10:00:05" || id.Address.String() != "172.16.0.5/24" || len(id.DNS) != 2 || len(id.AgentKey) != KeySize {
		t.Errorf("parsed %+v", id)
	}
	noKey := validIdentity()
	noKey.AgentKey, noKey.DNS = "", nil
	if err := noKey.Validate(); err != nil {
		t.Errorf("without agent key and DNS: %v", err)
	}
	tests := []struct {
		field  string
		change func(*ReidentifyRequest)
	}{
		{"time", func(r *ReidentifyRequest) { r.Time = time.Time{} }},
		{"hostname", func(r *ReidentifyRequest) { r.Hostname = "" }},
		{"hostname", func(r *ReidentifyRequest) { r.Hostname = "a_b" }},
		{"hostname", func(r *ReidentifyRequest) { r.Hostname = "ends-" }},
		{"hostname", func(r *ReidentifyRequest) { r.Hostname = strings.Repeat("a", 65) }},
		{"mac", func(r *ReidentifyRequest) { r.MAC = "" }},
		{"mac", func(r *ReidentifyRequest) { r.MAC = "02:42:ac:10:00" }},
		{"mac", func(r *ReidentifyRequest) { r.MAC = "00:00:00:00:00:00:00:01" }},
		{"mac", func(r *ReidentifyRequest) { r.MAC = "01:00:5e:00:00:01" }},
		{"mac", func(r *ReidentifyRequest) { r.MAC = "00:00:00:00:00:00" }},
		{"address", func(r *ReidentifyRequest) { r.Address = "172.16.0.5" }},
		{"address", func(r *ReidentifyRequest) { r.Address = "fd00::5/64" }},
		{"address", func(r *ReidentifyRequest) { r.Address = "172.16.0.5/0" }},
		{"gateway", func(r *ReidentifyRequest) { r.Gateway = "" }},
		{"gateway", func(r *ReidentifyRequest) { r.Gateway = "10.0.0.1" }},
		{"gateway", func(r *ReidentifyRequest) { r.Gateway = "172.16.0.5" }},
		{"dns", func(r *ReidentifyRequest) { r.DNS = []string{"dns.google"} }},
		{"machine_id", func(r *ReidentifyRequest) { r.MachineID = "0123456789ABCDEF0123456789ABCDEF" }},
		{"machine_id", func(r *ReidentifyRequest) { r.MachineID = strings.Repeat("0", 32) }},
		{"machine_id", func(r *ReidentifyRequest) { r.MachineID = "0123456789abcdef" }},
		{"host_key", func(r *ReidentifyRequest) { r.HostKey = "" }},
		{"host_key", func(r *ReidentifyRequest) { r.HostKey = "ssh-ed25519 AAAA" }},
		{"host_key_pub", func(r *ReidentifyRequest) { r.HostKeyPub = "" }},
		{"host_key_pub", func(r *ReidentifyRequest) { r.HostKeyPub = "ssh-rsa AAAA" }},
		{"host_key_pub", func(r *ReidentifyRequest) { r.HostKeyPub = "ssh-ed25519 AAAA\nssh-ed25519 BBBB" }},
		{"agent_key", func(r *ReidentifyRequest) { r.AgentKey = "zz" }},
		{"agent_key", func(r *ReidentifyRequest) { r.AgentKey = strings.Repeat("ab", KeySize-1) }},
	}
	for _, tt := range tests {
		r := validIdentity()
		tt.change(&r)
		err := r.Validate()
		var re *RemoteError
		if !errors.As(err, &re) || re.Kind != KindInvalid || !strings.Contains(re.Message, "bad "+tt.field+":") {
			t.Errorf("%+v: %v, want an invalid error naming %s", r, err, tt.field)
		}
	}
}
