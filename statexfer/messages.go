package statexfer

import (
	"encoding/binary"
	"fmt"

	"github.com/hybridxfer/hybridxfer/statexfer/plan"
)

// MsgType is the kind of a control message carried by a transport
// notification.
type MsgType uint8

// Message types.
const (
	// MsgDone: D finished reading a request from this P rank. Consumers is
	// how many such messages P must see before releasing the request.
	MsgDone MsgType = iota + 1
	// MsgStage: one part of a staged plan's gather for P (Part of Parts);
	// the first part carries D's transport address for the reply.
	MsgStage
	// MsgStaged: P finished the gather of request ReqID for D rank DRank.
	MsgStaged
	// MsgHeartbeat: D still wants request ReqID (extends P's lease).
	MsgHeartbeat
	// MsgAbort: the sender gives up on request ReqID.
	MsgAbort
	// MsgLease: P's answer to a heartbeat: the hold's expiry now (Expiry,
	// Unix nanoseconds on P's clock), or Err when P holds no such request.
	MsgLease
	// MsgClaim: D is about to read request ReqID into its ranks Ranks (one
	// load attempt, Xfer). P accepts one claim per decode rank while the
	// hold lives; reads are posted only after an accepting MsgClaimed.
	MsgClaim
	// MsgClaimed: P's answer to a claim: the hold's expiry (Expiry), or Err
	// when there is no such hold or another load claimed those ranks.
	MsgClaimed
)

// Message is one control message. Fields not used by a type are zero.
//
// Every message D sends about a request carries the request's Grant (the
// token P issued with its kv_transfer_params): P acts on none whose grant
// does not match a hold it made, so a message for a request of an earlier
// incarnation, or of another D, or forged, changes nothing. Xfer is D's id
// of one load attempt; P echoes it in MsgStaged and MsgLease, and D routes
// those answers by it (never by request id alone, which two P instances may
// share).
type Message struct {
	Type      MsgType
	ReqID     string
	Grant     uint64
	Xfer      uint64
	Expiry    int64 // MsgLease
	DRank     int
	PRank     int // MsgStaged: the answering P rank
	Consumers int
	Part      int
	Parts     int
	Offset    int64 // MsgStage: the D rank's area in P's staging buffer
	Reply     []byte
	Steps     []plan.Step
	Err       string // MsgStaged: the gather failed; MsgLease: no such hold
	// Retry (MsgStaged with Err): P's staging pool is full now; ask again.
	Retry bool
	// Ranks (MsgClaim): the decode ranks the load fills.
	Ranks []int
}

const (
	msgMagic    = 0xB7
	maxReqID    = 256
	maxSteps    = 1 << 16
	maxReplyLen = 4096
	maxErrLen   = 1024
	maxRanks    = 1 << 12
)

// AppendMessage encodes m.
func AppendMessage(b []byte, m *Message) []byte {
	b = append(b, msgMagic, byte(m.Type))
	b = appendString(b, m.ReqID)
	b = binary.AppendUvarint(b, m.Grant)
	b = binary.AppendUvarint(b, m.Xfer)
	b = binary.AppendVarint(b, m.Expiry)
	b = binary.AppendUvarint(b, uint64(m.DRank))
	b = binary.AppendUvarint(b, uint64(m.PRank))
	b = binary.AppendUvarint(b, uint64(m.Consumers))
	b = binary.AppendUvarint(b, uint64(m.Part))
	b = binary.AppendUvarint(b, uint64(m.Parts))
	b = binary.AppendUvarint(b, uint64(m.Offset))
	b = appendString(b, string(m.Reply))
	b = appendString(b, m.Err)
	retry := byte(0)
	if m.Retry {
		retry = 1
	}
	b = append(b, retry)
	b = binary.AppendUvarint(b, uint64(len(m.Steps)))
	for _, s := range m.Steps {
		b = append(b, byte(s.Kind))
		for _, v := range [...]int64{int64(s.Src.Pool), int64(s.Src.Slot), s.SrcOff, int64(s.Dst.Pool), int64(s.Dst.Slot), s.DstOff, s.Len, int64(s.Rows), int64(s.Cols), int64(s.ItemBytes)} {
			b = binary.AppendVarint(b, v)
		}
	}
	b = binary.AppendUvarint(b, uint64(len(m.Ranks)))
	for _, r := range m.Ranks {
		b = binary.AppendUvarint(b, uint64(r))
	}
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

type msgReader struct {
	b   []byte
	err error
}

func (r *msgReader) uvarint(limit uint64) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 || v > limit {
		r.err = fmt.Errorf("%w: bad or out-of-range varint", ErrMessage)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *msgReader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = fmt.Errorf("%w: bad varint", ErrMessage)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *msgReader) str(limit int) string {
	n := int(r.uvarint(uint64(limit)))
	if r.err != nil {
		return ""
	}
	if n > len(r.b) {
		r.err = fmt.Errorf("%w: truncated string", ErrMessage)
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

// DecodeMessage decodes a message. Any input gives a message or an error.
func DecodeMessage(b []byte) (*Message, error) {
	if len(b) < 2 || b[0] != msgMagic {
		return nil, fmt.Errorf("%w: no magic", ErrMessage)
	}
	m := &Message{Type: MsgType(b[1])}
	if m.Type < MsgDone || m.Type > MsgClaimed {
		return nil, fmt.Errorf("%w: type %d", ErrMessage, b[1])
	}
	r := &msgReader{b: b[2:]}
	m.ReqID = r.str(maxReqID)
	m.Grant = r.uvarint(^uint64(0))
	m.Xfer = r.uvarint(^uint64(0))
	m.Expiry = r.varint()
	m.DRank = int(r.uvarint(1 << 20))
	m.PRank = int(r.uvarint(1 << 20))
	m.Consumers = int(r.uvarint(1 << 20))
	m.Part = int(r.uvarint(1 << 20))
	m.Parts = int(r.uvarint(1 << 20))
	m.Offset = int64(r.uvarint(1 << 50))
	if reply := r.str(maxReplyLen); reply != "" {
		m.Reply = []byte(reply)
	}
	m.Err = r.str(maxErrLen)
	if r.err == nil {
		if len(r.b) == 0 || r.b[0] > 1 {
			return nil, fmt.Errorf("%w: bad retry flag", ErrMessage)
		}
		m.Retry = r.b[0] == 1
		r.b = r.b[1:]
	}
	n := int(r.uvarint(maxSteps))
	if r.err == nil && n > len(r.b) { // every step takes at least 11 bytes
		return nil, fmt.Errorf("%w: %d steps in %d bytes", ErrMessage, n, len(r.b))
	}
	for i := 0; i < n && r.err == nil; i++ {
		if len(r.b) == 0 {
			r.err = fmt.Errorf("%w: truncated step", ErrMessage)
			break
		}
		s := plan.Step{Kind: plan.StepKind(r.b[0])}
		r.b = r.b[1:]
		var v [10]int64
		for j := range v {
			v[j] = r.varint()
		}
		s.Src, s.SrcOff = plan.Region{Pool: int(v[0]), Slot: int(v[1])}, v[2]
		s.Dst, s.DstOff = plan.Region{Pool: int(v[3]), Slot: int(v[4])}, v[5]
		s.Len, s.Rows, s.Cols, s.ItemBytes = v[6], int(v[7]), int(v[8]), int(v[9])
		if s.Kind != plan.StepCopy && s.Kind != plan.StepTranspose {
			r.err = fmt.Errorf("%w: step kind %d", ErrMessage, s.Kind)
		}
		m.Steps = append(m.Steps, s)
	}
	nr := int(r.uvarint(maxRanks))
	if r.err == nil && nr > len(r.b) {
		return nil, fmt.Errorf("%w: %d ranks in %d bytes", ErrMessage, nr, len(r.b))
	}
	for i := 0; i < nr && r.err == nil; i++ {
		m.Ranks = append(m.Ranks, int(r.uvarint(1<<20)))
	}
	if r.err != nil {
		return nil, r.err
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrMessage, len(r.b))
	}
	return m, nil
}
