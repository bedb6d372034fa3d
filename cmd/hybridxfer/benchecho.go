package main

// The fixed-overhead measurement of `bench transfer` times a one-block
// request until the prefill session has handled its read-completion
// notification, against a raw get plus an active-message round trip. The
// raw round trip ends when D hears P's echo, so ours does too: in bench
// runs the prefill worker's transports answer every handled MsgDone of a
// "fixed-" request with an echo, sent from the handler after the session
// returned. The echo is benchmark wiring only; serving never sends it.

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"time"

	"github.com/hybridxfer/hybridxfer/statexfer"
	"github.com/hybridxfer/hybridxfer/statexfer/session"
	"github.com/hybridxfer/hybridxfer/statexfer/transport"
)

var (
	// echoPing (D -> P) carries D's transport address: echoes to the
	// sender's PeerID go there.
	echoPing = []byte("HXBENCH-PING ")
	// echoPong (P -> D) carries the request id whose MsgDone P handled.
	echoPong = []byte("HXBENCH-ECHO ")
)

// fixedPrefix names the requests the prefill side echoes.
const fixedPrefix = "fixed-"

// echoPrefill wraps P's transport factory: pings connect back to D, and
// handled read-completions of fixed- requests are echoed.
func echoPrefill(f session.TransportFactory) session.TransportFactory {
	return func(r int, h transport.Handlers) (transport.Transport, error) {
		e := &echoer{peers: map[transport.PeerID]transport.Peer{}}
		inner := h.Notify
		h.Notify = func(from transport.PeerID, msg []byte) {
			if addr, ok := bytes.CutPrefix(msg, echoPing); ok {
				e.connect(from, addr)
				return
			}
			inner(from, msg)
			if !bytes.Contains(msg, []byte(fixedPrefix)) {
				return
			}
			if m, err := statexfer.DecodeMessage(msg); err == nil && m.Type == statexfer.MsgDone && strings.HasPrefix(m.ReqID, fixedPrefix) {
				e.echo(from, m.ReqID)
			}
		}
		tr, err := f(r, h)
		e.mu.Lock()
		e.tr = tr
		e.mu.Unlock()
		return tr, err
	}
}

type echoer struct {
	mu    sync.Mutex
	tr    transport.Transport
	peers map[transport.PeerID]transport.Peer
}

func (e *echoer) connect(from transport.PeerID, addr []byte) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.tr == nil || e.peers[from] != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if p, err := e.tr.Connect(ctx, bytes.Clone(addr)); err == nil {
		e.peers[from] = p
	}
}

func (e *echoer) echo(from transport.PeerID, req string) {
	e.mu.Lock()
	p := e.peers[from]
	e.mu.Unlock()
	if p != nil {
		_ = p.Notify(append(bytes.Clone(echoPong), req...))
	}
}

// echoDecode wraps D's transport factory: echoes go to ch (their request
// ids), everything else to the session.
func echoDecode(f session.TransportFactory, ch chan<- string) session.TransportFactory {
	return func(r int, h transport.Handlers) (transport.Transport, error) {
		inner := h.Notify
		h.Notify = func(from transport.PeerID, msg []byte) {
			if req, ok := bytes.CutPrefix(msg, echoPong); ok {
				select {
				case ch <- string(req):
				default:
				}
				return
			}
			inner(from, msg)
		}
		return f(r, h)
	}
}
