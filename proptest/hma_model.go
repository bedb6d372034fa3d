package proptest

import (
	"slices"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/hma"
)

// HMAModel is a deliberately simple reference implementation of the rules of
// package hma: slices and maps, linear scans, hashes recomputed from the
// tokens on every use, all-or-nothing by trying an allocation on a deep copy.
// It is slow and obviously correct; the state machine compares it with
// hma.Allocator after every step.
type HMAModel struct {
	Cfg    hma.Config
	Pools  []*ModelPool
	Reqs   map[hma.ReqID]*ModelReq
	Leases hma.LeaseStats
}

// ModelPool is a pool of the reference model.
type ModelPool struct {
	Free   []int // free queue, next to be reused first
	Ref    []int
	Owner  []int // -1 for none
	Hash   []hma.BlockHash
	Hashed []bool
	Cache  map[modelKey]int
}

type modelKey struct {
	h hma.BlockHash
	g int
}

// ModelReq is a request of the reference model.
type ModelReq struct {
	Tokens    []uint32
	Extra     uint64
	Computed  int
	Pending   int
	Scheduled int
	Allocated bool
	Held      bool
	Expiry    hma.Time
	Consumers int
	Notified  int
	Tables    [][]int
	Scratch   [][]int
	Offered   []int // per group: positions below were offered to the prefix cache
}

// NewHMAModel returns a model with every block free, the free queue in id order.
func NewHMAModel(cfg hma.Config) *HMAModel {
	m := &HMAModel{Cfg: cfg, Reqs: map[hma.ReqID]*ModelReq{}}
	for _, ps := range cfg.Pools {
		p := &ModelPool{
			Ref:    make([]int, ps.NumBlocks),
			Owner:  make([]int, ps.NumBlocks),
			Hash:   make([]hma.BlockHash, ps.NumBlocks),
			Hashed: make([]bool, ps.NumBlocks),
			Cache:  map[modelKey]int{},
		}
		for id := range p.Owner {
			p.Owner[id] = -1
			if id > 0 {
				p.Free = append(p.Free, id)
			}
		}
		m.Pools = append(m.Pools, p)
	}
	return m
}

func (m *HMAModel) clone() *HMAModel {
	c := &HMAModel{Cfg: m.Cfg, Reqs: map[hma.ReqID]*ModelReq{}, Leases: m.Leases}
	for _, p := range m.Pools {
		q := &ModelPool{
			Free: slices.Clone(p.Free), Ref: slices.Clone(p.Ref), Owner: slices.Clone(p.Owner),
			Hash: slices.Clone(p.Hash), Hashed: slices.Clone(p.Hashed), Cache: map[modelKey]int{},
		}
		for k, v := range p.Cache {
			q.Cache[k] = v
		}
		c.Pools = append(c.Pools, q)
	}
	for id, r := range m.Reqs {
		s := *r
		s.Tokens = slices.Clone(r.Tokens)
		s.Offered = slices.Clone(r.Offered)
		s.Tables = make([][]int, len(r.Tables))
		s.Scratch = make([][]int, len(r.Scratch))
		for g := range r.Tables {
			s.Tables[g] = slices.Clone(r.Tables[g])
			s.Scratch[g] = slices.Clone(r.Scratch[g])
		}
		c.Reqs[id] = &s
	}
	return c
}

func (m *HMAModel) pool(g int) *ModelPool { return m.Pools[m.Cfg.Groups[g].Pool] }

func (m *HMAModel) recurrent(g int) bool { return m.Cfg.Groups[g].Kind == groups.Recurrent }

func (m *HMAModel) hasRecurrent() bool {
	for g := range m.Cfg.Groups {
		if m.recurrent(g) {
			return true
		}
	}
	return false
}

// hashes recomputes the hash chain of group g's full blocks.
func (m *HMAModel) hashes(r *ModelReq, g int) []hma.BlockHash {
	return hma.HashBlocks(r.Tokens, m.Cfg.Groups[g].BlockSize, r.Extra)
}

func (p *ModelPool) alloc(g int) (int, bool) {
	if len(p.Free) == 0 {
		return 0, false
	}
	id := p.Free[0]
	p.Free = p.Free[1:]
	if p.Hashed[id] {
		p.dropHash(id)
	}
	p.Ref[id] = 1
	p.Owner[id] = g
	return id, true
}

func (p *ModelPool) touch(id int) {
	if p.Ref[id] == 0 {
		i := slices.Index(p.Free, id)
		p.Free = slices.Delete(p.Free, i, i+1)
	}
	p.Ref[id]++
}

func (p *ModelPool) release(id int) {
	p.Ref[id]--
	if p.Ref[id] > 0 {
		return
	}
	if p.Hashed[id] {
		p.Free = append(p.Free, id)
		return
	}
	p.Owner[id] = -1
	p.Free = append([]int{id}, p.Free...)
}

func (p *ModelPool) dropHash(id int) {
	delete(p.Cache, modelKey{p.Hash[id], p.Owner[id]})
	p.Hash[id], p.Hashed[id] = 0, false
	if p.Ref[id] == 0 {
		p.Owner[id] = -1
	}
}

func (p *ModelPool) offer(id int, h hma.BlockHash, g int) {
	if p.Hashed[id] {
		return
	}
	if _, ok := p.Cache[modelKey{h, g}]; ok {
		return
	}
	p.Cache[modelKey{h, g}] = id
	p.Hash[id], p.Hashed[id] = h, true
}

// Alignment is the lcm of the block sizes taking part in prefix hits.
func (m *HMAModel) Alignment() int {
	l := 1
	for g, gs := range m.Cfg.Groups {
		if m.recurrent(g) && m.Cfg.RecurrentMode == hma.RecurrentNone {
			continue
		}
		a, b := l, gs.BlockSize
		for b != 0 {
			a, b = b, a%b
		}
		l = l / a * gs.BlockSize
	}
	return l
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }

// accepts: group g can start at L cached tokens.
func (m *HMAModel) accepts(r *ModelReq, g, L int) bool {
	if L == 0 {
		return true
	}
	gs := m.Cfg.Groups[g]
	if m.recurrent(g) && m.Cfg.RecurrentMode == hma.RecurrentNone {
		return false
	}
	if L%gs.BlockSize != 0 {
		return false
	}
	lo, hi := gs.SkippedTokens(L)/gs.BlockSize, L/gs.BlockSize
	if gs.Eagle {
		hi++
	}
	hs := m.hashes(r, g)
	if hi > len(hs) {
		return false
	}
	for i := lo; i < hi; i++ {
		if _, ok := m.pool(g).Cache[modelKey{hs[i], g}]; !ok {
			return false
		}
	}
	return true
}

// LookupPrefix returns the hit length: the longest multiple of the
// alignment, at most tokens-1, that every group accepts.
func (m *HMAModel) LookupPrefix(id hma.ReqID) (int, error) {
	r := m.Reqs[id]
	if r == nil {
		return 0, hma.ErrUnknownRequest
	}
	if !m.Cfg.EnableCaching {
		return 0, nil
	}
	al := m.Alignment()
	for L := (len(r.Tokens) - 1) / al * al; L > 0; L -= al {
		ok := true
		for g := range m.Cfg.Groups {
			ok = ok && m.accepts(r, g, L)
		}
		if ok {
			return L, nil
		}
	}
	return 0, nil
}

// PrefixBlocks returns the table rows a hit of L tokens places.
func (m *HMAModel) PrefixBlocks(id hma.ReqID, L int) [][]int {
	r := m.Reqs[id]
	out := make([][]int, len(m.Cfg.Groups))
	if L == 0 {
		return out
	}
	for g, gs := range m.Cfg.Groups {
		hs := m.hashes(r, g)
		row := make([]int, L/gs.BlockSize)
		for i := m.placeholders(g, L); i < len(row); i++ {
			row[i] = m.pool(g).Cache[modelKey{hs[i], g}]
		}
		out[g] = row
	}
	return out
}

func (m *HMAModel) placeholders(g, total int) int {
	gs := m.Cfg.Groups[g]
	if m.recurrent(g) && m.Cfg.RecurrentMode == hma.RecurrentNone {
		return 0
	}
	return gs.SkippedTokens(total) / gs.BlockSize
}

func (m *HMAModel) running(id hma.ReqID) (*ModelReq, error) {
	r := m.Reqs[id]
	if r == nil {
		return nil, hma.ErrUnknownRequest
	}
	if r.Held {
		return nil, hma.ErrBadState
	}
	return r, nil
}

// AddRequest mirrors hma.Allocator.AddRequest.
func (m *HMAModel) AddRequest(id hma.ReqID, tokens []uint32, extra uint64) error {
	if m.Reqs[id] != nil {
		return hma.ErrDuplicateRequest
	}
	if len(tokens) == 0 {
		return hma.ErrInvalidArgument
	}
	n := len(m.Cfg.Groups)
	m.Reqs[id] = &ModelReq{Tokens: slices.Clone(tokens), Extra: extra,
		Tables: make([][]int, n), Scratch: make([][]int, n), Offered: make([]int, n)}
	return nil
}

// AppendTokens mirrors hma.Allocator.AppendTokens.
func (m *HMAModel) AppendTokens(id hma.ReqID, toks ...uint32) error {
	r, err := m.running(id)
	if err != nil {
		return err
	}
	r.Tokens = append(r.Tokens, toks...)
	return nil
}

// Allocate mirrors hma.Allocator.Allocate: the same checks in the same
// order, then the allocation tried step by step on a copy.
func (m *HMAModel) Allocate(id hma.ReqID, s hma.AllocSpec) error {
	r, err := m.running(id)
	if err != nil {
		return err
	}
	first := !r.Allocated
	switch {
	case r.Pending > 0:
		return hma.ErrBadState
	case s.Prefix < 0 || s.External < 0 || s.New < 0 || s.Lookahead < 0:
		return hma.ErrInvalidArgument
	case !first && (s.Prefix > 0 || s.External > 0):
		return hma.ErrInvalidArgument
	case s.External > 0 && s.New > 0:
		return hma.ErrInvalidArgument
	case s.New == 0 && s.External == 0:
		return hma.ErrInvalidArgument
	case m.hasRecurrent() && r.Scheduled > r.Computed:
		return hma.ErrBadState
	}
	total := r.Computed + s.Prefix + s.External
	main := total + s.New
	if main > len(r.Tokens) {
		return hma.ErrInvalidArgument
	}
	look := s.Lookahead
	if first && s.External > 0 {
		look = 0
	}
	if L := s.Prefix; L > 0 {
		if !m.Cfg.EnableCaching || L%m.Alignment() != 0 || L > len(r.Tokens)-1 {
			return hma.ErrInvalidArgument
		}
		for g := range m.Cfg.Groups {
			if !m.accepts(r, g, L) {
				return hma.ErrStalePrefix
			}
		}
	}
	c := m.clone()
	if !c.allocate(c.Reqs[id], first, s.Prefix, total, main, look) {
		return hma.ErrNoSpace
	}
	*m = *c
	return nil
}

func (m *HMAModel) allocate(r *ModelReq, first bool, L, total, main, look int) bool {
	if first {
		for g, gs := range m.Cfg.Groups {
			ph := m.placeholders(g, total)
			nb := 0
			if L > 0 {
				nb = L / gs.BlockSize
			}
			hs := m.hashes(r, g)
			for i := 0; i < max(ph, nb); i++ {
				id := 0
				if i >= ph && i < nb {
					id = m.pool(g).Cache[modelKey{hs[i], g}]
					m.pool(g).touch(id)
				}
				r.Tables[g] = append(r.Tables[g], id)
			}
		}
	}
	for g, gs := range m.Cfg.Groups {
		p := m.pool(g)
		t := r.Tables[g]
		switch {
		case m.recurrent(g) && m.Cfg.RecurrentMode == hma.RecurrentNone:
			if first {
				id, ok := p.alloc(g)
				if !ok {
					return false
				}
				t = []int{id}
			}
		case m.recurrent(g) && m.Cfg.RecurrentMode == hma.RecurrentAlign:
			at := (main - 1) / gs.BlockSize
			if at >= len(t) {
				for len(t) <= at {
					t = append(t, 0)
				}
				id, ok := p.alloc(g)
				if !ok {
					return false
				}
				t[at] = id
			}
		default:
			slots := main + look
			if m.recurrent(g) {
				slots = main
			}
			for len(t) < ceilDiv(slots, gs.BlockSize) {
				id, ok := p.alloc(g)
				if !ok {
					return false
				}
				t = append(t, id)
			}
		}
		r.Tables[g] = t
		if first && m.recurrent(g) {
			for i := 0; i < m.Cfg.NumSpeculativeTokens; i++ {
				id, ok := p.alloc(g)
				if !ok {
					return false
				}
				r.Scratch[g] = append(r.Scratch[g], id)
			}
		}
	}
	r.Allocated = true
	r.Computed += L
	r.Pending = total - r.Computed
	r.Scheduled = main
	return true
}

// Commit mirrors hma.Allocator.Commit.
func (m *HMAModel) Commit(id hma.ReqID, n int) error {
	r, err := m.running(id)
	if err != nil {
		return err
	}
	if r.Pending > 0 {
		return hma.ErrBadState
	}
	out := r.Scheduled - r.Computed
	if n < 1 || n > out || (m.hasRecurrent() && n != out) {
		return hma.ErrInvalidArgument
	}
	r.Computed += n
	m.settle(r, nil)
	return nil
}

func (m *HMAModel) settle(r *ModelReq, bad map[[2]int]bool) {
	if m.Cfg.EnableCaching {
		for g, gs := range m.Cfg.Groups {
			if m.recurrent(g) && m.Cfg.RecurrentMode == hma.RecurrentNone {
				continue
			}
			bs := gs.BlockSize
			full := min(min(r.Computed, len(r.Tokens))/bs, len(r.Tables[g]))
			if full <= r.Offered[g] {
				continue
			}
			hs := m.hashes(r, g)
			for i := r.Offered[g]; i < full; i++ {
				if m.recurrent(g) && m.Cfg.RecurrentMode == hma.RecurrentAlign {
					// only the state a step ended on exactly
					if r.Computed%bs != 0 || i != r.Computed/bs-1 {
						continue
					}
				}
				id := r.Tables[g][i]
				if id == 0 || bad[[2]int{g, id}] {
					continue
				}
				m.pool(g).offer(id, hs[i], g)
			}
			r.Offered[g] = full
		}
	}
	for g, gs := range m.Cfg.Groups {
		if m.recurrent(g) && m.Cfg.RecurrentMode != hma.RecurrentAlign {
			continue
		}
		s := min(gs.SkippedTokens(r.Computed)/gs.BlockSize, len(r.Tables[g]))
		for i := s - 1; i >= 0; i-- {
			if id := r.Tables[g][i]; id != 0 {
				m.pool(g).release(id)
				r.Tables[g][i] = 0
			}
		}
	}
}

func (m *HMAModel) freeBlocks(r *ModelReq) {
	for g := range m.Cfg.Groups {
		p := m.pool(g)
		for i := len(r.Scratch[g]) - 1; i >= 0; i-- {
			p.release(r.Scratch[g][i])
		}
		for i := len(r.Tables[g]) - 1; i >= 0; i-- {
			if id := r.Tables[g][i]; id != 0 {
				p.release(id)
			}
		}
		r.Tables[g], r.Scratch[g], r.Offered[g] = nil, nil, 0
	}
}

// Free mirrors hma.Allocator.Free.
func (m *HMAModel) Free(id hma.ReqID) error {
	r, err := m.running(id)
	if err != nil {
		return err
	}
	m.freeBlocks(r)
	delete(m.Reqs, id)
	return nil
}

// LoadDone mirrors hma.Allocator.LoadDone.
func (m *HMAModel) LoadDone(id hma.ReqID) error {
	r, err := m.running(id)
	if err != nil {
		return err
	}
	if r.Pending == 0 {
		return hma.ErrBadState
	}
	r.Computed += r.Pending
	r.Pending = 0
	r.Scheduled = r.Computed
	// A window or chunk group's block that the load filled only from its
	// first live position on is never cached.
	bad := map[[2]int]bool{}
	for g, gs := range m.Cfg.Groups {
		if !gs.Kind.Windowed() {
			continue
		}
		if sk := gs.SkippedTokens(r.Computed); sk%gs.BlockSize != 0 {
			if i := sk / gs.BlockSize; i < len(r.Tables[g]) && r.Tables[g][i] != 0 {
				bad[[2]int{g, r.Tables[g][i]}] = true
			}
		}
	}
	m.settle(r, bad)
	return nil
}

// LoadFailed mirrors hma.Allocator.LoadFailed.
func (m *HMAModel) LoadFailed(id hma.ReqID, failed []hma.BlockRef, policy hma.FailurePolicy) (hma.LoadFailure, error) {
	r, err := m.running(id)
	if err != nil {
		return hma.LoadFailure{}, err
	}
	if r.Pending == 0 {
		return hma.LoadFailure{}, hma.ErrBadState
	}
	if policy != hma.PolicyFail && policy != hma.PolicyRecompute {
		return hma.LoadFailure{}, hma.ErrInvalidArgument
	}
	bad := map[[2]int]bool{}
	firstBad := make([]int, len(m.Cfg.Groups))
	total := r.Computed + r.Pending
	for g := range firstBad {
		firstBad[g] = total
	}
	for _, f := range failed {
		if f.Group < 0 || f.Group >= len(m.Cfg.Groups) || f.Block <= 0 {
			return hma.LoadFailure{}, hma.ErrForeignBlock
		}
		i := slices.Index(r.Tables[f.Group], f.Block)
		if i < 0 || m.pool(f.Group).Hashed[f.Block] {
			return hma.LoadFailure{}, hma.ErrForeignBlock
		}
		bad[[2]int{f.Group, f.Block}] = true
		t := i * m.Cfg.Groups[f.Group].BlockSize
		if m.recurrent(f.Group) {
			t = 0
		}
		firstBad[f.Group] = min(firstBad[f.Group], t)
	}
	res := hma.LoadFailure{FirstBad: firstBad}
	for p := total; p > 0; p-- {
		if m.restartCandidate(p, total) && m.validAt(r, p, total, bad) {
			res.Restart = p
			break
		}
	}
	for k := range bad {
		if m.pool(k[0]).Hashed[k[1]] {
			m.pool(k[0]).dropHash(k[1])
		}
	}
	if policy == hma.PolicyFail {
		res.Ended = true
		m.freeBlocks(r)
		delete(m.Reqs, id)
		return res, nil
	}
	r.Pending = 0
	if res.Restart == 0 {
		m.freeBlocks(r)
		r.Computed, r.Scheduled, r.Allocated = 0, 0, false
		return res, nil
	}
	r.Computed, r.Scheduled = res.Restart, res.Restart
	m.settle(r, bad)
	return res, nil
}

func (m *HMAModel) restartCandidate(p, total int) bool {
	if p == total {
		return true
	}
	for g, gs := range m.Cfg.Groups {
		if !m.recurrent(g) && p%gs.BlockSize == 0 {
			return true
		}
	}
	return false
}

func (m *HMAModel) validAt(r *ModelReq, p, total int, bad map[[2]int]bool) bool {
	for g, gs := range m.Cfg.Groups {
		t := r.Tables[g]
		ok := func(i int) bool { return i < len(t) && t[i] != 0 && !bad[[2]int{g, t[i]}] }
		if m.recurrent(g) {
			i := 0
			if m.Cfg.RecurrentMode != hma.RecurrentNone {
				i = (total - 1) / gs.BlockSize
			}
			if p != total || !ok(i) {
				return false
			}
			continue
		}
		for i := gs.SkippedTokens(p) / gs.BlockSize; i < ceilDiv(p, gs.BlockSize); i++ {
			if !ok(i) {
				return false
			}
		}
		// Every position the restart attends to was computed here before
		// the load or loaded: a load skips what is not live at total.
		for q := gs.SkippedTokens(p); q < p; q++ {
			if q >= r.Computed && q < gs.SkippedTokens(total) {
				return false
			}
		}
		// Positions [p, total) are recomputed into the request's own
		// blocks: none of them may be null.
		for i := p / gs.BlockSize; p < total && i < min(ceilDiv(total, gs.BlockSize), len(t)); i++ {
			if t[i] == 0 {
				return false
			}
		}
	}
	return true
}

// Hold mirrors hma.Allocator.Hold.
func (m *HMAModel) Hold(id hma.ReqID, expiry hma.Time, consumers int) error {
	r, err := m.running(id)
	if err != nil {
		return err
	}
	if r.Pending > 0 {
		return hma.ErrBadState
	}
	if consumers < 1 {
		return hma.ErrInvalidArgument
	}
	r.Held, r.Expiry, r.Consumers, r.Notified = true, expiry, consumers, 0
	return nil
}

func (m *HMAModel) held(id hma.ReqID) *ModelReq {
	if r := m.Reqs[id]; r != nil && r.Held {
		return r
	}
	return nil
}

func (m *HMAModel) end(id hma.ReqID) {
	m.freeBlocks(m.Reqs[id])
	delete(m.Reqs, id)
}

// Extend mirrors hma.Allocator.Extend.
func (m *HMAModel) Extend(id hma.ReqID, t hma.Time) bool {
	r := m.held(id)
	if r == nil {
		m.Leases.IgnoredExtend++
		return false
	}
	if t > r.Expiry {
		r.Expiry = t
	}
	return true
}

// Notify mirrors hma.Allocator.Notify.
func (m *HMAModel) Notify(id hma.ReqID) bool {
	r := m.held(id)
	if r == nil {
		m.Leases.IgnoredNotify++
		return false
	}
	r.Notified++
	if r.Notified < r.Consumers {
		return false
	}
	m.Leases.ReleasedNotified++
	m.end(id)
	return true
}

// Abort mirrors hma.Allocator.Abort.
func (m *HMAModel) Abort(id hma.ReqID) bool {
	r := m.Reqs[id]
	if r == nil {
		m.Leases.IgnoredAbort++
		return false
	}
	if r.Held {
		m.Leases.ReleasedAborted++
	}
	m.end(id)
	return true
}

// Sweep mirrors hma.Allocator.Sweep: every expired hold, sorted by id.
func (m *HMAModel) Sweep(now hma.Time) []hma.ReqID {
	var out []hma.ReqID
	for id, r := range m.Reqs {
		if r.Held && r.Expiry <= now {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	for _, id := range out {
		m.Leases.ReleasedExpired++
		m.end(id)
	}
	return out
}

// Evict mirrors hma.Allocator.Evict.
func (m *HMAModel) Evict(refs []hma.BlockRef) int {
	n := 0
	for _, f := range refs {
		if f.Group < 0 || f.Group >= len(m.Cfg.Groups) {
			continue
		}
		p := m.pool(f.Group)
		if f.Block <= 0 || f.Block >= len(p.Ref) {
			continue
		}
		if p.Hashed[f.Block] && p.Owner[f.Block] == f.Group {
			p.dropHash(f.Block)
			n++
		}
	}
	return n
}

// ResetPrefixCache mirrors hma.Allocator.ResetPrefixCache.
func (m *HMAModel) ResetPrefixCache() error {
	for _, p := range m.Pools {
		if len(p.Free) != len(p.Ref)-1 {
			return hma.ErrInUse
		}
	}
	for _, p := range m.Pools {
		for id := range p.Hashed {
			if p.Hashed[id] {
				p.dropHash(id)
			}
		}
	}
	return nil
}

// TransferBlocks mirrors hma.Allocator.TransferBlocks.
func (m *HMAModel) TransferBlocks(id hma.ReqID) ([][]int, error) {
	r := m.Reqs[id]
	if r == nil {
		return nil, hma.ErrUnknownRequest
	}
	if r.Pending > 0 {
		return nil, hma.ErrBadState
	}
	out := make([][]int, len(m.Cfg.Groups))
	for g, gs := range m.Cfg.Groups {
		out[g] = []int{}
		n := r.Computed
		if n == 0 {
			continue
		}
		if m.recurrent(g) {
			i := 0
			if m.Cfg.RecurrentMode != hma.RecurrentNone {
				i = (n - 1) / gs.BlockSize
			}
			out[g] = []int{r.Tables[g][i]}
			continue
		}
		for i, b := range r.Tables[g] {
			if b != 0 && i < ceilDiv(n, gs.BlockSize) {
				out[g] = append(out[g], b)
			}
		}
	}
	return out, nil
}
