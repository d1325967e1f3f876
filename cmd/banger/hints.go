package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"

	"banger/internal/api"
	"banger/internal/client"
)

// hint says what to do next about err, when we know. Hints live at the CLI
// edge; the daemon's errors carry facts.
func hint(err error) string {
	var vm *client.VersionMismatchError
	var se *client.StartError
	var ae *api.Error
	switch {
	case errors.As(err, &vm):
		return "restart the daemon with this build: banger daemon restart (running VMs keep running)"
	case errors.As(err, &se):
		return "" // the message already says what to run
	case errors.Is(err, context.Canceled):
		return ""
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ENOENT) && strings.Contains(err.Error(), "bangerd"):
		return "bangerd is not answering; start it with: banger daemon start"
	case errors.As(err, &ae):
		if ae.Hint != "" {
			return ae.Hint
		}
		return codeHint(ae)
	}
	return ""
}

func codeHint(e *api.Error) string {
	switch e.Code {
	case api.Unavailable:
		return "run banger doctor to see what the host is missing"
	case api.Internal:
		return fmt.Sprintf("this is a bug or an unexpected failure; the daemon log has details: %s", dirs().State+"/bangerd.log")
	}
	return ""
}
