package serve

import (
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/hybridxfer/hybridxfer/hma"
	"github.com/hybridxfer/hybridxfer/statexfer/session"
)

// Inspector is implemented by backends that show their state under
// /debug (an Engine does): JSON snapshots taken under the engine's lock,
// for operators and `hybridxfer inspect`. Nothing in them is secret
// (grants and tokens are left out), but they name requests and peers, so
// with API keys they need a key like any other path but /health and
// /metrics.
type Inspector interface {
	DebugPools() PoolsView
	DebugLeases() LeasesView
	DebugPeers() PeersView
	// DebugRequests returns the live requests whose id is id, or whose
	// client id (the part after the engine's "p-N-" / "d-N-" prefix) is.
	DebugRequests(id string) []RequestView
}

// InstanceView names the instance a view comes from.
type InstanceView struct {
	Engine string `json:"engine"`
	Role   Role   `json:"role"`
	Model  string `json:"model"`
	TP     int    `json:"tp"`
	Time   string `json:"time"` // when the snapshot was taken, RFC 3339
}

// PoolsView is GET /debug/pools: the block pools and KV cache groups of
// rank 0's geometry (every rank allocates the same block ids) with the
// allocator's counts.
type PoolsView struct {
	InstanceView
	BlockLayout string      `json:"block_layout"`
	Memory      string      `json:"memory"`
	Pools       []PoolView  `json:"pools"`
	Groups      []GroupView `json:"groups"`
	Requests    int         `json:"requests"` // live, running and held
	Holds       int         `json:"holds"`
}

// PoolView is one block pool.
type PoolView struct {
	Pool        int `json:"pool"`
	NumBlocks   int `json:"num_blocks"` // usable blocks (the null block excluded)
	Free        int `json:"free"`
	Used        int `json:"used"`
	Cached      int `json:"cached"`
	Held        int `json:"held"`
	Regions     int `json:"regions"`      // registered regions per rank
	BlockStride int `json:"block_stride"` // bytes between block ids in a region
}

// GroupView is one KV cache group.
type GroupView struct {
	Group     int    `json:"group"`
	Kind      string `json:"kind"`
	Layers    int    `json:"layers"`
	Pool      int    `json:"pool"`
	BlockSize int    `json:"block_size"`
	PageBytes int    `json:"page_bytes"`
	Used      int    `json:"used"`
	Cached    int    `json:"cached"`
	Held      int    `json:"held"`
}

// LeasesView is GET /debug/leases: what a prefill instance holds for
// decode instances, soonest expiry first.
type LeasesView struct {
	InstanceView
	Leases []LeaseView `json:"leases"`
	// Released counts the holds ended since start, by cause.
	ReleasedNotified uint64 `json:"released_notified"`
	ReleasedExpired  uint64 `json:"released_expired"`
	ReleasedAborted  uint64 `json:"released_aborted"`
}

// LeaseView is one held request.
type LeaseView struct {
	Request     string  `json:"request"`
	Expiry      string  `json:"expiry"` // RFC 3339, this instance's clock
	RemainingMs float64 `json:"remaining_ms"`
	Consumers   int     `json:"consumers"` // notifications the release waits for
	Notified    int     `json:"notified"`
}

// PeersView is GET /debug/peers: the prefill incarnations a decode
// instance knows (a prefill instance lists none: D ranks reach it, it
// keeps no table of them), and the loads in flight.
type PeersView struct {
	InstanceView
	Peers []PeerView `json:"peers"`
	Loads []LoadView `json:"loads"`
}

// PeerView is one prefill incarnation as D knows it.
type PeerView struct {
	Peer          string  `json:"peer"` // engine id @ host:port
	BootID        string  `json:"boot_id"`
	State         string  `json:"state"` // handshaking, ready, failed
	Error         string  `json:"error,omitempty"`
	TP            int     `json:"tp"`
	ClockOffsetMs float64 `json:"clock_offset_ms"`
	BlockLayout   string  `json:"block_layout,omitempty"`
	Memory        string  `json:"memory,omitempty"`
}

// LoadView is one load in flight on D.
type LoadView struct {
	Request     string `json:"request"` // P's request id
	Transfer    uint64 `json:"transfer"`
	Peer        string `json:"peer"`
	State       string `json:"state"`
	Reason      string `json:"reason,omitempty"`
	LeaseExpiry string `json:"lease_expiry,omitempty"` // P's hold expiry on D's clock
}

// RequestView is GET /debug/requests/{id}.
type RequestView struct {
	Request  string     `json:"request"`
	State    string     `json:"state"` // running or held
	Tokens   int        `json:"tokens"`
	Computed int        `json:"computed"`
	Pending  int        `json:"pending"` // external tokens being loaded
	Blocks   [][]int    `json:"blocks"`  // per group: the block table (0 = null)
	Scratch  [][]int    `json:"scratch,omitempty"`
	Lease    *LeaseView `json:"lease,omitempty"`
}

func (e *Engine) instanceView() InstanceView {
	return InstanceView{Engine: e.cfg.EngineID, Role: e.cfg.Role, Model: e.cfg.Model.Name, TP: len(e.mems),
		Time: e.cfg.Now().UTC().Format(time.RFC3339Nano)}
}

// DebugPools implements Inspector.
func (e *Engine) DebugPools() PoolsView {
	g := e.side.Ranks[0]
	v := PoolsView{InstanceView: e.instanceView(), BlockLayout: string(g.Config.BlockLayout), Memory: string(g.Config.Memory)}
	e.mu.Lock()
	st := e.alloc.Stats()
	e.mu.Unlock()
	for p, ps := range st.Pools {
		pg := &g.Pools[p]
		v.Pools = append(v.Pools, PoolView{Pool: p, NumBlocks: ps.NumBlocks, Free: ps.Free, Used: ps.Used, Cached: ps.Cached, Held: ps.Held,
			Regions: pg.Regions(), BlockStride: pg.BlockStride()})
	}
	for i, gs := range st.Groups {
		gg := &g.Groups[i]
		v.Groups = append(v.Groups, GroupView{Group: i, Kind: gg.Kind.String(), Layers: len(gg.Layers), Pool: gg.Pool,
			BlockSize: gg.BlockSize, PageBytes: gg.PageBytes, Used: gs.Used, Cached: gs.Cached, Held: gs.Held})
	}
	v.Requests, v.Holds = st.Requests, st.Holds
	return v
}

func (e *Engine) leaseView(id hma.ReqID, h hma.HoldInfo, now time.Time) LeaseView {
	exp := time.Unix(0, int64(h.Expiry))
	return LeaseView{Request: string(id), Expiry: exp.UTC().Format(time.RFC3339Nano),
		RemainingMs: float64(exp.Sub(now).Microseconds()) / 1e3, Consumers: h.Consumers, Notified: h.Notified}
}

// DebugLeases implements Inspector.
func (e *Engine) DebugLeases() LeasesView {
	v := LeasesView{InstanceView: e.instanceView(), Leases: []LeaseView{}}
	now := e.cfg.Now()
	e.mu.Lock()
	for _, id := range e.alloc.Requests() {
		if h, ok := e.alloc.Holding(id); ok {
			v.Leases = append(v.Leases, e.leaseView(id, h, now))
		}
	}
	ls := e.alloc.Stats().Leases
	e.mu.Unlock()
	v.ReleasedNotified, v.ReleasedExpired, v.ReleasedAborted = ls.ReleasedNotified, ls.ReleasedExpired, ls.ReleasedAborted
	slices.SortStableFunc(v.Leases, func(a, b LeaseView) int { return strings.Compare(a.Expiry, b.Expiry) })
	return v
}

// DebugPeers implements Inspector.
func (e *Engine) DebugPeers() PeersView {
	v := PeersView{InstanceView: e.instanceView(), Peers: []PeerView{}, Loads: []LoadView{}}
	if e.dec == nil {
		return v
	}
	for _, p := range e.dec.Peers() {
		v.Peers = append(v.Peers, PeerView{Peer: p.Key, BootID: p.BootID, State: p.State, Error: p.Error, TP: p.TP,
			ClockOffsetMs: float64(p.ClockOffset.Microseconds()) / 1e3, BlockLayout: p.BlockLayout, Memory: p.Memory})
	}
	for _, l := range e.dec.Loads() {
		v.Loads = append(v.Loads, loadView(l))
	}
	return v
}

func loadView(l session.LoadInfo) LoadView {
	lv := LoadView{Request: l.Request, Transfer: l.Transfer, Peer: l.Peer, State: l.State, Reason: l.Reason}
	if !l.LeaseExpiry.IsZero() {
		lv.LeaseExpiry = l.LeaseExpiry.UTC().Format(time.RFC3339Nano)
	}
	return lv
}

// DebugRequests implements Inspector.
func (e *Engine) DebugRequests(id string) []RequestView {
	out := []RequestView{}
	now := e.cfg.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, rid := range e.alloc.Requests() {
		if string(rid) != id && !strings.HasSuffix(string(rid), "-"+id) {
			continue
		}
		info, err := e.alloc.Request(rid)
		if err != nil {
			continue
		}
		v := RequestView{Request: string(rid), State: "running", Tokens: info.NumTokens, Computed: info.Computed, Pending: info.Pending}
		if info.Held {
			v.State = "held"
		}
		for g := range e.side.Ranks[0].Groups {
			bt, _ := e.alloc.BlockTable(rid, g)
			v.Blocks = append(v.Blocks, bt)
			if sc, _ := e.alloc.ScratchBlocks(rid, g); len(sc) > 0 {
				if v.Scratch == nil {
					v.Scratch = make([][]int, len(e.side.Ranks[0].Groups))
				}
				v.Scratch[g] = sc
			}
		}
		if h, ok := e.alloc.Holding(rid); ok {
			lv := e.leaseView(rid, h, now)
			v.Lease = &lv
		}
		out = append(out, v)
	}
	return out
}

// debugRoutes serves the Inspector's views.
func (h *apiHandler) debugRoutes(mux *http.ServeMux, in Inspector) {
	get := func(path string, f func(r *http.Request) (any, bool)) {
		routeMethod(mux, http.MethodGet, path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			v, ok := f(r)
			if !ok {
				writeError(w, &apiError{Status: http.StatusNotFound, Message: "no live request " + r.PathValue("id") + " on this instance",
					Type: "invalid_request_error", Code: "request_not_found"})
				return
			}
			writeJSON(w, http.StatusOK, v)
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
