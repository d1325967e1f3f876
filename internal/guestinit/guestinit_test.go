package guestinit

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseCmdline(t *testing.T) {
	tests := []struct {
		name    string
		cmdline string
		want    options
		params  map[string]string // module -> finit_module params
	}{
		{
			name:    "defaults",
			cmdline: "console=ttyS0 root=/dev/vda\n",
			want:    options{Root: "/dev/vda", RootFSType: "ext4", Init: DefaultInit, Params: map[string][]string{}},
		},
		{
			name: "firecracker devices and banger keys",
			cmdline: "console=ttyS0 reboot=k panic=1 root=/dev/vda banger.modules=/dev/vdb init=/lib/systemd/systemd ro " +
				"virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6 virtio-blk.queue_depth=64",
			want: options{
				Root: "/dev/vda", RootFSType: "ext4", ReadOnly: true, ModulesDev: "/dev/vdb", Init: "/lib/systemd/systemd",
				Params: map[string][]string{
					"virtio_mmio": {"device=4K@0xd0000000:5", "device=4K@0xd0001000:6"},
					"virtio_blk":  {"queue_depth=64"},
				},
			},
			params: map[string]string{
				"virtio_mmio": "device=4K@0xd0000000:5 device=4K@0xd0001000:6",
				"virtio-blk":  "queue_depth=64",
				"virtio_net":  "",
			},
		},
		{
			name:    "quotes and init args",
			cmdline: `root="/dev/vda" rootfstype=ext2 foo.bar="a b" -- init=/not/this`,
			want: options{Root: "/dev/vda", RootFSType: "ext2", Init: DefaultInit,
				Params: map[string][]string{"foo": {`bar="a b"`}}},
			params: map[string]string{"foo": `bar="a b"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := parseCmdline(tt.cmdline)
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(options{})); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
			for mod, want := range tt.params {
				if p := got.moduleParams(mod); p != want {
					t.Errorf("moduleParams(%q) = %q, want %q", mod, p, want)
				}
			}
		})
	}
}

func TestParseGuestNet(t *testing.T) {
	g, err := parseGuestNet("addr=172.16.0.2/24,gw=172.16.0.1,dns=1.1.1.1,dns=9.9.9.9")
	if err != nil {
		t.Fatal(err)
	}
	if g.Addr.String() != "172.16.0.2/24" || g.GW.String() != "172.16.0.1" || len(g.DNS) != 2 {
		t.Fatalf("parsed %+v", g)
	}
	for _, bad := range []string{"", "gw=1.2.3.4", "addr=nonsense", "addr=10.0.0.2/24,dns=x"} {
		if _, err := parseGuestNet(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if v := cmdlineValue("root=/dev/vda banger.net=addr=1.2.3.4/24 -- banger.hostname=x", "banger.hostname"); v != "" {
		t.Errorf("value after -- taken: %q", v)
	}
}
