package session

import (
	"fmt"

	"github.com/hybridxfer/hybridxfer/statexfer"
	"github.com/hybridxfer/hybridxfer/statexfer/transport"
)

// NewBidirectional opens the hosted ranks once for both sides of the
// protocol: the returned Prefill serves this instance's held state to
// readers and the returned Decode reads other instances' state, on the
// same registered memory and the same transports (one per rank). A
// decode instance uses it to export a finished conversation turn that a
// prefill instance reads back for the next turn (D -> P), a prefill
// instance to read it. The two configurations must name the same side,
// ranks, staging and transports; each side's messages go to its own
// handler (the message types of the two directions are disjoint), and
// the ranks close when both sessions have closed.
func NewBidirectional(pc PrefillConfig, dc DecodeConfig) (*Prefill, *Decode, error) {
	if pc.Side != dc.Side || pc.StagingBytes != dc.StagingBytes || len(pc.Ranks) != len(dc.Ranks) {
		return nil, nil, fmt.Errorf("%w: bidirectional session: the prefill and decode sides differ", ErrBadRequest)
	}
	for i := range pc.Ranks {
		if pc.Ranks[i] != dc.Ranks[i] {
			return nil, nil, fmt.Errorf("%w: bidirectional session: the prefill and decode ranks differ", ErrBadRequest)
		}
	}
	p, err := newPrefill(pc)
	if err != nil {
		return nil, nil, err
	}
	d, err := newDecode(dc)
	if err != nil {
		return nil, nil, err
	}
	h, err := openHosted("bidirectional", pc.Ranks, pc.Side, pc.StagingBytes, pc.Memory, pc.Transports, func(ep *endpoint) transport.Handlers {
		pr, dr := p.attach(ep), d.attach(ep)
		return transport.Handlers{
			Notify: func(from transport.PeerID, msg []byte) {
				if towardPrefill(msg) {
					pr.handle(from, msg)
				} else {
					dr.handle(from, msg)
				}
			},
			PeerFailed: dr.peerFailed,
		}
	})
	if err != nil {
		return nil, nil, err
	}
	h.users.Store(2)
	p.hosted = h
	d.start(h)
	return p, d, nil
}

// towardPrefill reports whether msg is one a prefill side handles (what
// a reader sends: staging requests, read completions, heartbeats, aborts,
// claims); the rest (answers to a reader) and anything that does not
// parse as far as its type go to the decode side, which counts them.
func towardPrefill(msg []byte) bool {
	if len(msg) < 2 {
		return false
	}
	switch statexfer.MsgType(msg[1]) {
	case statexfer.MsgDone, statexfer.MsgStage, statexfer.MsgHeartbeat, statexfer.MsgAbort, statexfer.MsgClaim:
		return true
	}
	return false
}
