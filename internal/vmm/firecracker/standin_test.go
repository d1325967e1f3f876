package firecracker

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The stand-in plays Firecracker for tests: an HTTP server on the API
// Unix socket that records every request and keeps the state machine
// Firecracker documents (pre-boot resources only before InstanceStart,
// snapshot load only on a fresh process, snapshot create only when
// paused). It does not check bodies against the spec: the tests do that
// on what it recorded. Run as a process (the test binary re-executed with
// standinEnv set) it also plays firecracker's command line, its failure
// modes, the serial console on stdout and the hybrid vsock socket.

const (
	standinEnv    = "BANGER_FC_STANDIN"     // mode of the re-executed stand-in
	standinLogEnv = "BANGER_FC_STANDIN_LOG" // JSON lines of recorded requests
	standinMaxAge = 60 * time.Second        // a stray stand-in ends itself
	standinBanner = "standin-console: guest booted"
)

// Stand-in modes.
const (
	modeOK         = "ok"          // behaves
	modeFault      = "fault"       // PUT /drives/* answers 400 with a fault_message
	modeExit       = "exit"        // exits at once with an error
	modeNoSocket   = "nosocket"    // never creates the API socket
	modeOldVersion = "old-version" // GET /version says 1.5.0
	modeSnapFault  = "snap-fault"  // PUT /snapshot/create writes part of the memory, then answers 400
	modeLoadStays  = "load-stays"  // a failed PUT /snapshot/load does not end the process
)

// standinState is what the stand-in writes as a snapshot's vmstate: what
// Firecracker would reopen on load. Its drives are the path_on_host values
// as firecracker saw them, which load opens again.
type standinState struct {
	Drives map[string]string `json:"drives"`
	Ifaces []string          `json:"ifaces"`
	Vsock  string            `json:"vsock_uds"`
}

// standinIgnoreCAD in the boot args makes the guest ignore Ctrl-Alt-Del.
const standinIgnoreCAD = "standin.ignore-ctrl-alt-del"

type recorded struct {
	Method string          `json:"method"`
	Path   string          `json:"path"`
	Body   json.RawMessage `json:"body,omitempty"`
}

type standin struct {
	mode    string
	logPath string // where requests are appended, "" for none
	exit    func() // called on Ctrl-Alt-Del (the guest "reboots")
	root    string // chroot when playing a jailed firecracker, else ""

	mu       sync.Mutex // guards the fields below
	reqs     []recorded
	state    string // "Not started", "Running", "Paused"
	boot     bool   // a boot resource was configured
	kernel   bool
	metrics  bool
	vsockUDS string
	stubborn bool              // the boot args say the guest ignores Ctrl-Alt-Del
	drives   map[string]string // drive id -> path_on_host
	ifaces   []string

	connMu sync.Mutex // guards conns
	conns  map[net.Conn]bool
}

func newStandin(mode, logPath string) *standin {
	return &standin{mode: mode, logPath: logPath, state: "Not started", exit: func() {}, drives: map[string]string{}, conns: map[net.Conn]bool{}}
}

func (s *standin) record(r *http.Request) (recorded, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return recorded{}, err
	}
	rec := recorded{Method: r.Method, Path: r.URL.Path}
	if len(body) > 0 {
		rec.Body = json.RawMessage(body)
	}
	s.reqs = append(s.reqs, rec)
	if s.logPath != "" {
		line, _ := json.Marshal(rec)
		f, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return rec, err
		}
		defer f.Close()
		if _, err := f.Write(append(line, '\n')); err != nil {
			return rec, err
		}
	}
	return rec, nil
}

func fault(w http.ResponseWriter, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusBadRequest)
	json.NewEncoder(w).Encode(map[string]string{"fault_message": msg})
}

func (s *standin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, err := s.record(r)
	if err != nil {
		fault(w, err.Error())
		return
	}
	if msg := s.apply(rec); msg != "" {
		fault(w, msg)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	switch rec.Path {
	case "/version":
		v := "1.16.1"
		if s.mode == modeOldVersion {
			v = "1.5.0"
		}
		json.NewEncoder(w).Encode(map[string]string{"firecracker_version": v})
	case "/":
		json.NewEncoder(w).Encode(InstanceInfo{AppName: "Firecracker", ID: "standin", State: s.state, VMMVersion: "1.16.1"})
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

var preBoot = map[string]bool{"/machine-config": true, "/boot-source": true, "/drives": true, "/network-interfaces": true, "/vsock": true}

// apply changes the state for rec and returns a fault message when
// Firecracker would refuse it.
func (s *standin) apply(rec recorded) string {
	top := "/" + strings.SplitN(strings.TrimPrefix(rec.Path, "/"), "/", 2)[0]
	switch {
	case rec.Method == http.MethodGet && (rec.Path == "/" || rec.Path == "/version"):
		return ""
	case rec.Method == http.MethodPut && preBoot[top]:
		if s.state != "Not started" {
			return "The requested operation is not supported after starting the microVM."
		}
		if s.mode == modeFault && top == "/drives" {
			return "Unable to create the block device: No such file or directory (os error 2)"
		}
		s.boot = true
		if top == "/boot-source" {
			var b BootSource
			json.Unmarshal(rec.Body, &b)
			s.kernel = true
			s.stubborn = strings.Contains(b.BootArgs, standinIgnoreCAD)
		}
		if top == "/drives" {
			var d DriveConfig
			json.Unmarshal(rec.Body, &d)
			s.drives[d.DriveID] = d.PathOnHost
		}
		if top == "/network-interfaces" {
			var n NetworkInterface
			json.Unmarshal(rec.Body, &n)
			s.ifaces = append(s.ifaces, n.IfaceID)
		}
		if top == "/vsock" {
			var v VsockConfig
			json.Unmarshal(rec.Body, &v)
			s.vsockUDS = v.UDSPath
		}
		return ""
	case rec.Method == http.MethodPut && rec.Path == "/logger":
		return ""
	case rec.Method == http.MethodPut && rec.Path == "/metrics":
		if s.metrics {
			return "Reinitialization of metrics not allowed."
		}
		s.metrics = true
		return ""
	case rec.Method == http.MethodPut && rec.Path == "/actions":
		return s.action(rec)
	case rec.Method == http.MethodPatch && rec.Path == "/vm":
		var v struct{ State string }
		json.Unmarshal(rec.Body, &v)
		if s.state == "Not started" {
			return "The requested operation is not supported before starting the microVM."
		}
		s.state = map[string]string{"Paused": "Paused", "Resumed": "Running"}[v.State]
		return ""
	case rec.Method == http.MethodPut && rec.Path == "/snapshot/create":
		if s.state != "Paused" {
			return "Cannot create snapshot: the microVM is not paused."
		}
		var c SnapshotCreate
		json.Unmarshal(rec.Body, &c)
		return s.createSnapshot(c)
	case rec.Method == http.MethodPut && rec.Path == "/snapshot/load":
		if s.boot || s.state != "Not started" {
			return "Loading a microVM snapshot not allowed after configuring boot-specific resources."
		}
		var l SnapshotLoad
		json.Unmarshal(rec.Body, &l)
		if msg := s.loadSnapshot(l); msg != "" {
			// Firecracker ends itself after a failed load: its state is
			// unknown.
			if s.mode != modeLoadStays {
				go s.exit()
			}
			return "Load snapshot error: " + msg
		}
		return ""
	}
	return "Invalid request method and/or path: " + rec.Method + " " + rec.Path
}

// createSnapshot writes the vmstate and memory files and resets the
// vsock connections, as Firecracker does.
func (s *standin) createSnapshot(c SnapshotCreate) string {
	if s.mode == modeSnapFault {
		os.WriteFile(s.host(c.MemFilePath), []byte("partial"), 0o600)
		return "Cannot create snapshot: Memory snapshot error: No space left on device (os error 28)"
	}
	state, _ := json.Marshal(standinState{Drives: s.drives, Ifaces: s.ifaces, Vsock: s.vsockUDS})
	for p, b := range map[string][]byte{c.SnapshotPath: state, c.MemFilePath: []byte("standin memory\n")} {
		if err := os.WriteFile(s.host(p), b, 0o600); err != nil {
			return err.Error()
		}
	}
	s.resetVsock()
	return ""
}

// loadSnapshot checks what Firecracker needs to load l: the files, the
// drives at the paths the snapshot recorded (relative ones from its
// working directory) and a tap for every interface. It returns a fault
// message, or "" once the VM runs.
func (s *standin) loadSnapshot(l SnapshotLoad) string {
	b, err := os.ReadFile(s.host(l.SnapshotPath))
	if err != nil {
		return "Cannot open the snapshot file: " + err.Error()
	}
	var st standinState
	if err := json.Unmarshal(b, &st); err != nil {
		return "Cannot deserialize the microVM state: " + err.Error()
	}
	if l.MemBackend.BackendType != "File" {
		return "unsupported memory backend " + l.MemBackend.BackendType
	}
	if _, err := os.Stat(s.host(l.MemBackend.BackendPath)); err != nil {
		return "Cannot open the memory file: " + err.Error()
	}
	for id, p := range st.Drives {
		if _, err := os.Stat(s.host(p)); err != nil {
			return fmt.Sprintf("Failed to restore block device %s: %v", id, err)
		}
	}
	taps := map[string]bool{}
	for _, o := range l.NetworkOverrides {
		taps[o.IfaceID] = true
	}
	for _, id := range st.Ifaces {
		if !taps[id] {
			return "no network override for " + id + ": the tap of the snapshot would be reused"
		}
	}
	s.state = "Paused"
	if l.ResumeVM {
		s.state = "Running"
	}
	s.vsockUDS = st.Vsock
	if l.VsockOverride != nil {
		s.vsockUDS = l.VsockOverride.UDSPath
	}
	if s.vsockUDS != "" {
		go s.serveVsock(s.host(s.vsockUDS))
	}
	return ""
}

// host maps a path firecracker was given to the host.
func (s *standin) host(p string) string { return filepath.Join(s.root, p) }

func (s *standin) action(rec recorded) string {
	var a struct {
		ActionType string `json:"action_type"`
	}
	json.Unmarshal(rec.Body, &a)
	switch a.ActionType {
	case ActionInstanceStart:
		if s.state != "Not started" {
			return "The requested operation is not supported after starting the microVM."
		}
		if !s.kernel {
			return "Cannot start microvm without kernel configuration."
		}
		s.state = "Running"
		fmt.Println(standinBanner) // the serial console
		if s.vsockUDS != "" {
			go s.serveVsock(s.host(s.vsockUDS))
		}
	case ActionSendCtrlAltDel:
		if s.state != "Running" {
			return "The requested operation is not supported before starting the microVM."
		}
		if !s.stubborn {
			go s.exit()
		}
	default:
		return "unknown action"
	}
	return ""
}

// resetVsock closes every vsock connection, as Firecracker's transport
// reset at snapshot time does.
func (s *standin) resetVsock() {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	for c := range s.conns {
		c.Close()
		delete(s.conns, c)
	}
}

// serveVsock plays the guest agent behind Firecracker's hybrid vsock:
// CONNECT 1024 gets OK and an echo; other ports are closed, as
// Firecracker does when nothing listens in the guest.
func (s *standin) serveVsock(path string) {
	l, err := net.Listen("unix", path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "standin vsock:", err)
		return
	}
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		s.connMu.Lock()
		s.conns[c] = true
		s.connMu.Unlock()
		go func() {
			defer func() {
				s.connMu.Lock()
				delete(s.conns, c)
				s.connMu.Unlock()
				c.Close()
			}()
			br := bufio.NewReader(c)
			line, err := br.ReadString('\n')
			if err != nil || line != "CONNECT 1024\n" {
				return
			}
			fmt.Fprintf(c, "OK 1073741824\n")
			io.Copy(c, br)
		}()
	}
}

// TestMain re-executes this test binary as the firecracker stand-in when
// standinEnv is set.
func TestMain(m *testing.M) {
	if mode := os.Getenv(standinEnv); mode != "" {
		os.Exit(standinMain(mode, os.Args[1:]))
	}
	os.Exit(m.Run())
}

// standinMain is the firecracker stand-in's main.
func standinMain(mode string, args []string) int {
	flags := map[string]string{}
	for i, a := range args {
		switch {
		case a == "--version":
			fmt.Print("Firecracker v1.16.1\n\n")
			return 0
		case strings.HasPrefix(a, "--") && i+1 < len(args):
			flags[a] = args[i+1]
		}
	}
	// Played as the jailer, firecracker's paths are inside the chroot
	// <chroot-base-dir>/<exec-file name>/<id>/root.
	var root string
	if exe := flags["--exec-file"]; exe != "" {
		root = filepath.Join(flags["--chroot-base-dir"], filepath.Base(exe), flags["--id"], "root")
	}
	sock := ""
	if flags["--api-sock"] != "" {
		sock = filepath.Join(root, flags["--api-sock"])
	}
	if log := os.Getenv(standinLogEnv); log != "" {
		// Tests check from this list that no stand-in outlives a failure.
		if f, err := os.OpenFile(log+".pids", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); err == nil {
			fmt.Fprintln(f, os.Getpid())
			f.Close()
		}
	}
	time.AfterFunc(standinMaxAge, func() { os.Exit(3) })
	switch {
	case mode == modeExit:
		fmt.Fprintln(os.Stderr, "Error: RunWithApi(KvmError: simulated crash)")
		return 1
	case mode == modeNoSocket:
		select {}
	case sock == "":
		fmt.Fprintln(os.Stderr, "Error: --api-sock missing")
		return 1
	}
	l, err := net.Listen("unix", sock)
	if err != nil {
		fmt.Fprintln(os.Stderr, "Error: Failed to open the API socket:", err)
		return 1
	}
	s := newStandin(mode, os.Getenv(standinLogEnv))
	s.root = root
	s.exit = func() {
		time.Sleep(20 * time.Millisecond)
		os.Exit(0)
	}
	err = http.Serve(l, s)
	if err != nil && !errors.Is(err, net.ErrClosed) {
		fmt.Fprintln(os.Stderr, "Error:", err)
		return 1
	}
	return 0
}
