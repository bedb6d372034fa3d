package statexfer

import (
	"context"
	"log/slog"
	"sync/atomic"

	"github.com/hybridxfer/hybridxfer/statexfer/transport"
)

// Dispatch routes control messages from a transport to the rank's Source
// (P side) and Executor (D side). Its Handlers are given to the transport at
// construction; the Source and Executor are attached once they exist.
// Messages arriving before then are dropped and counted.
type Dispatch struct {
	Ctx     context.Context
	Log     *slog.Logger
	source  atomic.Pointer[Source]
	exec    atomic.Pointer[Executor]
	dropped atomic.Int64
	bad     atomic.Int64
	failed  func(p transport.PeerID, err error)
}

// SetSource attaches P's side.
func (d *Dispatch) SetSource(s *Source) { d.source.Store(s) }

// SetExecutor attaches D's side.
func (d *Dispatch) SetExecutor(e *Executor) { d.exec.Store(e) }

// OnPeerFailed sets the callback for failed peers.
func (d *Dispatch) OnPeerFailed(f func(p transport.PeerID, err error)) { d.failed = f }

// Dropped and Malformed count messages that had no receiver or did not decode.
func (d *Dispatch) Dropped() int64   { return d.dropped.Load() }
func (d *Dispatch) Malformed() int64 { return d.bad.Load() }

// Handlers returns the transport handlers.
func (d *Dispatch) Handlers() transport.Handlers {
	return transport.Handlers{
		Notify: func(from transport.PeerID, msg []byte) {
			m, err := DecodeMessage(msg)
			if err != nil {
				d.bad.Add(1)
				if d.Log != nil {
					d.Log.Warn("malformed control message", "from", from, "err", err)
				}
				return
			}
			switch m.Type {
			case MsgStaged:
				if e := d.exec.Load(); e != nil {
					e.Handle(m)
					return
				}
			default:
				if s := d.source.Load(); s != nil {
					ctx := d.Ctx
					if ctx == nil {
						ctx = context.Background()
					}
					s.Handle(ctx, m)
					return
				}
			}
			d.dropped.Add(1)
		},
		PeerFailed: func(p transport.PeerID, err error) {
			if d.failed != nil {
				d.failed(p, err)
			}
		},
	}
}
