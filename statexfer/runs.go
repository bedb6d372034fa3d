package statexfer

import (
	"fmt"

	"github.com/hybridxfer/hybridxfer/statexfer/plan"
	"github.com/hybridxfer/hybridxfer/statexfer/transport"
)

// ReadRuns turns the reads of rp into the transport runs D posts, in one
// pass: reads of P's staging region are shifted by remoteShift (where P
// staged them) and reads into D's staging region by localShift (this
// load's scratch range); every read is checked against the remote rank's
// published region lengths and the local region sizes before anything is
// posted; consecutive reads of one region pair share one run, so op i of
// the runs is read i of rp (Result.Failed indexes are read indexes).
func ReadRuns(rp *plan.RemotePlan, remote *Remote, local *Local, remoteShift, localShift int64) ([]transport.Ranges, error) {
	var (
		runs       []transport.Ranges
		rlen, llen int64
		cur        *transport.Ranges
	)
	ranges := make([]transport.Range, len(rp.Reads))
	start := 0
	flush := func(end int) {
		if cur != nil {
			cur.Ranges = ranges[start:end:end]
		}
	}
	for i, r := range rp.Reads {
		if i == 0 || r.Remote != rp.Reads[i-1].Remote || r.Local != rp.Reads[i-1].Local {
			flush(i)
			reg := remote.Meta.Region(r.Remote)
			if reg == nil {
				return nil, fmt.Errorf("%w: read %d: prefill rank %d has no region %s", ErrBounds, i, rp.Rank, r.Remote)
			}
			rm := remote.Region(r.Remote)
			if rm == nil {
				return nil, fmt.Errorf("%w: read %d: prefill rank %d region %s is not imported", ErrBounds, i, rp.Rank, r.Remote)
			}
			lm, ok := local.Regions[r.Local]
			if !ok {
				return nil, fmt.Errorf("%w: read %d: no local region %s", ErrBounds, i, r.Local)
			}
			rlen, llen = int64(reg.Len), int64(len(lm.Bytes()))
			runs = append(runs, transport.Ranges{Local: lm, Remote: rm})
			cur, start = &runs[len(runs)-1], i
		}
		roff, loff := r.RemoteOff, r.LocalOff
		if r.Remote == plan.Staging {
			roff += remoteShift
		}
		if r.Local == plan.Staging {
			loff += localShift
		}
		if r.Len <= 0 || roff < 0 || roff > rlen || r.Len > rlen-roff {
			return nil, fmt.Errorf("%w: read %d: [%d, +%d) outside prefill rank %d region %s of %d bytes", ErrBounds, i, roff, r.Len, rp.Rank, r.Remote, rlen)
		}
		if loff < 0 || loff > llen || r.Len > llen-loff {
			return nil, fmt.Errorf("%w: read %d: [%d, +%d) outside local region %s of %d bytes", ErrBounds, i, loff, r.Len, r.Local, llen)
		}
		ranges[i] = transport.Range{LocalOff: uint64(loff), RemoteOff: uint64(roff), Len: uint64(r.Len)}
	}
	flush(len(rp.Reads))
	return runs, nil
}
