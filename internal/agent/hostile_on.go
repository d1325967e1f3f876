//go:build bangercrash

package agent

import (
	"crypto/rand"
	"encoding/binary"
	"io"
	"net"
	"sync/atomic"

	"banger/internal/guest"
)

// In bangercrash builds (tests only, never a release) the agent can be
// told to misbehave, for the end-to-end tests of a hostile guest: an exec
// of `banger-hostile MODE` (which itself runs true) makes every later
// request but hello, and further banger-hostile execs, answer in MODE:
//
//	garbage    random bytes, then nothing
//	oversized  a frame header announcing 4 GiB, then nothing
//	half       half a response frame, then nothing
//	silent     nothing at all
//	flood      output frames without end (an exec's, after its start)
//	off        behave again
var hostileMode atomic.Pointer[string]

const hostileCmd = "banger-hostile"

// hostile misbehaves on conn for req when a mode is set, and reports
// whether it did (the request is then over).
func (s *Server) hostile(conn net.Conn, req *guest.Request) bool {
	if req.Op == guest.OpExec && req.Exec != nil && len(req.Exec.Argv) == 2 && req.Exec.Argv[0] == hostileCmd {
		mode := req.Exec.Argv[1]
		hostileMode.Store(&mode)
		s.logger.Warn("hostile mode", "mode", mode)
		req.Exec.Argv = []string{"true"}
		return false
	}
	p := hostileMode.Load()
	if p == nil || *p == "off" || req.Op == guest.OpHello {
		return false
	}
	hold := func() { io.Copy(io.Discard, conn) } // until the host gives up
	hdr := func(t guest.FrameType, n uint32) []byte {
		b := []byte{byte(t), 0, 0, 0, 0}
		binary.BigEndian.PutUint32(b[1:], n)
		return b
	}
	switch *p {
	case "garbage":
		b := make([]byte, 64<<10)
		rand.Read(b)
		conn.Write(b)
		hold()
	case "oversized":
		conn.Write(hdr(guest.FrameResponse, 0xffffffff))
		hold()
	case "half":
		conn.Write(append(hdr(guest.FrameResponse, 1000), `{"pid":`...))
		hold()
	case "flood":
		fw := guest.NewFrameWriter(conn)
		if req.Op == guest.OpExec {
			fw.WriteJSON(guest.FrameResponse, guest.Response{PID: 1})
		}
		go hold()
		chunk := make([]byte, guest.ChunkSize)
		rand.Read(chunk)
		for fw.WriteFrame(guest.FrameStdout, chunk) == nil {
		}
	default: // silent, or a mode it does not know
		hold()
	}
	return true
}
