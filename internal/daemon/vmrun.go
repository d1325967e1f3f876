package daemon

import "net/http"

// runRoutes registers the endpoints vm run, ssh and workspaces use.
func (m *vmManager) runRoutes(mux *http.ServeMux) {}
