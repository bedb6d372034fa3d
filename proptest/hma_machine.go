package proptest

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"

	"pgregory.net/rapid"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/hma"
)

// HMAMachine is a rapid state machine that drives an hma.Allocator and the
// reference HMAModel with the same random operations (add request, prefix
// lookup, allocate, commit computed tokens, append tokens, load done or
// failed, finish, abort, hold, heartbeat, notify, sweep, eviction, cache
// reset) and, after every step, checks the allocator's invariants, compares
// the two completely (tables, free queue order, every block's ref count,
// owner and hash, counters, transfer views) and checks the transfer-view
// properties.
//
// Use CheckAllocator, or NewHMAMachine and (*rapid.T).Repeat(m.Actions()).
type HMAMachine struct {
	A     *hma.Allocator
	M     *HMAModel
	Cfg   hma.Config
	Now   hma.Time
	Steps int // actions executed
	// Events counts notable outcomes (successful prefix allocations, load
	// failures, releases, ...) so runs can show what they reached.
	Events map[string]int

	next  int
	ended []hma.ReqID
}

// NewHMAMachine returns a machine over a fresh allocator for cfg.
func NewHMAMachine(cfg hma.Config) (*HMAMachine, error) {
	a, err := hma.New(cfg)
	if err != nil {
		return nil, err
	}
	return &HMAMachine{A: a, M: NewHMAModel(a.Config()), Cfg: a.Config(), Events: map[string]int{}}, nil
}

// CheckAllocator runs the state machine over cfg for rapid's number of steps
// (-rapid.steps). It returns the number of actions executed.
func CheckAllocator(t *rapid.T, cfg hma.Config) int {
	m, err := NewHMAMachine(cfg)
	if err != nil {
		t.Fatalf("config %+v: %v", cfg, err)
	}
	t.Repeat(m.Actions())
	return m.Steps
}

// Actions returns the action map for (*rapid.T).Repeat; "" is Check.
func (m *HMAMachine) Actions() map[string]func(*rapid.T) {
	actions := map[string]func(*rapid.T){"": m.Check}
	// Weights: the productive operations come more often.
	for name, w := range map[string]struct {
		f func(*rapid.T)
		n int
	}{
		"add": {m.add, 3}, "lookup": {m.lookup, 1}, "allocate": {m.allocate, 4},
		"commit": {m.commit, 4}, "append": {m.appendTokens, 1}, "loadDone": {m.loadDone, 2},
		"loadFailed": {m.loadFailed, 1}, "finish": {m.finish, 1}, "abort": {m.abort, 1},
		"hold": {m.hold, 2}, "heartbeat": {m.heartbeat, 1}, "notify": {m.notify, 2},
		"sweep": {m.sweep, 1}, "evict": {m.evict, 1}, "resetCache": {m.resetCache, 1},
		"transfer": {m.transfer, 1},
	} {
		for i := 0; i < w.n; i++ {
			actions[name+strconv.Itoa(i)] = w.f
		}
	}
	return actions
}

// rare draws a choice that is true about once in n draws. rapid favours
// small and extreme values, so the rare value sits mid-range.
func rare(t *rapid.T, n int, label string) bool {
	return rapid.IntRange(0, n-1).Draw(t, label) == n/2
}

func errClass(err error) error {
	if err == nil {
		return nil
	}
	for _, s := range []error{hma.ErrInvalidArgument, hma.ErrNoSpace, hma.ErrUnknownRequest,
		hma.ErrDuplicateRequest, hma.ErrBadState, hma.ErrStalePrefix, hma.ErrForeignBlock, hma.ErrInUse} {
		if errors.Is(err, s) {
			return s
		}
	}
	return err
}

func sameErr(t *rapid.T, op string, got, want error) {
	t.Helper()
	if errClass(got) != want {
		t.Fatalf("%s: allocator error %v, reference %v", op, got, want)
	}
}

// live returns the reference model's request ids, sorted.
func (m *HMAMachine) live() []hma.ReqID {
	ids := make([]hma.ReqID, 0, len(m.M.Reqs))
	for id := range m.M.Reqs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// anyID draws a live request matching keep (most of the time), an ended id
// or a never-seen one. With no matching request it skips the step before
// drawing anything, so rapid picks another action.
func (m *HMAMachine) anyID(t *rapid.T, keep func(*ModelReq) bool) hma.ReqID {
	var ids []hma.ReqID
	for _, id := range m.live() {
		if keep == nil || keep(m.M.Reqs[id]) {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		t.Skip("no matching request")
	}
	switch rapid.IntRange(0, 29).Draw(t, "idKind") {
	case 14:
		return "never-seen"
	case 15:
		if len(m.ended) > 0 {
			return rapid.SampledFrom(m.ended).Draw(t, "endedID")
		}
	case 16:
		if all := m.live(); len(all) > 0 {
			return rapid.SampledFrom(all).Draw(t, "anyLive")
		}
	}
	return rapid.SampledFrom(ids).Draw(t, "req")
}

func (m *HMAMachine) step() { m.Steps++ }

func (m *HMAMachine) event(name string, err error) {
	if err == nil {
		m.Events[name]++
	} else {
		m.Events[name+"-err:"+errClass(err).Error()]++
	}
}

// base prompts shared by requests so that prefixes repeat.
func basePrompt(i int) []uint32 {
	out := make([]uint32, 64)
	x := uint32(2654435761 * uint32(i+1))
	for j := range out {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		out[j] = x % 7
	}
	return out
}

func (m *HMAMachine) add(t *rapid.T) {
	b := rapid.IntRange(0, 1).Draw(t, "base")
	k := rapid.SampledFrom([]int{32, 16, 40, 24, 8, 0, 12}).Draw(t, "shared")
	tokens := slices.Clone(basePrompt(b)[:k])
	tokens = append(tokens, rapid.SliceOfN(rapid.Uint32Range(0, 3), 0, 8).Draw(t, "suffix")...)
	extra := uint64(rapid.IntRange(0, 4).Draw(t, "extra") / 4)
	id := hma.ReqID("r" + strconv.Itoa(m.next))
	if ids := m.live(); len(ids) > 0 && rare(t, 20, "dupID") {
		id = rapid.SampledFrom(ids).Draw(t, "dup")
	} else {
		m.next++
	}
	m.step()
	sameErr(t, "AddRequest", m.A.AddRequest(id, tokens, extra), m.M.AddRequest(id, tokens, extra))
}

func (m *HMAMachine) lookup(t *rapid.T) {
	id := m.anyID(t, nil)
	m.step()
	hit, err := m.A.LookupPrefix(id)
	L, werr := m.M.LookupPrefix(id)
	sameErr(t, "LookupPrefix", err, werr)
	if err != nil {
		return
	}
	if hit.Tokens > 0 {
		m.event("lookup-hit", nil)
	}
	m.checkHit(t, id, hit, L)
}

func (m *HMAMachine) checkHit(t *rapid.T, id hma.ReqID, hit hma.PrefixHit, want int) {
	t.Helper()
	r := m.M.Reqs[id]
	if hit.Tokens != want {
		t.Fatalf("LookupPrefix(%s): %d tokens, reference %d", id, hit.Tokens, want)
	}
	if al := m.M.Alignment(); hit.Tokens%al != 0 || hit.Tokens > len(r.Tokens)-1 || hit.Tokens < 0 {
		t.Fatalf("hit %d: not a multiple of %d or beyond %d tokens - 1", hit.Tokens, al, len(r.Tokens))
	}
	wantBlocks := m.M.PrefixBlocks(id, hit.Tokens)
	for g := range m.Cfg.Groups {
		if len(hit.Blocks[g]) != len(wantBlocks[g]) || !slices.Equal(hit.Blocks[g], wantBlocks[g]) {
			t.Fatalf("hit blocks group %d: %v, reference %v", g, hit.Blocks[g], wantBlocks[g])
		}
	}
}

func (m *HMAMachine) allocate(t *rapid.T) {
	id := m.anyID(t, func(r *ModelReq) bool { return !r.Held && r.Pending == 0 })
	r := m.M.Reqs[id]
	var s hma.AllocSpec
	n := 1
	if r != nil {
		n = len(r.Tokens)
	}
	if r != nil && !r.Allocated {
		L, _ := m.M.LookupPrefix(id)
		switch rapid.IntRange(0, 9).Draw(t, "prefixKind") {
		case 4:
			s.Prefix = 0
		case 5:
			s.Prefix = rapid.IntRange(0, n).Draw(t, "wildPrefix")
		default:
			s.Prefix = L
		}
		rest := max(0, n-s.Prefix)
		if rapid.Bool().Draw(t, "external") && rest > 0 {
			s.External = rapid.IntRange(1, rest).Draw(t, "ext")
		} else if rapid.Bool().Draw(t, "wholePrompt") {
			s.New = rest
		} else {
			s.New = rapid.IntRange(0, rest+1).Draw(t, "new")
		}
	} else {
		c := 0
		if r != nil {
			c = r.Computed
		}
		s.New = rapid.IntRange(0, max(1, n-c)+1).Draw(t, "new")
		if rare(t, 10, "stray") {
			s.External = 1
		}
	}
	s.Lookahead = rapid.IntRange(0, 3).Draw(t, "lookahead")
	first := r != nil && !r.Allocated
	m.step()
	err := m.A.Allocate(id, s)
	sameErr(t, fmt.Sprintf("Allocate(%s, %+v)", id, s), err, m.M.Allocate(id, s))
	m.event("allocate", err)
	if s.Prefix > 0 {
		m.event("allocate-prefix", err)
	}
	if s.External > 0 {
		m.event("allocate-external", err)
	}
	if err == nil && first && s.External > 0 {
		// D's first allocation for a transferred request reserves exactly
		// the positions of the transferred tokens: no lookahead blocks.
		total := s.Prefix + s.External
		for g, gs := range m.Cfg.Groups {
			bt, _ := m.A.BlockTable(id, g)
			want := 1 // recurrent, mode none: one state block
			if gs.Kind != groups.Recurrent || m.Cfg.RecurrentMode != hma.RecurrentNone {
				want = (total + gs.BlockSize - 1) / gs.BlockSize
			}
			if len(bt) != want {
				t.Fatalf("first external allocation: group %d table %v, want %d positions", g, bt, want)
			}
		}
	}
}

func (m *HMAMachine) commit(t *rapid.T) {
	id := m.anyID(t, func(r *ModelReq) bool { return !r.Held && r.Pending == 0 && r.Scheduled > r.Computed })
	n := 1
	if r := m.M.Reqs[id]; r != nil {
		out := r.Scheduled - r.Computed
		n = out
		if rare(t, 3, "partial") {
			n = rapid.IntRange(0, out+1).Draw(t, "n")
		}
	}
	m.step()
	err := m.A.Commit(id, n)
	sameErr(t, fmt.Sprintf("Commit(%s, %d)", id, n), err, m.M.Commit(id, n))
	m.event("commit", err)
}

func (m *HMAMachine) appendTokens(t *rapid.T) {
	id := m.anyID(t, func(r *ModelReq) bool { return !r.Held })
	toks := rapid.SliceOfN(rapid.Uint32Range(0, 6), 1, 3).Draw(t, "toks")
	m.step()
	sameErr(t, "AppendTokens", m.A.AppendTokens(id, toks...), m.M.AppendTokens(id, toks...))
}

func (m *HMAMachine) loadDone(t *rapid.T) {
	id := m.anyID(t, func(r *ModelReq) bool { return r.Pending > 0 })
	m.step()
	err := m.A.LoadDone(id)
	sameErr(t, "LoadDone", err, m.M.LoadDone(id))
	m.event("loadDone", err)
	m.track(id)
}

func (m *HMAMachine) loadFailed(t *rapid.T) {
	id := m.anyID(t, func(r *ModelReq) bool { return r.Pending > 0 })
	var refs []hma.BlockRef
	if r := m.M.Reqs[id]; r != nil {
		for g := range r.Tables {
			for _, b := range r.Tables[g] {
				if b != 0 && rare(t, 3, "fail") {
					refs = append(refs, hma.BlockRef{Group: g, Block: b})
				}
			}
			for _, b := range r.Scratch[g] {
				if rare(t, 10, "failScratch") {
					refs = append(refs, hma.BlockRef{Group: g, Block: b})
				}
			}
		}
	}
	if rare(t, 10, "foreign") {
		refs = append(refs, hma.BlockRef{Group: 0, Block: rapid.IntRange(0, 3).Draw(t, "foreignID")})
	}
	policy := hma.FailurePolicy(rapid.IntRange(0, 1).Draw(t, "policy"))
	m.step()
	got, err := m.A.LoadFailed(id, refs, policy)
	want, werr := m.M.LoadFailed(id, refs, policy)
	sameErr(t, "LoadFailed", err, werr)
	m.event("loadFailed", err)
	if err == nil && got.Restart > 0 {
		m.event("loadFailed-restart>0", nil)
	}
	if err == nil && !reflect.DeepEqual(got, want) {
		t.Fatalf("LoadFailed(%s, %v, %v) = %+v, reference %+v", id, refs, policy, got, want)
	}
	m.track(id)
}

func (m *HMAMachine) finish(t *rapid.T) {
	id := m.anyID(t, func(r *ModelReq) bool { return !r.Held })
	m.step()
	sameErr(t, "Free", m.A.Free(id), m.M.Free(id))
	m.track(id)
}

func (m *HMAMachine) abort(t *rapid.T) {
	id := m.anyID(t, nil)
	m.step()
	if got, want := m.A.Abort(id), m.M.Abort(id); got != want {
		t.Fatalf("Abort(%s) = %v, reference %v", id, got, want)
	}
	m.track(id)
}

func (m *HMAMachine) hold(t *rapid.T) {
	id := m.anyID(t, func(r *ModelReq) bool { return !r.Held })
	exp := m.Now + hma.Time(rapid.IntRange(-2, 20).Draw(t, "ttl"))
	consumers := rapid.IntRange(0, 3).Draw(t, "consumers")
	m.step()
	err := m.A.Hold(id, exp, consumers)
	sameErr(t, "Hold", err, m.M.Hold(id, exp, consumers))
	m.event("hold", err)
}

func (m *HMAMachine) heartbeat(t *rapid.T) {
	id := m.anyID(t, func(r *ModelReq) bool { return r.Held })
	exp := m.Now + hma.Time(rapid.IntRange(-5, 20).Draw(t, "ext"))
	var before hma.HoldInfo
	before, wasHeld := m.A.Holding(id)
	m.step()
	if got, want := m.A.Extend(id, exp), m.M.Extend(id, exp); got != want {
		t.Fatalf("Extend(%s) = %v, reference %v", id, got, want)
	}
	if after, ok := m.A.Holding(id); wasHeld && (!ok || after.Expiry < before.Expiry || after.Expiry < exp) {
		t.Fatalf("Extend(%s, %d): expiry %d -> %d", id, exp, before.Expiry, after.Expiry)
	}
}

func (m *HMAMachine) notify(t *rapid.T) {
	id := m.anyID(t, func(r *ModelReq) bool { return r.Held })
	m.step()
	got, want := m.A.Notify(id), m.M.Notify(id)
	if got != want {
		t.Fatalf("Notify(%s) = %v, reference %v", id, got, want)
	}
	if got {
		m.event("notify-released", nil)
	}
	m.track(id)
}

func (m *HMAMachine) sweep(t *rapid.T) {
	m.Now += hma.Time(rapid.IntRange(0, 10).Draw(t, "tick"))
	m.step()
	got, want := m.A.Sweep(m.Now), m.M.Sweep(m.Now)
	m.Events["sweep-released"] += len(got)
	if !slices.Equal(got, want) {
		t.Fatalf("Sweep(%d) = %v, reference %v", m.Now, got, want)
	}
	for _, id := range got {
		m.track(id)
	}
}

func (m *HMAMachine) evict(t *rapid.T) {
	// Mostly cached blocks of their own group, sometimes anything.
	var cached []hma.BlockRef
	for g, gs := range m.Cfg.Groups {
		p := m.M.Pools[gs.Pool]
		for id := range p.Hashed {
			if p.Hashed[id] && p.Owner[id] == g {
				cached = append(cached, hma.BlockRef{Group: g, Block: id})
			}
		}
	}
	var refs []hma.BlockRef
	for i := rapid.IntRange(1, 4).Draw(t, "nEvict"); i > 0; i-- {
		if len(cached) > 0 && !rare(t, 4, "wildEvict") {
			refs = append(refs, rapid.SampledFrom(cached).Draw(t, "cachedRef"))
			continue
		}
		g := rapid.IntRange(-1, len(m.Cfg.Groups)).Draw(t, "group")
		p := 0
		if g >= 0 && g < len(m.Cfg.Groups) {
			p = m.Cfg.Groups[g].Pool
		}
		refs = append(refs, hma.BlockRef{Group: g, Block: rapid.IntRange(-1, m.Cfg.Pools[p].NumBlocks).Draw(t, "block")})
	}
	m.step()
	got, want := m.A.Evict(refs), m.M.Evict(refs)
	if got != want {
		t.Fatalf("Evict(%v) = %d, reference %d", refs, got, want)
	}
	m.Events["evicted"] += got
}

func (m *HMAMachine) resetCache(t *rapid.T) {
	m.step()
	sameErr(t, "ResetPrefixCache", m.A.ResetPrefixCache(), m.M.ResetPrefixCache())
}

// transfer checks the transfer view of a live request (also done for every
// request in Check; this action makes it a step on its own).
func (m *HMAMachine) transfer(t *rapid.T) {
	id := m.anyID(t, nil)
	m.step()
	got, err := m.A.TransferBlocks(id)
	_, werr := m.M.TransferBlocks(id)
	sameErr(t, "TransferBlocks", err, werr)
	if err == nil {
		m.checkTransfer(t, id, got)
	}
}

func (m *HMAMachine) track(id hma.ReqID) {
	if m.M.Reqs[id] == nil && id != "never-seen" && !slices.Contains(m.ended, id) {
		m.ended = append(m.ended, id)
	}
}

// checkTransfer compares a transfer view with the reference and checks its
// properties: no null id, no scratch block, only blocks of the table, sliding
// window at most cdiv(W, bs)+1 blocks, recurrent exactly one state slot.
func (m *HMAMachine) checkTransfer(t *rapid.T, id hma.ReqID, got [][]int) {
	t.Helper()
	r := m.M.Reqs[id]
	want, _ := m.M.TransferBlocks(id)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("TransferBlocks(%s) = %v, reference %v", id, got, want)
	}
	for g, gs := range m.Cfg.Groups {
		for _, b := range got[g] {
			if b == 0 || slices.Contains(r.Scratch[g], b) || !slices.Contains(r.Tables[g], b) {
				t.Fatalf("TransferBlocks(%s) group %d: bad block %d in %v (table %v scratch %v)", id, g, b, got[g], r.Tables[g], r.Scratch[g])
			}
		}
		switch {
		case r.Computed == 0:
			if len(got[g]) != 0 {
				t.Fatalf("transfer of a request with no computed tokens: %v", got)
			}
		case gs.Kind == groups.Recurrent:
			if len(got[g]) != 1 {
				t.Fatalf("recurrent group %d transfers %v, want one state slot", g, got[g])
			}
		case gs.Kind == groups.SlidingWindow:
			if lim := (gs.Window+gs.BlockSize-1)/gs.BlockSize + 1; len(got[g]) > lim {
				t.Fatalf("sliding window group %d transfers %d blocks > %d", g, len(got[g]), lim)
			}
		}
	}
}

// Check runs after every action: allocator invariants, full comparison with
// the reference model, transfer-view properties, and "all requests ended
// implies every block free".
func (m *HMAMachine) Check(t *rapid.T) {
	if err := m.A.CheckInvariants(); err != nil {
		t.Fatal(err)
	}
	if cfg := m.A.Config(); cfg.Alignment() != m.M.Alignment() {
		t.Fatalf("alignment %d, reference %d", cfg.Alignment(), m.M.Alignment())
	}
	ids := m.live()
	if got := m.A.Requests(); !slices.Equal(got, ids) {
		t.Fatalf("live requests %v, reference %v", got, ids)
	}
	held := map[int]map[int]bool{}
	for _, id := range ids {
		r := m.M.Reqs[id]
		info, err := m.A.Request(id)
		if err != nil {
			t.Fatal(err)
		}
		want := hma.RequestInfo{NumTokens: len(r.Tokens), Computed: r.Computed, Pending: r.Pending,
			Scheduled: r.Scheduled, Allocated: r.Allocated, Held: r.Held}
		if info != want {
			t.Fatalf("request %s: %+v, reference %+v", id, info, want)
		}
		for g := range m.Cfg.Groups {
			bt, _ := m.A.BlockTable(id, g)
			sc, _ := m.A.ScratchBlocks(id, g)
			if !slices.Equal(bt, r.Tables[g]) || !slices.Equal(sc, r.Scratch[g]) {
				t.Fatalf("request %s group %d: table %v scratch %v, reference %v %v", id, g, bt, sc, r.Tables[g], r.Scratch[g])
			}
			if r.Held {
				p := m.Cfg.Groups[g].Pool
				if held[p] == nil {
					held[p] = map[int]bool{}
				}
				for _, b := range append(slices.Clone(r.Tables[g]), r.Scratch[g]...) {
					if b != 0 {
						held[p][b] = true
					}
				}
			}
		}
		hi, ok := m.A.Holding(id)
		if ok != r.Held || ok && (hi != hma.HoldInfo{Expiry: r.Expiry, Consumers: r.Consumers, Notified: r.Notified}) {
			t.Fatalf("hold of %s: %+v %v, reference %+v", id, hi, ok, r)
		}
		tb, err := m.A.TransferBlocks(id)
		_, werr := m.M.TransferBlocks(id)
		sameErr(t, "TransferBlocks", err, werr)
		if err == nil {
			m.checkTransfer(t, id, tb)
		}
	}
	st := m.A.Stats()
	if st.Leases != m.M.Leases || st.Requests != len(ids) {
		t.Fatalf("stats %+v, reference leases %+v requests %d", st, m.M.Leases, len(ids))
	}
	for pi, p := range m.M.Pools {
		if got := m.A.FreeOrder(pi); !slices.Equal(got, p.Free) {
			t.Fatalf("pool %d free queue %v, reference %v", pi, got, p.Free)
		}
		used, cached := 0, 0
		for id := 1; id < len(p.Ref); id++ {
			b := m.A.Block(pi, id)
			want := hma.BlockInfo{Ref: p.Ref[id], Group: p.Owner[id], Cached: p.Hashed[id], Hash: p.Hash[id], Free: p.Ref[id] == 0}
			if b != want {
				t.Fatalf("pool %d block %d: %+v, reference %+v", pi, id, b, want)
			}
			if p.Ref[id] > 0 {
				used++
			}
			if p.Hashed[id] {
				cached++
			}
		}
		ps := st.Pools[pi]
		want := hma.PoolStats{NumBlocks: len(p.Ref) - 1, Free: len(p.Free), Used: used, Cached: cached, Held: len(held[pi])}
		if ps != want {
			t.Fatalf("pool %d stats %+v, reference %+v", pi, ps, want)
		}
		if len(ids) == 0 && ps.Free != ps.NumBlocks {
			t.Fatalf("pool %d: no requests but %d of %d blocks free", pi, ps.Free, ps.NumBlocks)
		}
	}
}
