package transport

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
)

// inprocKeyMagic starts every inproc remote key, so keys of other backends
// and garbage are rejected with ErrBadKey.
const inprocKeyMagic = "ipk1"

// inprocKeyLen is the length of an inproc remote key: magic, owner
// instance, memory id.
const inprocKeyLen = len(inprocKeyMagic) + 8 + 8

// inprocMem is memory registered with an Inproc transport. The buffer is
// ordinary Go memory: nothing outside the process ever sees it.
type inprocMem struct {
	owner  *Inproc
	id     uint64
	addr   uint64
	buf    []byte
	kind   MemKind
	closed atomic.Bool
}

var _ Memory = (*inprocMem)(nil)

// Bytes implements Memory.
func (m *inprocMem) Bytes() []byte { return m.buf }

// Desc implements Memory.
func (m *inprocMem) Desc() MemDesc {
	key := make([]byte, 0, inprocKeyLen)
	key = append(key, inprocKeyMagic...)
	key = binary.LittleEndian.AppendUint64(key, m.owner.id)
	key = binary.LittleEndian.AppendUint64(key, m.id)
	return MemDesc{Addr: m.addr, Len: uint64(len(m.buf)), Key: key, Kind: m.kind}
}

// Kind implements Memory.
func (m *inprocMem) Kind() MemKind { return m.kind }

// Close deregisters the memory. Ops posted later that use it fail; ops in
// flight that use it may fail (releasing memory under an in-flight op is a
// caller error). Closing twice is a no-op.
func (m *inprocMem) Close() error {
	if m.closed.Swap(true) {
		return nil
	}
	m.owner.forgetMem(m.id)
	return nil
}

// parseInprocKey splits an inproc remote key into its owner instance and
// memory id.
func parseInprocKey(key []byte) (owner, id uint64, err error) {
	if len(key) != inprocKeyLen || string(key[:len(inprocKeyMagic)]) != inprocKeyMagic {
		return 0, 0, fmt.Errorf("%w: not an inproc key (%d bytes)", ErrBadKey, len(key))
	}
	k := key[len(inprocKeyMagic):]
	return binary.LittleEndian.Uint64(k), binary.LittleEndian.Uint64(k[8:]), nil
}

// inprocRemote is a peer's memory imported through one inproc link.
type inprocRemote struct {
	link *inprocLink
	mem  *inprocMem
	desc MemDesc
}

var _ RemoteMemory = (*inprocRemote)(nil)

// Desc implements RemoteMemory.
func (r *inprocRemote) Desc() MemDesc { return r.desc }
