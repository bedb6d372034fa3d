package plan

// CostModel estimates the time of a plan in direct and staged mode; Auto
// picks the cheaper. The defaults are rough figures for UCX-posted reads
// (one-sided on shared memory): tune them with measured numbers from
// `hybridxfer bench transfer`. The decode session replaces PerReadNs with
// what its peers report for the path they take (statexfer.CostFor; the UCX
// mapped path: 50 ns), so that Auto does not stage reads that cost tens of
// nanoseconds.
type CostModel struct {
	// PerReadNs is the fixed cost of one read descriptor (post, completion).
	PerReadNs float64
	// CopyGBps is the local memcpy bandwidth used by gather and scatter.
	CopyGBps float64
	// StagedFixedNs is the fixed cost of staging per P rank (asking P to
	// gather and waiting for it).
	StagedFixedNs float64
}

// DefaultCost: 0.5 us per descriptor, 12 GB/s copies, 30 us per staged rank.
var DefaultCost = CostModel{PerReadNs: 500, CopyGBps: 12, StagedFixedNs: 30000}

// DirectNs and StagedNs estimate the parts of a plan's time that differ
// between the modes (the wire transfer of the bytes is common to both).
func (c CostModel) DirectNs(p *Plan) float64 {
	return float64(p.NumReads()) * c.PerReadNs
}

// StagedNs: two extra copies of every byte plus one descriptor and the
// staging round trip per P rank.
func (c CostModel) StagedNs(p *Plan) float64 {
	n := float64(len(p.Remotes))
	return 2*float64(p.Bytes())/c.CopyGBps + n*(c.PerReadNs+c.StagedFixedNs)
}

// PreferStaged reports whether staging p is estimated to be faster.
func (c CostModel) PreferStaged(p *Plan) bool {
	return len(p.Remotes) > 0 && c.StagedNs(p) < c.DirectNs(p)
}

// stage rewrites a direct plan into staged mode: per P rank, gather every
// read's source into P's staging buffer in order, read it in one piece into
// D's staging buffer after the plan's own scratch, then scatter it to the
// original destinations before the plan's post steps run.
func stage(p *Plan) {
	scatter := make([]Step, 0, p.NumReads()+len(p.Post))
	for i := range p.Remotes {
		rp := &p.Remotes[i]
		var s int64
		gather := make([]Step, 0, len(rp.Reads))
		base := p.ScratchBytes
		for _, r := range rp.Reads {
			gather = appendCopy(gather, Step{Kind: StepCopy, Src: r.Remote, SrcOff: r.RemoteOff, Dst: Staging, DstOff: s, Len: r.Len})
			scatter = appendCopy(scatter, Step{Kind: StepCopy, Src: Staging, SrcOff: base + s, Dst: r.Local, DstOff: r.LocalOff, Len: r.Len})
			s += r.Len
		}
		rp.Gather = gather
		rp.StagingBytes = s
		rp.Reads = []Read{{Remote: Staging, RemoteOff: 0, Local: Staging, LocalOff: base, Len: s}}
		p.ScratchBytes += s
	}
	p.Post = append(scatter, p.Post...) // scatter has room for Post: no copy of the reads

}

// appendCopy appends a copy step, merging it into the previous one when
// both its source and destination continue it.
func appendCopy(steps []Step, s Step) []Step {
	if k := len(steps) - 1; k >= 0 {
		q := &steps[k]
		if q.Kind == StepCopy && q.Src == s.Src && q.Dst == s.Dst && q.SrcOff+q.Len == s.SrcOff && q.DstOff+q.Len == s.DstOff {
			q.Len += s.Len
			return steps
		}
	}
	return append(steps, s)
}
