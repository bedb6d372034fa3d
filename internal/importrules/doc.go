// Package importrules holds the test that enforces the import rules of
// DESIGN section 10: cgo only in the UCX package and the CUDA loader, ZeroMQ
// only in the side-channel package, and no Prometheus, wall clock or global
// math/rand in the pure core (groups, hma, specdec, the planner, proptest).
//
// It also checks the package graph: layers lists, for every package, the
// module packages its non-test files may import (kernels and the
// transport interface are leaves, the pure core imports only the core,
// nothing imports cmd, proptest imports libraries only, engine neither
// openai nor proxy). specdec owns the speculative rules and hma calls
// them, so hma imports specdec, not the reverse. noHTTP lists the
// libraries that must not import net/http (backend, engine, proptest and
// the pure core): the OpenAI API (openai) and the proxy are the servers.
package importrules
