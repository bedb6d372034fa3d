package openai

import (
	"net/http"

	"github.com/hybridxfer/hybridxfer/backend"
)

// debugRoutes serves the Inspector's views.
func (h *apiHandler) debugRoutes(mux *http.ServeMux, in backend.Inspector) {
	get := func(path string, f func(r *http.Request) (any, bool)) {
		RouteMethod(mux, http.MethodGet, path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			v, ok := f(r)
			if !ok {
				WriteError(w, &APIError{Status: http.StatusNotFound, Message: "no live request " + r.PathValue("id") + " on this instance",
					Type: "invalid_request_error", Code: "request_not_found"})
				return
			}
			WriteJSON(w, http.StatusOK, v)
		}))
	}
	get("/debug/pools", func(*http.Request) (any, bool) { return in.DebugPools(), true })
	get("/debug/leases", func(*http.Request) (any, bool) { return in.DebugLeases(), true })
	get("/debug/peers", func(*http.Request) (any, bool) { return in.DebugPeers(), true })
	get("/debug/requests/{id}", func(r *http.Request) (any, bool) {
		vs := in.DebugRequests(r.PathValue("id"))
		return vs, len(vs) > 0
	})
}
