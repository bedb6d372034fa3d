package session

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"time"
)

// PeerInfo is what D knows of one prefill incarnation (for inspection).
type PeerInfo struct {
	Key      string // engine id @ host:port
	EngineID string
	BootID   string // "" until the handshake answered
	Host     string
	Port     int
	TP       int    // P's tp from its metadata (0 until the handshake answered)
	State    string // handshaking, ready or failed
	Error    string // why the handshake or the peer failed
	// ClockOffset is P's clock minus D's, as the handshake measured it.
	ClockOffset time.Duration
	// BlockLayout and Memory are P's (rank 0's) memory configuration.
	BlockLayout, Memory string
}

// LoadInfo is one load attempt in flight on D (for inspection).
type LoadInfo struct {
	Request  string
	Transfer uint64
	Peer     string
	State    string
	Reason   string
	// LeaseExpiry is P's hold expiry on D's clock (zero: no lease).
	LeaseExpiry time.Time
}

// Peers returns the prefill peers D knows, sorted by key.
func (d *Decode) Peers() []PeerInfo {
	d.mu.Lock()
	ps := make([]*peer, 0, len(d.peers))
	for _, p := range d.peers {
		ps = append(ps, p)
	}
	d.mu.Unlock()
	out := make([]PeerInfo, 0, len(ps))
	for _, p := range ps {
		pi := PeerInfo{Key: p.ref.key(), EngineID: p.ref.EngineID, Host: p.ref.Host, Port: p.ref.Port, State: "handshaking"}
		select {
		case <-p.ready: // the handshake ended: its fields are written once, before ready closed
			pi.State = "ready"
			if p.err != nil {
				pi.State, pi.Error = "failed", p.err.Error()
			}
			pi.BootID, pi.ClockOffset = p.bootID, p.offset
			if len(p.metas) > 0 {
				c := p.metas[0].Config.WithDefaults()
				pi.TP, pi.BlockLayout, pi.Memory = p.metas[0].TP, string(c.BlockLayout), string(c.Memory)
			}
			if p.ctx != nil && p.ctx.Err() != nil && pi.Error == "" {
				pi.State, pi.Error = "failed", context.Cause(p.ctx).Error()
			}
		default:
		}
		out = append(out, pi)
	}
	slices.SortFunc(out, func(a, b PeerInfo) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// Loads returns the load attempts in flight, sorted by transfer id.
func (d *Decode) Loads() []LoadInfo {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]LoadInfo, 0, len(d.loads))
	for k, l := range d.loads {
		li := LoadInfo{Request: l.req, Transfer: uint64(k)}
		if l.peer != nil {
			li.Peer = l.peer.name()
		}
		if r := d.machine.reqs[k]; r != nil {
			li.State, li.Reason = r.state.String(), r.reason
			if r.expiry != 0 {
				li.LeaseExpiry = time.Unix(0, int64(r.expiry))
			}
		}
		out = append(out, li)
	}
	slices.SortFunc(out, func(a, b LoadInfo) int { return cmp.Compare(a.Transfer, b.Transfer) })
	return out
}
