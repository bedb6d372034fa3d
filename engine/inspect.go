package engine

import (
	"slices"
	"strings"
	"time"

	"github.com/hybridxfer/hybridxfer/backend"

	"github.com/hybridxfer/hybridxfer/hma"
	"github.com/hybridxfer/hybridxfer/statexfer/session"
)

// The engine implements openai.Inspector: the /debug views.

func (e *Engine) instanceView() backend.InstanceView {
	return backend.InstanceView{Engine: e.cfg.EngineID, Role: e.cfg.Role, Model: e.cfg.Model.Name, TP: len(e.mems),
		Time: e.cfg.Now().UTC().Format(time.RFC3339Nano)}
}

// DebugPools implements openai.Inspector.
func (e *Engine) DebugPools() backend.PoolsView {
	g := e.side.Ranks[0]
	v := backend.PoolsView{InstanceView: e.instanceView(), BlockLayout: string(g.Config.BlockLayout), Memory: string(g.Config.Memory)}
	e.mu.Lock()
	st := e.alloc.Stats()
	e.mu.Unlock()
	for p, ps := range st.Pools {
		pg := &g.Pools[p]
		v.Pools = append(v.Pools, backend.PoolView{Pool: p, NumBlocks: ps.NumBlocks, Free: ps.Free, Used: ps.Used, Cached: ps.Cached, Held: ps.Held,
			Regions: pg.Regions(), BlockStride: pg.BlockStride()})
	}
	for i, gs := range st.Groups {
		gg := &g.Groups[i]
		v.Groups = append(v.Groups, backend.GroupView{Group: i, Kind: gg.Kind.String(), Layers: len(gg.Layers), Pool: gg.Pool,
			BlockSize: gg.BlockSize, PageBytes: gg.PageBytes, Used: gs.Used, Cached: gs.Cached, Held: gs.Held})
	}
	v.Requests, v.Holds = st.Requests, st.Holds
	return v
}

func (e *Engine) leaseView(id hma.ReqID, h hma.HoldInfo, now time.Time) backend.LeaseView {
	exp := time.Unix(0, int64(h.Expiry))
	return backend.LeaseView{Request: string(id), Expiry: exp.UTC().Format(time.RFC3339Nano),
		RemainingMs: float64(exp.Sub(now).Microseconds()) / 1e3, Consumers: h.Consumers, Notified: h.Notified}
}

// DebugLeases implements openai.Inspector.
func (e *Engine) DebugLeases() backend.LeasesView {
	v := backend.LeasesView{InstanceView: e.instanceView(), Leases: []backend.LeaseView{}}
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
	slices.SortStableFunc(v.Leases, func(a, b backend.LeaseView) int { return strings.Compare(a.Expiry, b.Expiry) })
	return v
}

// DebugPeers implements openai.Inspector.
func (e *Engine) DebugPeers() backend.PeersView {
	v := backend.PeersView{InstanceView: e.instanceView(), Peers: []backend.PeerView{}, Loads: []backend.LoadView{}}
	if e.dec == nil {
		return v
	}
	for _, p := range e.dec.Peers() {
		v.Peers = append(v.Peers, backend.PeerView{Peer: p.Key, BootID: p.BootID, State: p.State, Error: p.Error, TP: p.TP,
			ClockOffsetMs: float64(p.ClockOffset.Microseconds()) / 1e3, BlockLayout: p.BlockLayout, Memory: p.Memory})
	}
	for _, l := range e.dec.Loads() {
		v.Loads = append(v.Loads, loadView(l))
	}
	return v
}

func loadView(l session.LoadInfo) backend.LoadView {
	lv := backend.LoadView{Request: l.Request, Transfer: l.Transfer, Peer: l.Peer, State: l.State, Reason: l.Reason}
	if !l.LeaseExpiry.IsZero() {
		lv.LeaseExpiry = l.LeaseExpiry.UTC().Format(time.RFC3339Nano)
	}
	return lv
}

// DebugRequests implements openai.Inspector.
func (e *Engine) DebugRequests(id string) []backend.RequestView {
	out := []backend.RequestView{}
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
		v := backend.RequestView{Request: string(rid), State: "running", Tokens: info.NumTokens, Computed: info.Computed, Pending: info.Pending}
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
