package session

import (
	"fmt"
	"sync/atomic"

	"github.com/hybridxfer/hybridxfer/statexfer"
	"github.com/hybridxfer/hybridxfer/statexfer/plan"
	"github.com/hybridxfer/hybridxfer/statexfer/transport"
)

// endpoint is what every hosted rank has on either side: its transport,
// its registered memory and its staging pool (nil without staging).
type endpoint struct {
	r     int
	tr    transport.Transport
	local *statexfer.Local
	pool  *Pool
}

// hosted is the ranks of one instance that this process hosts.
type hosted struct {
	order []int // ascending
	eps   map[int]*endpoint
	// users: the sessions on these ranks (2 for NewBidirectional); the
	// last one to close closes them.
	users atomic.Int32
}

func hostedRanks(ranks []int, tp int) ([]int, error) {
	if ranks == nil {
		ranks = make([]int, tp)
		for i := range ranks {
			ranks[i] = i
		}
	}
	seen := map[int]bool{}
	for _, r := range ranks {
		if r < 0 || r >= tp || seen[r] {
			return nil, fmt.Errorf("%w: rank %d of tp %d", ErrBadRequest, r, tp)
		}
		seen[r] = true
	}
	return ranks, nil
}

// openHosted opens the given ranks of side s (nil: all): attach is called
// with each rank's endpoint before its transport exists and returns the
// handlers the transport is built with.
func openHosted(role string, ranks []int, s *plan.Side, staging int64, mc statexfer.MemoryConfig, newTr TransportFactory, attach func(*endpoint) transport.Handlers) (*hosted, error) {
	ranks, err := hostedRanks(ranks, s.TP())
	if err != nil {
		return nil, err
	}
	h := &hosted{eps: map[int]*endpoint{}}
	h.users.Store(1)
	for _, r := range ranks {
		ep := &endpoint{r: r}
		tr, err := newTr(r, attach(ep))
		if err != nil {
			h.close()
			return nil, fmt.Errorf("%s rank %d transport: %w", role, r, err)
		}
		ep.tr = tr
		h.eps[r] = ep
		if ep.local, err = statexfer.NewLocal(tr, s.Ranks[r], s.NumBlocks, staging, mc); err != nil {
			h.close()
			return nil, fmt.Errorf("%s rank %d memory: %w", role, r, err)
		}
		if staging > 0 {
			ep.pool = NewPool(staging)
		}
		h.order = append(h.order, r)
	}
	return h, nil
}

// Local is hosted rank r's memory (nil when not hosted).
func (h *hosted) Local(r int) *statexfer.Local {
	if ep := h.eps[r]; ep != nil {
		return ep.local
	}
	return nil
}

// Transport is hosted rank r's transport (nil when not hosted).
func (h *hosted) Transport(r int) transport.Transport {
	if ep := h.eps[r]; ep != nil {
		return ep.tr
	}
	return nil
}

// StagingInUse is the staging bytes handed out on every hosted rank.
func (h *hosted) StagingInUse() int64 {
	var n int64
	for _, ep := range h.eps {
		if ep.pool != nil {
			n += ep.pool.InUse()
		}
	}
	return n
}

// release is a session's close: the last user closes the ranks.
func (h *hosted) release() error {
	if h.users.Add(-1) > 0 {
		return nil
	}
	return h.close()
}

// close closes every transport and frees every rank's memory.
func (h *hosted) close() error {
	var first error
	for _, ep := range h.eps {
		if err := ep.tr.Close(); err != nil && first == nil {
			first = err
		}
		if ep.local != nil {
			ep.local.Close()
		}
	}
	return first
}

// noDirect says why direct reads are impossible for a decode instance
// whose hosted ranks are h reading from remotes ("" when they are
// possible): a hosted rank stages through host memory (its cache is not
// registered), or a remote's cache cannot be read directly.
func noDirect(h *hosted, remotes []*statexfer.Remote) string {
	for _, r := range h.order {
		if l := h.eps[r].local; !l.Direct() {
			return fmt.Sprintf("decode rank %d stages through host memory (its %s cache is not registered)", r, l.Kind)
		}
	}
	why, rank := "", -1
	for _, rem := range remotes { // the lowest rank's reason: the same on every run
		if ok, w := rem.Direct(); !ok && (rank < 0 || rem.Meta.Rank < rank) {
			why, rank = w, rem.Meta.Rank
		}
	}
	return why
}

// stagingPools is each P rank's staging pool as its metadata publishes it
// (the staging region's length; 0 without one), for Auto mode.
func stagingPools(metas []statexfer.RankMeta) []int64 {
	out := make([]int64, len(metas))
	for i := range metas {
		if r := metas[i].Region(plan.Staging); r != nil {
			out[i] = int64(r.Len)
		}
	}
	return out
}
