package ucx

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// FuzzUCXEnvelopes: the envelopes around what a peer sends before UCX
// parses it (ucp_ep_rkey_unpack and ucp_ep_create trust their input): a
// packed remote key (MemDesc.Key) and a worker address (RankMeta.Address).
// An accepted key is exactly wrapKey of what it unwraps to, with a
// non-empty rkey; a damaged key (any one byte flipped) is refused. An
// accepted address re-encodes to the input; a refused one wraps
// ErrBadAddress.
func FuzzUCXEnvelopes(f *testing.F) {
	f.Add(wrapKey(42, []byte("packed-rkey")))
	f.Add(wrapKey(0, []byte{0}))
	f.Add(append(binary.LittleEndian.AppendUint64([]byte(addrMagic), 7), "worker"...))
	f.Add([]byte(keyMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		if tid, rkey, ok := unwrapKey(b); ok {
			if len(rkey) == 0 || !bytes.Equal(wrapKey(tid, rkey), b) {
				t.Fatalf("unwrapKey(%x) = %d, %x: does not re-wrap to the input", b, tid, rkey)
			}
			for i := range b {
				d := bytes.Clone(b)
				d[i] ^= 0x01
				if _, _, ok := unwrapKey(d); ok {
					t.Fatalf("key with byte %d flipped accepted", i)
				}
			}
		}
		tid, worker, err := parseAddress(b)
		if err != nil {
			if !errors.Is(err, ErrBadAddress) {
				t.Fatalf("error %v does not wrap ErrBadAddress", err)
			}
			return
		}
		if len(worker) == 0 {
			t.Fatalf("address %x accepted with no worker address", b)
		}
		re := append(binary.LittleEndian.AppendUint64([]byte(addrMagic), tid), worker...)
		if !bytes.Equal(re, b) {
			t.Fatalf("address %x re-encodes to %x", b, re)
		}
	})
}
