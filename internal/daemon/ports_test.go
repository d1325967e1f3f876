package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/portfwd"
	"banger/internal/store"
	"banger/internal/vmm"
	"banger/internal/vmm/vmmtest"
)

// loopNet is the rig's fake network with every guest at 127.0.0.1, so a
// forward's far end is a server the test runs.
type loopNet struct{ *fakeNet }

func (loopNet) lease(context.Context, string) (store.Lease, error) {
	return store.Lease{IP: netip.MustParseAddr("127.0.0.1")}, nil
}

// portsManager is a vmManager (a daemon) over the rig's state and d, its
// guests on loopback, with a forwarder of its own.
func (r *lifeRig) portsManager(t *testing.T, d *vmmtest.MemDriver) *vmManager {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return newVMManager(vmParts{store: r.st, net: loopNet{r.net}, drivers: map[string]vmm.Driver{"mem": d}, def: "mem",
		cfg: vmSettings{VMsDir: r.dir + "/vms"}, ports: portfwd.New(ctx, nil)})
}

// guestServer stands in for a server in the guest: it greets each
// connection with hello and closes it.
func guestServer(t *testing.T, hello string) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, hello)
			c.Close()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

func hostPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// through reads what a connection to the host port gets; "" when
// nothing listens.
func through(t *testing.T, port int) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 2*time.Second)
	if err != nil {
		return ""
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	b, _ := io.ReadAll(c)
	return string(b)
}

// A forward added to a stopped VM is recorded, inactive; it listens from
// the VM's start, ends at its stop, comes back at the next start and
// after a daemon restart, and goes with the VM.
func TestPortsFollowTheVM(t *testing.T) {
	r := newLifeRig(t, vmmtest.MemOptions{})
	m := r.portsManager(t, r.d)
	r.m = m
	ctx := t.Context()
	v := r.vm(t, "web")
	guest, host := guestServer(t, "hello from the guest"), hostPort(t)
	spec := fmt.Sprintf("%d:%d", host, guest)
	ps, err := m.addPorts(ctx, "web", []string{spec})
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 1 || ps[0].Active || ps[0].HostAddr != "127.0.0.1" || ps[0].HostPort != host || ps[0].GuestPort != guest {
		t.Fatalf("forwards of a stopped vm: %+v", ps)
	}
	if got := through(t, host); got != "" {
		t.Fatalf("a stopped vm's forward answers: %q", got)
	}
	if _, err := r.start(ctx, t, v, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := through(t, host); got != "hello from the guest" {
		t.Fatalf("through the forward of a running vm: %q", got)
	}
	if view := m.view(ctx, r.state(t, "web")); len(view.Ports) != 1 || !view.Ports[0].Active {
		t.Fatalf("view of the running vm: ports %+v", view.Ports)
	}
	if _, err := m.stop(ctx, "web", false, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := through(t, host); got != "" {
		t.Fatalf("forward answers after stop: %q", got)
	}
	if _, err := r.start(ctx, t, r.state(t, "web"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := through(t, host); got != "hello from the guest" {
		t.Fatalf("after a restart of the vm: %q", got)
	}

	// The daemon goes (its listeners with it), a new one adopts the VM.
	m.close()
	m.ports.CloseAll()
	m2 := r.portsManager(t, r.d.Restart())
	if err := m2.adoptAll(ctx); err != nil {
		t.Fatal(err)
	}
	if got := through(t, host); got != "hello from the guest" {
		t.Fatalf("after a daemon restart: %q", got)
	}
	if err := m2.delete(ctx, "web", true); err != nil {
		t.Fatal(err)
	}
	if got := through(t, host); got != "" {
		t.Fatalf("forward answers after delete: %q", got)
	}
	if all, _ := r.st.Ports(ctx); len(all) != 0 {
		t.Fatalf("forwards left after delete: %+v", all)
	}
}

// A host port taken fails the start with its name before anything is
// made; adding forwards to a running VM is all or none, and removing them
// ends them.
func TestPortsInUseAndAllOrNothing(t *testing.T) {
	r := newLifeRig(t, vmmtest.MemOptions{})
	m := r.portsManager(t, r.d)
	r.m = m
	ctx := t.Context()
	v := r.vm(t, "web")
	guest := guestServer(t, "hi")
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	takenPort := taken.Addr().(*net.TCPAddr).Port
	// Recorded while free, taken by the time the VM starts.
	taken.Close()
	if _, err := m.addPorts(ctx, "web", []string{fmt.Sprintf("%d:%d", takenPort, guest)}); err != nil {
		t.Fatal(err)
	}
	taken, err = net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", takenPort))
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	_, err = r.start(ctx, t, v, 5*time.Second)
	want := fmt.Sprintf("127.0.0.1:%d/tcp is in use on the host", takenPort)
	if err == nil || !strings.Contains(err.Error(), want) || api.CodeOf(err) != api.Conflict {
		t.Fatalf("start with its host port taken: %v, want a conflict saying %q", err, want)
	}
	if n := len(ops(r.d, v.ID)); n != 0 || r.net.isAttached(v.ID) {
		t.Fatalf("a start refused for its port still called the driver %d times, tap %v", n, r.net.isAttached(v.ID))
	}
	if _, err := m.removePorts(ctx, "web", []string{fmt.Sprint(takenPort)}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.start(ctx, t, r.state(t, "web"), 5*time.Second); err != nil {
		t.Fatal(err)
	}

	// Several at once on the running VM: one taken, none added.
	a, b := hostPort(t), hostPort(t)
	_, err = m.addPorts(ctx, "web", []string{fmt.Sprintf("%d:%d", a, guest), fmt.Sprintf("%d:%d", takenPort, guest)})
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("add with one port taken: %v", err)
	}
	if ps := m.portsView(ctx, v.ID); len(ps) != 0 || through(t, a) != "" {
		t.Fatalf("a refused add left %+v", ps)
	}
	ps, err := m.addPorts(ctx, "web", []string{fmt.Sprintf("%d:%d", a, guest), fmt.Sprintf("127.0.0.1:%d:%d/tcp", b, guest)})
	if err != nil || len(ps) != 2 || !ps[0].Active || !ps[1].Active {
		t.Fatalf("add of two free ports to a running vm: %+v, %v", ps, err)
	}
	if through(t, a) != "hi" || through(t, b) != "hi" {
		t.Fatal("the added forwards do not answer")
	}
	// The same host port again, for this VM or another, is refused.
	r.vm(t, "other")
	_, err = m.addPorts(ctx, "other", []string{fmt.Sprintf("0.0.0.0:%d:1", a)})
	if api.CodeOf(err) != api.Conflict {
		t.Fatalf("another vm taking a held port: %v", err)
	}
	if !strings.Contains(err.Error(), `already forwarded to vm "web"`) {
		t.Fatalf("error %q does not name the vm holding the port", err)
	}
	// Removal: all or none, then gone at once.
	if _, err := m.removePorts(ctx, "web", []string{fmt.Sprint(a), "1"}); api.CodeOf(err) != api.NotFound {
		t.Fatalf("remove with one unknown: %v, want not found", err)
	}
	if through(t, a) != "hi" {
		t.Fatal("a refused remove ended a forward")
	}
	ps, err = m.removePorts(ctx, "web", []string{fmt.Sprint(a)})
	if err != nil || len(ps) != 1 || ps[0].HostPort != b {
		t.Fatalf("after removing one: %+v, %v", ps, err)
	}
	if through(t, a) != "" || through(t, b) != "hi" {
		t.Fatal("remove ended the wrong forward")
	}
}

// Bad specs are refused with the accepted forms, before anything.
func TestPortsBadSpecs(t *testing.T) {
	r := newLifeRig(t, vmmtest.MemOptions{})
	m := r.portsManager(t, r.d)
	r.vm(t, "web")
	for _, specs := range [][]string{{"80"}, {"x:80"}, {"8080:80", "8080:81"}, {}} {
		_, err := m.addPorts(t.Context(), "web", specs)
		if api.CodeOf(err) != api.InvalidArgument {
			t.Errorf("addPorts(%q) = %v, want invalid argument", specs, err)
		}
	}
	if _, err := m.addPorts(t.Context(), "web", []string{"192.0.2.1:8080:80"}); api.CodeOf(err) != api.InvalidArgument ||
		!strings.Contains(err.Error(), "cannot listen on 192.0.2.1:8080/tcp") {
		t.Errorf("an address the host lacks: %v", err)
	}
	if ps := m.portsView(t.Context(), r.state(t, "web").ID); len(ps) != 0 {
		t.Errorf("bad specs left %+v", ps)
	}
}

// The API: POST adds, GET lists, DELETE by query or by path removes.
func TestPortsHTTP(t *testing.T) {
	r := newLifeRig(t, vmmtest.MemOptions{})
	s := &Server{vms: r.portsManager(t, r.d)}
	mux := http.NewServeMux()
	s.portRoutes(mux)
	r.vm(t, "web")
	do := func(method, path, body string) (int, []api.PortForward) {
		t.Helper()
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(method, path, strings.NewReader(body)))
		var out []api.PortForward
		json.Unmarshal(rec.Body.Bytes(), &out)
		return rec.Code, out
	}
	a, b := hostPort(t), hostPort(t)
	code, ps := do("POST", "/v1/vms/web/ports", fmt.Sprintf(`{"ports":["%d:80","[::1]:%d:81/udp"]}`, a, b))
	if code != 200 || len(ps) != 2 {
		t.Fatalf("POST: %d %+v", code, ps)
	}
	if code, _ := do("POST", "/v1/vms/web/ports", `{"ports":["nope"]}`); code != http.StatusBadRequest {
		t.Fatalf("POST of a bad spec: %d", code)
	}
	if code, ps := do("GET", "/v1/vms/web/ports", ""); code != 200 || len(ps) != 2 {
		t.Fatalf("GET: %d %+v", code, ps)
	}
	if code, _ := do("DELETE", fmt.Sprintf("/v1/vms/web/ports/udp/::1/%d", b), ""); code != 200 {
		t.Fatalf("DELETE by path: %d", code)
	}
	if code, _ := do("DELETE", fmt.Sprintf("/v1/vms/web/ports?spec=%d&spec=9", a), ""); code != http.StatusNotFound {
		t.Fatalf("DELETE of one unknown: %d", code)
	}
	if code, ps := do("DELETE", fmt.Sprintf("/v1/vms/web/ports?spec=%d", a), ""); code != 200 || len(ps) != 0 {
		t.Fatalf("DELETE by query: %d %+v", code, ps)
	}
}
