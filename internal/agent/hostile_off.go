//go:build !bangercrash

package agent

import (
	"net"

	"banger/internal/guest"
)

// hostile is the test-only misbehaving agent of bangercrash builds
// (hostile_on.go); here it never misbehaves.
func (s *Server) hostile(net.Conn, *guest.Request) bool { return false }
