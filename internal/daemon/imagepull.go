package daemon

import "net/http"

// imagePullRoutes registers image pull, export and import.
func (s *Server) imagePullRoutes(mux *http.ServeMux) {}
