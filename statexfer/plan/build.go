package plan

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/hybridxfer/hybridxfer/groups"
)

// Planner builds transfer plans between one P and one D. It is pure and
// deterministic, and safe for concurrent use once built.
type Planner struct {
	P, D *Side
	// Cost decides Auto mode.
	Cost CostModel
	// NoDirect, when set, says why D cannot read P's cache directly (one
	// side stages through host memory, or P's cache is memory D's
	// transport cannot read): Auto stages, Direct is refused.
	NoDirect string
	// PStaging is each P rank's staging pool in bytes (0: none), DScratch
	// D's scratch pool (0: none); nil PStaging means unknown. Auto stages
	// only plans whose gathers and scratch fit them (with StagingAlign
	// slack per range): a staged plan larger than a pool can never run.
	PStaging []int64
	DScratch int64
	// targets[d]: P ranks D rank d notifies; consumers[p]: notifications P rank p expects.
	targets   [][]int
	consumers []int
}

// New checks that P and D can exchange state and returns a planner.
func New(p, d *Side) (*Planner, error) {
	if p == nil || d == nil || p.TP() == 0 || d.TP() == 0 {
		return nil, fmt.Errorf("%w: empty side", ErrIncompatible)
	}
	pm, dm := p.Ranks[0].Model, d.Ranks[0].Model
	if groups.CompatHash(pm, 0) != groups.CompatHash(dm, 0) {
		return nil, fmt.Errorf("%w: P serves %q and D %q with different specs", ErrIncompatible, pm.Name, dm.Name)
	}
	a, b := p.TP(), d.TP()
	if max(a, b)%min(a, b) != 0 {
		return nil, fmt.Errorf("%w: prefill tp %d and decode tp %d: one must divide the other", ErrIncompatible, a, b)
	}
	if len(p.Ranks[0].Groups) != len(d.Ranks[0].Groups) {
		return nil, fmt.Errorf("%w: %d groups on P, %d on D", ErrIncompatible, len(p.Ranks[0].Groups), len(d.Ranks[0].Groups))
	}
	pl := &Planner{P: p, D: d, Cost: DefaultCost}
	pl.targets, pl.consumers = Notifications(a, b)
	return pl, nil
}

// Consumers is the number of notifications P rank p waits for per request.
func (pl *Planner) Consumers(p int) int { return pl.consumers[p] }

// Targets is the list of P ranks D rank d notifies per request.
func (pl *Planner) Targets(d int) []int { return pl.targets[d] }

// builder holds what one Plan call needs.
type builder struct {
	pl  *Planner
	d   int
	req *Request
	nlo int // D rank's natural P ranks [nlo, nhi)
	nhi int
}

// Plan builds D rank d's plan for req.
func (pl *Planner) Plan(d int, req *Request, mode Mode) (*Plan, error) {
	if d < 0 || d >= pl.D.TP() {
		return nil, fmt.Errorf("%w: decode rank %d of tp %d", ErrBadRequest, d, pl.D.TP())
	}
	ng := len(pl.D.Ranks[0].Groups)
	if req.Tokens < 0 || req.DHit < 0 {
		return nil, fmt.Errorf("%w: negative token count", ErrBadRequest)
	}
	if len(req.PBlocks) != ng || len(req.DBlocks) != ng {
		return nil, fmt.Errorf("%w: %d/%d block lists for %d groups", ErrBadRequest, len(req.PBlocks), len(req.DBlocks), ng)
	}
	b := &builder{pl: pl, d: d, req: req}
	b.nlo, b.nhi = natural(pl.P.TP(), pl.D.TP(), d)
	tmpls := make([]*template, ng)
	for g := 0; g < ng; g++ {
		t, err := b.group(g)
		if err != nil {
			return nil, err
		}
		tmpls[g] = t
	}
	p := b.instantiate(tmpls)
	for _, r := range p.Remotes {
		if r.Rank < b.nlo || r.Rank >= b.nhi {
			return nil, fmt.Errorf("%w: internal: decode rank %d reads from prefill rank %d outside its notification range [%d,%d)",
				ErrIncompatible, d, r.Rank, b.nlo, b.nhi)
		}
	}
	switch {
	case mode == Auto && pl.NoDirect != "":
		mode = Staged
	case mode == Auto:
		mode = Direct
		if pl.Cost.PreferStaged(p) && pl.stagingFits(p) {
			mode = Staged
		}
	case mode == Direct && pl.NoDirect != "" && len(p.Remotes) > 0:
		return nil, fmt.Errorf("%w: direct mode: %s; use staged or auto", ErrBadRequest, pl.NoDirect)
	}
	p.Mode = mode
	if mode == Staged {
		stage(p)
	}
	return p, nil
}

// StagingAlign is the slack a staging or scratch range may need for
// alignment in its pool (session.Pool aligns ranges to 64 bytes).
const StagingAlign = 64

// stagingFits reports whether the staged form of direct plan p fits the
// pools Auto knows of: every P rank's gather in its staging pool, and the
// plan's scratch plus everything it reads in D's scratch pool.
func (pl *Planner) stagingFits(p *Plan) bool {
	if pl.PStaging == nil {
		return true
	}
	scratch := p.ScratchBytes
	for _, rp := range p.Remotes {
		if rp.Rank < 0 || rp.Rank >= len(pl.PStaging) || rp.Bytes+StagingAlign > pl.PStaging[rp.Rank] {
			return false
		}
		scratch += rp.Bytes
	}
	return scratch+StagingAlign <= pl.DScratch
}

// group builds the template of group g.
func (b *builder) group(g int) (*template, error) {
	dg := &b.pl.D.Ranks[b.d].Groups[g]
	if dg.Kind == groups.Recurrent {
		return b.recurrent(g)
	}
	return b.tokens(g)
}

func (b *builder) checkID(side string, g, idx, id int, numBlocks int) error {
	switch {
	case id == 0:
		return &BlockError{Side: side, Group: g, Index: idx, ID: id, Msg: "null block"}
	case id < 0 || id >= numBlocks:
		return &BlockError{Side: side, Group: g, Index: idx, ID: id, Msg: fmt.Sprintf("outside the pool's %d blocks", numBlocks)}
	}
	return nil
}

// part is one of the per-token vectors of an attention page.
type part uint8

const (
	partK part = iota
	partV
	partKS
	partVS
)

func partBytes(l *groups.LayerGeometry, pt part) int {
	switch pt {
	case partK:
		return l.KBytes
	case partV:
		return l.VBytes
	}
	return l.ScaleBytes
}

func partOffset(l *groups.LayerGeometry, pt part, t, head int) int {
	switch pt {
	case partK:
		return l.KOffset(t, head)
	case partV:
		return l.VOffset(t, head)
	case partKS:
		return l.ScaleOffset(t, head, false)
	}
	return l.ScaleOffset(t, head, true)
}

// tokenStride is the distance between consecutive tokens' vectors of one
// head within a kernel block.
func tokenStride(l *groups.LayerGeometry, pt part) int {
	if l.AttnLayout == groups.NHD {
		return l.Heads.Count * partBytes(l, pt)
	}
	return partBytes(l, pt)
}

func kernelBlock(l *groups.LayerGeometry) int {
	if l.Layer.Kind == groups.MLA || l.Layer.Kind == groups.Indexer {
		return l.BlockSize
	}
	return l.KernelBlockSize
}

// tokenSrc maps D-local heads to (P rank, P-local head).
type tokenSrc struct {
	rank, head int
}

func (b *builder) tokens(g int) (*template, error) {
	pl, req := b.pl, b.req
	dGeo := pl.D.Ranks[b.d]
	li := dGeo.Groups[g].Layers[0]
	dl := dGeo.Layer(li)
	layer := dl.Layer
	h := req.Tokens
	lo, hi := max(req.DHit, layer.LiveStart(h)), h
	t := &template{}
	if lo >= hi {
		return t, nil
	}
	pg := &pl.P.Ranks[0].Groups[g]
	bsP, bsD := pg.BlockSize, dl.BlockSize
	pIDs, dIDs := req.PBlocks[g], req.DBlocks[g]
	nP := (h + bsP - 1) / bsP
	firstP := nP - len(pIDs) // block index of pIDs[0]
	if lo/bsP < firstP {
		return nil, &BlockError{Side: "prefill", Group: g, Index: 0, ID: -1,
			Msg: fmt.Sprintf("%d ids sent, positions from %d need block index %d of %d", len(pIDs), lo, lo/bsP, nP)}
	}
	if firstP < 0 {
		return nil, &BlockError{Side: "prefill", Group: g, Index: 0, ID: -1, Msg: fmt.Sprintf("%d ids for %d blocks", len(pIDs), nP)}
	}
	if need := (hi + bsD - 1) / bsD; len(dIDs) < need {
		return nil, &BlockError{Side: "decode", Group: g, Index: len(dIDs), ID: -1, Msg: fmt.Sprintf("table of %d blocks, %d needed", len(dIDs), need)}
	}
	pPool, dPool := pg.Pool, dl.Pool
	for k := lo / bsP; k < nP; k++ {
		if err := b.checkID("prefill", g, k-firstP, pIDs[k-firstP], pl.P.NumBlocks[pPool]); err != nil {
			return nil, err
		}
	}
	for k := lo / bsD; k < (hi+bsD-1)/bsD; k++ {
		if err := b.checkID("decode", g, k, dIDs[k], pl.D.NumBlocks[dPool]); err != nil {
			return nil, err
		}
	}
	// Where each of D's heads comes from.
	pls := make([]groups.LayerGeometry, pl.P.TP())
	for p := range pls {
		pls[p] = pl.P.Ranks[p].Layer(li)
	}
	srcs := make([]tokenSrc, dl.Heads.Count)
	for hd := range srcs {
		if layer.Kind == groups.MLA || layer.Kind == groups.Indexer {
			srcs[hd] = tokenSrc{rank: b.nlo}
			continue
		}
		gh := dl.Heads.First + hd
		hlo, hhi := holders(layer.Attention.KVHeads, pl.P.TP(), gh)
		p := pick(hlo, hhi, b.nlo, b.nhi)
		srcs[hd] = tokenSrc{rank: p, head: gh - pls[p].Heads.First}
	}
	parts := []part{partK}
	if dl.VBytes > 0 {
		parts = append(parts, partV)
	}
	if dl.ScaleBytes > 0 {
		parts = append(parts, partKS, partVS)
	}
	e := tokenEmitter{t: t, dl: &dl, pls: pls, bsP: bsP, bsD: bsD, pIDs: pIDs, firstP: firstP, dIDs: dIDs,
		strideP: int64(pl.P.Ranks[0].Pools[pPool].BlockStride()), strideD: int64(dl.BlockStride)}
	kbsD := kernelBlock(&dl)
	// Fast path: when P's page for this layer has the same structure as D's
	// (layout, kernel block, heads) and D's heads all come from one P rank
	// with the same local indexes, a whole kernel block is one contiguous
	// range on both sides.
	same := len(srcs) > 0
	for hd, s := range srcs {
		q := &pls[s.rank]
		same = same && s.rank == srcs[0].rank && s.head == hd && q.Heads.Count == dl.Heads.Count &&
			q.AttnLayout == dl.AttnLayout && kernelBlock(q) == kbsD && q.TokenBytes == dl.TokenBytes
	}
	kbBytes := int64(kbsD) * int64(dl.TokenBytes)
	// Emit in D page order: block, kernel block, part, then heads and tokens
	// in D's layout order, so consecutive emissions are adjacent on D.
	for k := lo / bsD; k*bsD < hi; k++ {
		for u := max(lo, k*bsD); u < min(hi, (k+1)*bsD); {
			if same && u%kbsD == 0 {
				// Whole kernel blocks up to the end of this P block (and
				// this D block) form one range on both sides.
				kp := u / bsP
				w := min(hi, (k+1)*bsD, (kp+1)*bsP)
				if nkb := (w - u) / kbsD; nkb > 0 {
					src := int64(pIDs[kp-firstP])*e.strideP + int64((u-kp*bsP)/kbsD)*kbBytes
					dst := int64(dIDs[k])*e.strideD + int64((u-k*bsD)/kbsD)*kbBytes
					t.add(srcs[0].rank, src, loc{kind: locPage, off: dst}, int64(nkb)*kbBytes)
					u += nkb * kbsD
					continue
				}
			}
			v := min(hi, (k+1)*bsD, (u/kbsD+1)*kbsD)
			for _, pt := range parts {
				if dl.AttnLayout == groups.HND || dl.Heads.Count == 1 {
					for hd, s := range srcs {
						e.run(pt, u, v, hd, s)
					}
				} else {
					for x := u; x < v; x++ {
						for hd, s := range srcs {
							e.run(pt, x, x+1, hd, s)
						}
					}
				}
			}
			u = v
		}
	}
	t.coalesce()
	return t, nil
}

type tokenEmitter struct {
	t                *template
	dl               *groups.LayerGeometry
	pls              []groups.LayerGeometry
	bsP, bsD         int
	pIDs, dIDs       []int
	firstP           int
	strideP, strideD int64
}

// run emits the reads of part pt of tokens [u, v) of D-local head hd, all
// within one D kernel block, splitting at P kernel-block boundaries and
// falling back to one read per token where a side is not contiguous.
func (e *tokenEmitter) run(pt part, u, v, hd int, s tokenSrc) {
	dl, plg := e.dl, &e.pls[s.rank]
	pb := int64(partBytes(dl, pt))
	kbsP := kernelBlock(plg)
	pContig := tokenStride(plg, pt) == int(pb)
	dContig := tokenStride(dl, pt) == int(pb)
	for x := u; x < v; {
		end := min(v, (x/kbsP+1)*kbsP) // stay within one P kernel block (hence one P block)
		if !pContig || !dContig {
			end = x + 1
		}
		kp, kd := x/e.bsP, x/e.bsD
		src := int64(e.pIDs[kp-e.firstP])*e.strideP + int64(partOffset(plg, pt, x-kp*e.bsP, s.head))
		dst := int64(e.dIDs[kd])*e.strideD + int64(partOffset(dl, pt, x-kd*e.bsD, hd))
		e.t.add(s.rank, src, loc{kind: locPage, off: dst}, int64(end-x)*pb)
		x = end
	}
}

// recurrent builds the template of a recurrent group: the one state slot,
// each conv segment and state tensor sliced by both sides' shards.
func (b *builder) recurrent(g int) (*template, error) {
	pl, req := b.pl, b.req
	dGeo := pl.D.Ranks[b.d]
	li := dGeo.Groups[g].Layers[0]
	dl := dGeo.Layer(li)
	pg := &pl.P.Ranks[0].Groups[g]
	if len(req.PBlocks[g]) != 1 {
		return nil, &BlockError{Side: "prefill", Group: g, Index: 0, ID: -1, Msg: fmt.Sprintf("recurrent group needs exactly 1 id, got %d", len(req.PBlocks[g]))}
	}
	if len(req.DBlocks[g]) != 1 {
		return nil, &BlockError{Side: "decode", Group: g, Index: 0, ID: -1, Msg: fmt.Sprintf("recurrent group needs exactly 1 id, got %d", len(req.DBlocks[g]))}
	}
	pid, did := req.PBlocks[g][0], req.DBlocks[g][0]
	if err := b.checkID("prefill", g, 0, pid, pl.P.NumBlocks[pg.Pool]); err != nil {
		return nil, err
	}
	if err := b.checkID("decode", g, 0, did, pl.D.NumBlocks[dl.Pool]); err != nil {
		return nil, err
	}
	t := &template{}
	if req.Tokens == 0 {
		return t, nil
	}
	srcBase := int64(pid) * int64(pl.P.Ranks[0].Pools[pg.Pool].BlockStride())
	dstBase := int64(did) * int64(dl.BlockStride)
	pls := make([]groups.LayerGeometry, pl.P.TP())
	for p := range pls {
		pls[p] = pl.P.Ranks[p].Layer(li)
	}
	rows, e := dl.ConvRows, int64(dl.ConvElem)
	for si, ds := range dl.Segments {
		// Runs of D units held by the same P rank, contiguous there.
		for u := ds.First; u < ds.First+ds.Count; {
			hlo, hhi := holders(ds.Units, pl.P.TP(), u)
			p := pick(hlo, hhi, b.nlo, b.nhi)
			ps := pls[p].Segments[si]
			end := min(ds.First+ds.Count, ps.First+ps.Count)
			w := ds.UnitWidth
			cD := ds.Offset + (u-ds.First)*w
			cP := ps.Offset + (u-ps.First)*w
			b.convRun(t, p, &pls[p], &dl, srcBase, dstBase, cP, cD, (end-u)*w, rows, e)
			u = end
		}
	}
	for si, ds := range dl.States {
		hb := int64(ds.HeadElems() * ds.DType.Size())
		for h := ds.First; h < ds.First+ds.Count; {
			hlo, hhi := holders(ds.Heads, pl.P.TP(), h)
			p := pick(hlo, hhi, b.nlo, b.nhi)
			ps := pls[p].States[si]
			end := min(ds.First+ds.Count, ps.First+ps.Count)
			src := srcBase + int64(ps.Offset) + int64(h-ps.First)*hb
			dst := dstBase + int64(ds.Offset) + int64(h-ds.First)*hb
			t.add(p, src, loc{kind: locPage, off: dst}, int64(end-h)*hb)
			h = end
		}
	}
	t.coalesce()
	return t, nil
}

// convRun moves n channels starting at P channel cP / D channel cD, all
// rows, between the two conv layouts.
func (b *builder) convRun(t *template, p int, pl, dl *groups.LayerGeometry, srcBase, dstBase int64, cP, cD, n, rows int, e int64) {
	pOff := func(c, r int) int64 { return srcBase + int64(pl.ConvOffset(c, r)) }
	dOff := func(c, r int) int64 { return dstBase + int64(dl.ConvOffset(c, r)) }
	slice := int64(n) * int64(rows) * e
	switch {
	case pl.ConvLayout == groups.DS && dl.ConvLayout == groups.DS:
		t.add(p, pOff(cP, 0), loc{kind: locPage, off: dOff(cD, 0)}, slice)
	case pl.ConvLayout == groups.SD && dl.ConvLayout == groups.SD:
		for r := 0; r < rows; r++ {
			t.add(p, pOff(cP, r), loc{kind: locPage, off: dOff(cD, r)}, int64(n)*e)
		}
	case pl.ConvLayout == groups.DS: // DS -> SD: read (n x rows), transpose to (rows x n), copy rows
		a := t.scratch
		tr := a + slice
		t.scratch += 2 * slice
		t.add(p, pOff(cP, 0), loc{kind: locScratch, off: a}, slice)
		t.post = append(t.post, tStep{kind: StepTranspose, src: loc{locScratch, a}, dst: loc{locScratch, tr}, rows: n, cols: rows, itm: int(e)})
		for r := 0; r < rows; r++ {
			t.post = append(t.post, tStep{kind: StepCopy, src: loc{locScratch, tr + int64(r*n)*e}, dst: loc{locPage, dOff(cD, r)}, n: int64(n) * e})
		}
	default: // SD -> DS: read rows into (rows x n), transpose into the page's (n x rows) slice
		a := t.scratch
		t.scratch += slice
		for r := 0; r < rows; r++ {
			t.add(p, pOff(cP, r), loc{kind: locScratch, off: a + int64(r*n)*e}, int64(n)*e)
		}
		t.post = append(t.post, tStep{kind: StepTranspose, src: loc{locScratch, a}, dst: loc{locPage, dOff(cD, 0)}, rows: rows, cols: n, itm: int(e)})
	}
}

// bucket collects the reads between one P rank's region and one D region.
// Each (group, layer) contributes one run sorted by remote offset.
type bucket struct {
	rank          int
	remote, local Region
	reads         []Read
	runs          []int // start index of each run
	n             int   // reads, counted before filling
}

// instantiate turns the group templates into a direct-mode plan: every layer
// of a group gets its template with its own regions and, cross-layer, its
// slot's offset within a block. Reads are bucketed by (P rank, P region, D
// region); a bucket fed by several layers (groups sharing a slot in a
// unified pool, every layer of a cross-layer pool) merges their sorted
// runs, so reads that continue each other across groups and layers
// coalesce too: cross-layer to cross-layer with equal pages, a block of a
// group is one read, and a run of blocks consecutive on both sides too
// where the group's pages fill the block.
func (b *builder) instantiate(tmpls []*template) *Plan {
	pl := b.pl
	pGeo, dGeo := pl.P.Ranks[0], pl.D.Ranks[b.d]
	plan := &Plan{DRank: b.d, Notify: pl.targets[b.d]}
	type key struct {
		rank          int
		remote, local Region
	}
	// regions gives layer li's regions on P and D and its page's offset
	// within a block on each.
	regions := func(g, li int) (pReg, dReg Region, pOff, dOff int64) {
		pp, dp := pGeo.Groups[g].Pool, dGeo.Groups[g].Pool
		pr, po := pGeo.Place(g, pGeo.LayerSlot[li])
		dr, do := dGeo.Place(g, dGeo.LayerSlot[li])
		return Region{Pool: pp, Slot: pr}, Region{Pool: dp, Slot: dr}, int64(po), int64(do)
	}
	// chunks calls fn for each run of template reads with the same P rank
	// and destination kind (templates are sorted that way).
	chunks := func(t *template, fn func(i, j int)) {
		for i := 0; i < len(t.reads); {
			j := i + 1
			for j < len(t.reads) && t.reads[j].pRank == t.reads[i].pRank && t.reads[j].dst.kind == t.reads[i].dst.kind {
				j++
			}
			fn(i, j)
			i = j
		}
	}
	localOf := func(d Region, l loc) Region {
		if l.kind == locScratch {
			return Staging
		}
		return d
	}
	// Pass 1: bucket sizes, so every read is written once into one array
	// laid out in output order.
	index := map[key]*bucket{}
	var buckets []*bucket
	total := 0
	for g, t := range tmpls {
		for _, li := range dGeo.Groups[g].Layers {
			pReg, dReg, _, _ := regions(g, li)
			chunks(t, func(i, j int) {
				k := key{t.reads[i].pRank, pReg, localOf(dReg, t.reads[i].dst)}
				bk := index[k]
				if bk == nil {
					bk = &bucket{rank: k.rank, remote: k.remote, local: k.local}
					index[k] = bk
					buckets = append(buckets, bk)
				}
				bk.n += j - i
				total += j - i
			})
		}
	}
	slices.SortFunc(buckets, func(x, y *bucket) int {
		if c := cmp.Compare(x.rank, y.rank); c != 0 {
			return c
		}
		return cmpRegionRead(Read{Remote: x.remote, Local: x.local}, Read{Remote: y.remote, Local: y.local})
	})
	all := make([]Read, total)
	at, maxN := 0, 0
	for _, bk := range buckets {
		bk.reads = all[at : at : at+bk.n]
		at += bk.n
		maxN = max(maxN, bk.n)
	}
	// Pass 2: fill the buckets, one sorted run per (group, layer).
	for g, t := range tmpls {
		for _, li := range dGeo.Groups[g].Layers {
			pReg, dReg, pOff, dOff := regions(g, li)
			base := plan.ScratchBytes
			plan.ScratchBytes += t.scratch
			resolve := func(l loc) (Region, int64) {
				if l.kind == locScratch {
					return Staging, base + l.off
				}
				return dReg, l.off + dOff
			}
			chunks(t, func(i, j int) {
				bk := index[key{t.reads[i].pRank, pReg, localOf(dReg, t.reads[i].dst)}]
				bk.runs = append(bk.runs, len(bk.reads))
				for _, r := range t.reads[i:j] {
					local, off := resolve(r.dst)
					bk.reads = append(bk.reads, Read{Remote: pReg, RemoteOff: r.src + pOff, Local: local, LocalOff: off, Len: r.n})
				}
			})
			for _, s := range t.post {
				sr, so := resolve(s.src)
				dr, do := resolve(s.dst)
				plan.Post = append(plan.Post, Step{Kind: s.kind, Src: sr, SrcOff: so, Dst: dr, DstOff: do, Len: s.n, Rows: s.rows, Cols: s.cols, ItemBytes: s.itm})
			}
		}
	}
	// Merge, coalesce and compact each bucket in place, in output order.
	tmp := make([]Read, maxN)
	w := 0
	for _, bk := range buckets {
		rs := bk.reads
		if len(bk.runs) > 1 { // one run is a template's reads, already coalesced
			rs = coalesceReads(mergeRuns(bk.reads, bk.runs, tmp[:len(bk.reads)]))
		}
		if n := len(plan.Remotes); n == 0 || plan.Remotes[n-1].Rank != bk.rank {
			if n > 0 {
				plan.Remotes[n-1].Reads = all[plan.Remotes[n-1].Bytes:w:w]
			}
			plan.Remotes = append(plan.Remotes, RemotePlan{Rank: bk.rank, Bytes: int64(w)}) // Bytes holds the start until fixed below
		}
		if len(rs) > 0 && &rs[0] == &all[w] {
			w += len(rs) // already in place
		} else {
			w += copy(all[w:], rs)
		}
	}
	if n := len(plan.Remotes); n > 0 {
		plan.Remotes[n-1].Reads = all[plan.Remotes[n-1].Bytes:w:w]
	}
	for i := range plan.Remotes {
		rp := &plan.Remotes[i]
		rp.Bytes = 0
		for _, r := range rp.Reads {
			rp.Bytes += r.Len
		}
	}
	return plan
}

// mergeRuns merges the sorted runs of rs (starting at runs[i]) by remote
// offset, pairwise, in O(n log runs).
func mergeRuns(rs []Read, runs []int, tmp []Read) []Read {
	if len(runs) <= 1 {
		return rs
	}
	bounds := append(runs, len(rs))
	orig := rs
	for len(bounds) > 2 {
		nb := []int{0}
		for i := 0; i+1 < len(bounds); i += 2 {
			lo, mid := bounds[i], bounds[i+1]
			hi := mid
			if i+2 < len(bounds) {
				hi = bounds[i+2]
			}
			a, c, k := lo, mid, lo
			for a < mid && c < hi {
				if rs[c].RemoteOff < rs[a].RemoteOff {
					tmp[k] = rs[c]
					c++
				} else {
					tmp[k] = rs[a]
					a++
				}
				k++
			}
			k += copy(tmp[k:], rs[a:mid])
			copy(tmp[k:], rs[c:hi])
			nb = append(nb, hi)
		}
		rs, tmp = tmp, rs
		bounds = nb
	}
	if &rs[0] != &orig[0] {
		copy(orig, rs)
	}
	return orig
}

// coalesceReads merges sorted reads contiguous on both sides.
func coalesceReads(rs []Read) []Read {
	out := rs[:0]
	for _, r := range rs {
		if k := len(out) - 1; k >= 0 {
			p := &out[k]
			if p.Remote == r.Remote && p.Local == r.Local && p.RemoteOff+p.Len == r.RemoteOff && p.LocalOff+p.Len == r.LocalOff {
				p.Len += r.Len
				continue
			}
		}
		out = append(out, r)
	}
	return out
}

func cmpRegionRead(a, b Read) int {
	if c := cmp.Compare(a.Remote.Pool, b.Remote.Pool); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Remote.Slot, b.Remote.Slot); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Local.Pool, b.Local.Pool); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Local.Slot, b.Local.Slot); c != 0 {
		return c
	}
	return cmp.Compare(a.RemoteOff, b.RemoteOff)
}
