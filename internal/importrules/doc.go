// Package importrules holds the test that enforces the import rules of
// DESIGN section 10: cgo only in the UCX package and the CUDA loader, ZeroMQ
// only in the side-channel package, and no Prometheus, wall clock or global
// math/rand in the pure core (groups, hma, specdec, the planner, proptest).
package importrules
