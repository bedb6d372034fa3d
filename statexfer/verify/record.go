package verify

import (
	"strings"
	"sync"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/oracle/refmodel"
	"github.com/hybridxfer/hybridxfer/statexfer/grant"
)

// Recorder collects what engines report of each request, for checks
// against the monolithic run: the ranges of positions each instance
// computed (engine.Config.OnCompute) and a decode instance's final state
// (OnFinish). Instances name a request by an id of their own that ends in
// "-" and the client's id; Request looks a client id up across them. Safe
// for concurrent use.
type Recorder struct {
	mu       sync.Mutex
	computed map[string][][2]int
	finals   map[string]*refmodel.Snapshot
}

// NewRecorder returns an empty Recorder.
func NewRecorder() *Recorder {
	return &Recorder{computed: map[string][][2]int{}, finals: map[string]*refmodel.Snapshot{}}
}

// OnCompute is an engine.Config.OnCompute.
func (r *Recorder) OnCompute(id string, from, to int) {
	r.mu.Lock()
	r.computed[id] = append(r.computed[id], [2]int{from, to})
	r.mu.Unlock()
}

// OnFinish returns an engine.Config.OnFinish that snapshots the final
// state with m (the decode engine's model, which m returns once it exists).
func (r *Recorder) OnFinish(m func() *refmodel.Model) func(id string, st refmodel.Store, n int) {
	return func(id string, st refmodel.Store, n int) {
		snap, err := m().Snapshot(st, n)
		if err != nil {
			return
		}
		r.mu.Lock()
		r.finals[id] = snap
		r.mu.Unlock()
	}
}

// Outcome is what the instances reported of one client request.
type Outcome struct {
	// Final is the decode instance's final state (nil: none reported).
	Final *refmodel.Snapshot
	// Count[x] is how often position x < total was computed across the
	// instances, First the first position computed (total when none).
	Count []int
	First int
	// Ranges are the computed ranges by instance request id.
	Ranges map[string][][2]int
}

// Request returns the outcome of client request id, counting positions
// below total.
func (r *Recorder) Request(id string, total int) Outcome {
	r.mu.Lock()
	defer r.mu.Unlock()
	o := Outcome{Count: make([]int, total), First: total, Ranges: map[string][][2]int{}}
	for fid, s := range r.finals {
		if strings.HasSuffix(fid, "-"+id) {
			o.Final = s
		}
	}
	for rid, rs := range r.computed {
		if !strings.HasSuffix(rid, "-"+id) {
			continue
		}
		o.Ranges[rid] = append([][2]int(nil), rs...)
		for _, x := range rs {
			o.First = min(o.First, x[0])
			for p := x[0]; p < x[1] && p < total; p++ {
				o.Count[p]++
			}
		}
	}
	return o
}

// WholeExportsOnly reports whether a prefill instance serving spec reads
// back only whole conversation exports (engine.Config.Bidirectional): a
// model with recurrent groups (their state is the state after exactly
// the exported tokens) or sliding-window and chunked groups (their older
// blocks are gone).
func WholeExportsOnly(spec *groups.Model) bool {
	for _, l := range spec.Layers {
		if l.Kind == groups.Recurrent || l.Kind.Windowed() {
			return true
		}
	}
	return false
}

// ExportCovers is how many leading positions of prompt toks a prefill
// instance reads back from a conversation export of history (the tokens
// the export's state holds), by the engine's rule: all of history when
// toks continues it, else their common prefix in whole chain blocks, or
// nothing when the model reads only whole exports. (The engine reads at
// most the prompt's handoff positions, and nothing its own prefix cache
// holds.)
func ExportCovers(history, toks []uint32, whole bool) int {
	common := 0
	for common < len(history) && common < len(toks) && history[common] == toks[common] {
		common++
	}
	switch {
	case common == len(history):
		return common
	case whole:
		return 0
	}
	return common / grant.ChainBlock * grant.ChainBlock
}
