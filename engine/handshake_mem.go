package engine

import (
	"context"
	"encoding/hex"
	"fmt"
	"sync"

	"github.com/hybridxfer/hybridxfer/statexfer/session"
)

// MemHandshake is an in-process handshake registry for engines running in
// one process (tests, property checks): Serve registers a prefill
// instance's payload under a made-up port, Fetch returns it after the same
// compatibility check the ZeroMQ side channel does.
type MemHandshake struct {
	mu     sync.Mutex
	next   int
	byPort map[int]memEntry
}

type memEntry struct {
	compat  [32]byte
	payload []byte
}

// Serve implements HandshakeServer.
func (h *MemHandshake) Serve(_ string, compat [32]byte, _ map[string]string, payload []byte) (int, func() error, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.byPort == nil {
		h.byPort = map[int]memEntry{}
	}
	h.next++
	port := 40000 + h.next
	h.byPort[port] = memEntry{compat, payload}
	return port, func() error {
		h.mu.Lock()
		delete(h.byPort, port)
		h.mu.Unlock()
		return nil
	}, nil
}

// Fetch implements HandshakeClient.
func (h *MemHandshake) Fetch(_ context.Context, host string, port int, compat [32]byte, _ map[string]string) (session.Handshake, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	e, ok := h.byPort[port]
	if !ok {
		return session.Handshake{}, fmt.Errorf("serve: no handshake server at %s:%d", host, port)
	}
	if e.compat != compat {
		return session.Handshake{}, fmt.Errorf("serve: compatibility hash mismatch: local %s, remote %s", hex.EncodeToString(compat[:8]), hex.EncodeToString(e.compat[:8]))
	}
	return session.Handshake{Payload: e.payload}, nil
}
