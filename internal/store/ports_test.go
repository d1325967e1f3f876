package store

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func portStore(t *testing.T, vms ...string) *Store {
	t.Helper()
	s := open(t, filepath.Join(t.TempDir(), "state.db"))
	for _, name := range vms {
		if err := s.CreateVM(context.Background(), VM{ID: "id-" + name, Name: name, State: "stopped"}); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func tcp(addr string, host, guest int) Port {
	return Port{Proto: "tcp", HostAddr: addr, HostPort: host, GuestPort: guest}
}

var ignoreTimes = cmpopts.IgnoreFields(Port{}, "CreatedAt", "VMID")

func TestPortsAddListRemove(t *testing.T) {
	ctx := context.Background()
	s := portStore(t, "a", "b")
	want := []Port{tcp("127.0.0.1", 8080, 80), tcp("127.0.0.1", 8443, 443), {Proto: "udp", HostAddr: "127.0.0.1", HostPort: 8080, GuestPort: 53}}
	if err := s.AddPorts(ctx, "id-a", want); err != nil {
		t.Fatal(err)
	}
	if err := s.AddPorts(ctx, "id-b", []Port{tcp("::1", 8080, 80)}); err != nil {
		t.Fatalf("the same port on another address: %v", err)
	}
	got, err := s.PortsOf(ctx, "id-a")
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, got, ignoreTimes); d != "" {
		t.Fatalf("PortsOf (-want +got)\n%s", d)
	}
	if got[0].VMID != "id-a" || got[0].CreatedAt.IsZero() {
		t.Fatalf("PortsOf lost the vm or the time: %+v", got[0])
	}
	all, _ := s.Ports(ctx)
	if len(all) != 4 {
		t.Fatalf("Ports = %d forwards, want 4", len(all))
	}

	removed, err := s.RemovePorts(ctx, "id-a", []Port{{Proto: "tcp", HostAddr: "127.0.0.1", HostPort: 8443}})
	if err != nil || len(removed) != 1 || removed[0].GuestPort != 443 {
		t.Fatalf("RemovePorts = %+v, %v", removed, err)
	}
	got, _ = s.PortsOf(ctx, "id-a")
	if len(got) != 2 {
		t.Fatalf("after remove: %+v", got)
	}
}

func TestPortsAddIsAllOrNothing(t *testing.T) {
	ctx := context.Background()
	s := portStore(t, "a", "b")
	if err := s.AddPorts(ctx, "id-a", []Port{tcp("127.0.0.1", 18080, 8080)}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		add  []Port
		want string
	}{
		{"same host port", []Port{tcp("127.0.0.1", 9000, 1), tcp("127.0.0.1", 18080, 80)}, `127.0.0.1:18080/tcp is already forwarded to vm "a"`},
		{"wildcard over it", []Port{tcp("127.0.0.1", 9000, 1), tcp("0.0.0.0", 18080, 80)}, `0.0.0.0:18080/tcp overlaps 127.0.0.1:18080/tcp, already forwarded to vm "a"`},
		{"twice in one call", []Port{tcp("127.0.0.1", 9000, 1), tcp("127.0.0.1", 9000, 2)}, `127.0.0.1:9000/tcp is already forwarded to vm "b"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := s.AddPorts(ctx, "id-b", tc.add)
			if !errors.Is(err, ErrExist) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("AddPorts = %v, want ErrExist saying %q", err, tc.want)
			}
			if got, _ := s.PortsOf(ctx, "id-b"); len(got) != 0 {
				t.Fatalf("a refused AddPorts left %+v", got)
			}
		})
	}
	if err := s.AddPorts(ctx, "nosuch", []Port{tcp("127.0.0.1", 1, 1)}); !errors.Is(err, ErrNotExist) {
		t.Fatalf("forward of a missing vm: %v, want ErrNotExist", err)
	}
	// A wildcard held blocks every address of that port; another
	// protocol does not.
	if err := s.AddPorts(ctx, "id-b", []Port{tcp("0.0.0.0", 7000, 1)}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddPorts(ctx, "id-a", []Port{tcp("127.0.0.2", 7000, 1)}); !errors.Is(err, ErrExist) {
		t.Fatalf("an address under a held wildcard: %v, want ErrExist", err)
	}
	if err := s.AddPorts(ctx, "id-a", []Port{{Proto: "udp", HostAddr: "0.0.0.0", HostPort: 7000, GuestPort: 1}}); err != nil {
		t.Fatalf("udp beside tcp: %v", err)
	}
}

func TestPortsRemoveIsAllOrNothing(t *testing.T) {
	ctx := context.Background()
	s := portStore(t, "a", "b")
	s.AddPorts(ctx, "id-a", []Port{tcp("127.0.0.1", 8080, 80), tcp("127.0.0.1", 8081, 81)})
	s.AddPorts(ctx, "id-b", []Port{tcp("127.0.0.1", 9090, 90)})
	for _, keys := range [][]Port{
		{tcp("127.0.0.1", 8080, 0), tcp("127.0.0.1", 9999, 0)},  // one missing
		{tcp("127.0.0.1", 8080, 0), tcp("127.0.0.1", 9090, 0)},  // one another vm's
		{tcp("127.0.0.1", 8080, 0), tcp("127.0.0.1", 8081, 99)}, // wrong guest port
	} {
		_, err := s.RemovePorts(ctx, "id-a", keys)
		if !errors.Is(err, ErrNotExist) {
			t.Fatalf("RemovePorts(%v) = %v, want ErrNotExist", keys, err)
		}
		if got, _ := s.PortsOf(ctx, "id-a"); len(got) != 2 {
			t.Fatalf("a refused RemovePorts removed some: %+v", got)
		}
	}
}

func TestDeleteVMDropsItsPorts(t *testing.T) {
	ctx := context.Background()
	s := portStore(t, "a", "b")
	s.AddPorts(ctx, "id-a", []Port{tcp("127.0.0.1", 8080, 80)})
	s.AddPorts(ctx, "id-b", []Port{tcp("127.0.0.1", 9090, 90)})
	if err := s.DeleteVM(ctx, "id-a"); err != nil {
		t.Fatal(err)
	}
	all, _ := s.Ports(ctx)
	if len(all) != 1 || all[0].VMID != "id-b" {
		t.Fatalf("after deleting a: %+v", all)
	}
	// Its port is free for another VM now.
	if err := s.AddPorts(ctx, "id-b", []Port{tcp("127.0.0.1", 8080, 80)}); err != nil {
		t.Fatal(err)
	}
}
