package zmqchan

// This file is the wire format of the handshake. It is pure Go (no zmq
// import) so that it can be fuzzed on its own and reused by any other carrier
// of the same bytes. The layout is documented in doc.go; keep both in sync.

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"slices"
	"time"
)

// ProtocolVersion is the version of the handshake protocol this package
// speaks. It is bumped whenever the layout after the common prefix (magic and
// version) of a request or a reply changes.
const ProtocolVersion uint16 = 1

// Limits enforced by both the encoder (which refuses to produce a frame the
// decoder would reject) and the decoder (which rejects a frame before it
// allocates for it).
const (
	MaxEngineIDLen     = 256      // bytes of an engine id
	MaxSummaryEntries  = 128      // entries of Reply.Summary
	MaxSummaryKeyLen   = 128      // bytes of a Summary key
	MaxSummaryValueLen = 1024     // bytes of a Summary value
	MaxMessageLen      = 4096     // bytes of Reply.Message
	MaxPayloadLen      = 64 << 20 // bytes of Reply.Payload (level 2)

	// MaxRequestLen bounds an encoded request; the server's socket drops
	// larger messages before they reach the decoder.
	MaxRequestLen = requestFixedLen + MaxEngineIDLen
	// MaxReplyLen bounds an encoded reply; the client's socket drops larger
	// messages before they reach the decoder.
	MaxReplyLen = replyFixedLen + MaxEngineIDLen +
		MaxSummaryEntries*(4+MaxSummaryKeyLen+MaxSummaryValueLen) +
		MaxMessageLen + MaxPayloadLen
)

// RankAll in Request.Rank asks for the metadata of every TP rank.
const RankAll = -1

var (
	requestMagic = [4]byte{'H', 'X', 'Q', 0}
	replyMagic   = [4]byte{'H', 'X', 'R', 0}
)

const (
	prefixLen = 4 + 2 // magic, version

	// magic, version, request id, rank, compat hash, engine id length.
	requestFixedLen = prefixLen + 8 + 4 + HashLen + 2
	// magic, version, status, request id, dp index, timestamp, compat hash,
	// engine id length, summary count, message length, payload length.
	replyFixedLen = prefixLen + 1 + 8 + 4 + 8 + HashLen + 2 + 2 + 2 + 4
)

// HashLen is the length of a compatibility hash.
const HashLen = 32

// Hash is a compatibility hash: a digest of everything in an engine's
// configuration that must agree between P and D for a transfer to be correct
// (model, dtypes, block sizes, layouts, ...). It is computed outside this
// package.
type Hash [HashLen]byte

// String returns the hash in lower-case hex.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// Status says how a server answered a request.
//
//go:generate go tool stringer -type=Status -linecomment
type Status uint8

// Statuses. Fetch turns every status but StatusOK into an error, so a *Reply
// returned by Fetch always has StatusOK.
const (
	// StatusOK: the handler ran and Payload holds its metadata.
	StatusOK Status = 0 // ok
	// StatusHandlerError: the handler returned an error (or panicked);
	// Message holds its text.
	StatusHandlerError Status = 1 // handler error
	// StatusVersionMismatch: the server does not speak the client's
	// protocol version. The reply is encoded in the server's version.
	StatusVersionMismatch Status = 2 // version mismatch
	// StatusBadRequest: the server could not decode the request.
	StatusBadRequest Status = 3 // bad request
	// StatusBusy: every handler slot and the queue were full.
	StatusBusy Status = 4 // busy

	maxStatus = StatusBusy
)

// Request asks a server for the metadata of one TP rank, or of all ranks.
type Request struct {
	// Version is the protocol version the client speaks. Fetch sets it to
	// ProtocolVersion when it is zero.
	Version uint16
	// ID identifies the request; the server echoes it in Reply.RequestID.
	// Fetch picks a random one when it is zero.
	ID uint64
	// Rank is the TP rank whose metadata is asked for, or RankAll (-1).
	Rank int
	// EngineID is the client's engine id. The server only logs it.
	EngineID string
	// CompatHash is the client's compatibility hash. Fetch requires the
	// reply to carry the same hash; the server logs a mismatch and does
	// not run its handler for it.
	CompatHash Hash
}

// Reply is a server's answer. Level 1 is every field but Payload; level 2,
// Payload, is opaque here (the metadata of the ranks, encoded elsewhere) and
// is only meant to be decoded once level 1 has been checked.
type Reply struct {
	// Version is the protocol version the server speaks.
	Version uint16
	// Status says whether the handler ran; see Status.
	Status Status
	// RequestID echoes Request.ID.
	RequestID uint64
	// EngineID is the server's engine id.
	EngineID string
	// DPIndex is the server's data-parallel index.
	DPIndex int
	// CompatHash is the server's compatibility hash.
	CompatHash Hash
	// Summary is a short human-readable account of the inputs of
	// CompatHash (for example "block_size": "16"), so that a client that
	// sees a different hash can say which fields differ.
	Summary map[string]string
	// Timestamp is the server's wall clock, in Unix nanoseconds, taken just
	// before the reply was encoded. See ClockOffset.
	Timestamp int64
	// Message is the handler's error text when Status is not StatusOK.
	Message string
	// Payload is the level-2 metadata.
	Payload []byte

	// Sent and Received are the client's clock just before the request was
	// sent and just after the reply arrived. Fetch sets them; they are not
	// on the wire. See ClockOffset.
	Sent, Received time.Time
}

// AppendRequest appends the encoding of r to dst.
func AppendRequest(dst []byte, r *Request) ([]byte, error) {
	if r.Rank < RankAll || r.Rank > math.MaxInt32 {
		return dst, fmt.Errorf("zmqchan: cannot encode request: rank %d out of range [-1, %d]", r.Rank, math.MaxInt32)
	}
	if len(r.EngineID) > MaxEngineIDLen {
		return dst, fmt.Errorf("zmqchan: cannot encode request: engine id is %d bytes, limit %d", len(r.EngineID), MaxEngineIDLen)
	}
	dst = slices.Grow(dst, requestFixedLen+len(r.EngineID))
	dst = append(dst, requestMagic[:]...)
	dst = binary.LittleEndian.AppendUint16(dst, r.Version)
	dst = binary.LittleEndian.AppendUint64(dst, r.ID)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(int32(r.Rank)))
	dst = append(dst, r.CompatHash[:]...)
	dst = appendString16(dst, r.EngineID)
	return dst, nil
}

// DecodeRequest decodes a request. A frame with the request magic but
// another version yields a *VersionMismatchError (with Remote set to the
// frame's version) and a Request with only Version set; every other defect
// yields a *MalformedError.
func DecodeRequest(b []byte) (Request, error) {
	var r Request
	v, err := decodePrefix(b, requestMagic, "request")
	if err != nil {
		return r, err
	}
	r.Version = v
	if v != ProtocolVersion {
		return r, &VersionMismatchError{Local: ProtocolVersion, Remote: v}
	}
	d := decoder{b: b, off: prefixLen, what: "request"}
	r.ID = d.u64("request id")
	r.Rank = int(int32(d.u32("rank")))
	d.hash(&r.CompatHash, "compat hash")
	r.EngineID = d.string16("engine id", MaxEngineIDLen)
	if err := d.finish(); err != nil {
		return Request{}, err
	}
	if r.Rank < RankAll {
		return Request{}, malformed("request", "rank %d is below -1", r.Rank)
	}
	return r, nil
}

// AppendReply appends the encoding of r to dst. Summary entries are written
// in ascending key order, so that equal replies encode to equal bytes.
func AppendReply(dst []byte, r *Reply) ([]byte, error) {
	if err := checkReply(r); err != nil {
		return dst, err
	}
	keys := make([]string, 0, len(r.Summary))
	n := replyFixedLen + len(r.EngineID) + len(r.Message) + len(r.Payload)
	for k, v := range r.Summary {
		keys = append(keys, k)
		n += 4 + len(k) + len(v)
	}
	slices.Sort(keys)

	dst = slices.Grow(dst, n)
	dst = append(dst, replyMagic[:]...)
	dst = binary.LittleEndian.AppendUint16(dst, r.Version)
	dst = append(dst, byte(r.Status))
	dst = binary.LittleEndian.AppendUint64(dst, r.RequestID)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(r.DPIndex))
	dst = binary.LittleEndian.AppendUint64(dst, uint64(r.Timestamp))
	dst = append(dst, r.CompatHash[:]...)
	dst = appendString16(dst, r.EngineID)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(keys)))
	for _, k := range keys {
		dst = appendString16(dst, k)
		dst = appendString16(dst, r.Summary[k])
	}
	dst = appendString16(dst, r.Message)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(r.Payload)))
	dst = append(dst, r.Payload...)
	return dst, nil
}

func checkReply(r *Reply) error {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("zmqchan: cannot encode reply: "+format, args...)
	}
	switch {
	case r.Status > maxStatus:
		return fail("unknown status %d", r.Status)
	case r.DPIndex < 0 || int64(r.DPIndex) > math.MaxUint32:
		return fail("dp index %d out of range [0, %d]", r.DPIndex, uint32(math.MaxUint32))
	case len(r.EngineID) > MaxEngineIDLen:
		return fail("engine id is %d bytes, limit %d", len(r.EngineID), MaxEngineIDLen)
	case len(r.Summary) > MaxSummaryEntries:
		return fail("summary has %d entries, limit %d", len(r.Summary), MaxSummaryEntries)
	case len(r.Message) > MaxMessageLen:
		return fail("message is %d bytes, limit %d", len(r.Message), MaxMessageLen)
	case len(r.Payload) > MaxPayloadLen:
		return fail("payload is %d bytes, limit %d", len(r.Payload), MaxPayloadLen)
	}
	for k, v := range r.Summary {
		if len(k) > MaxSummaryKeyLen {
			return fail("summary key %.32q... is %d bytes, limit %d", k, len(k), MaxSummaryKeyLen)
		}
		if len(v) > MaxSummaryValueLen {
			return fail("summary value of %q is %d bytes, limit %d", k, len(v), MaxSummaryValueLen)
		}
	}
	return nil
}

// DecodeReply decodes a reply. It checks the magic, then the version, before
// it reads anything else: a frame with the reply magic but another version
// yields a *VersionMismatchError (Remote set to the frame's version) and a
// Reply with only Version set. Every other defect yields a *MalformedError.
// DecodeReply checks the form of level 1 only; it does not compare hashes or
// engine ids (Fetch does) and it never looks into Payload, which aliases b.
func DecodeReply(b []byte) (Reply, error) {
	var r Reply
	v, err := decodePrefix(b, replyMagic, "reply")
	if err != nil {
		return r, err
	}
	r.Version = v
	if v != ProtocolVersion {
		return r, &VersionMismatchError{Local: ProtocolVersion, Remote: v}
	}
	d := decoder{b: b, off: prefixLen, what: "reply"}
	r.Status = Status(d.u8("status"))
	r.RequestID = d.u64("request id")
	r.DPIndex = int(d.u32("dp index"))
	r.Timestamp = int64(d.u64("timestamp"))
	d.hash(&r.CompatHash, "compat hash")
	r.EngineID = d.string16("engine id", MaxEngineIDLen)
	n := int(d.u16("summary count"))
	if d.err == nil && n > MaxSummaryEntries {
		d.fail("summary has %d entries, limit %d", n, MaxSummaryEntries)
	}
	if d.err == nil && n > 0 {
		// Each entry takes at least 4 bytes, so n is bounded by the input
		// as well as by MaxSummaryEntries.
		if 4*n > len(b)-d.off {
			d.fail("summary count %d exceeds the %d bytes left", n, len(b)-d.off)
		} else {
			r.Summary = make(map[string]string, n)
		}
	}
	prev := ""
	for i := 0; i < n && d.err == nil; i++ {
		k := d.string16("summary key", MaxSummaryKeyLen)
		val := d.string16("summary value", MaxSummaryValueLen)
		if d.err != nil {
			break
		}
		if i > 0 && k <= prev {
			d.fail("summary keys not strictly ascending at entry %d (%q after %q)", i, k, prev)
			break
		}
		r.Summary[k] = val
		prev = k
	}
	r.Message = d.string16("message", MaxMessageLen)
	pl := int(d.u32("payload length"))
	if d.err == nil {
		switch {
		case pl > MaxPayloadLen:
			d.fail("payload length %d exceeds limit %d", pl, MaxPayloadLen)
		case pl != len(b)-d.off:
			d.fail("payload length %d but %d bytes left", pl, len(b)-d.off)
		case pl > 0:
			r.Payload = b[d.off : d.off+pl : d.off+pl]
			d.off += pl
		}
	}
	if err := d.finish(); err != nil {
		return Reply{}, err
	}
	if r.Status > maxStatus {
		return Reply{}, malformed("reply", "unknown status %d", r.Status)
	}
	return r, nil
}

// decodePrefix checks the magic and returns the version.
func decodePrefix(b []byte, magic [4]byte, what string) (uint16, error) {
	if len(b) < prefixLen {
		return 0, malformed(what, "%d bytes, shorter than the %d-byte magic and version", len(b), prefixLen)
	}
	if [4]byte(b[:4]) != magic {
		return 0, malformed(what, "bad magic %q, want %q (not a hybridxfer handshake %s?)", b[:4], magic[:], what)
	}
	return binary.LittleEndian.Uint16(b[4:6]), nil
}

func appendString16(dst []byte, s string) []byte {
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(s)))
	return append(dst, s...)
}

// decoder reads fixed-size and length-prefixed fields, recording the first
// error; once failed, every read returns a zero value.
type decoder struct {
	b    []byte
	off  int
	what string
	err  error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = malformed(d.what, format, args...)
	}
}

func (d *decoder) take(n int, field string) []byte {
	if d.err != nil {
		return nil
	}
	if n > len(d.b)-d.off {
		d.fail("truncated at byte %d reading %s (%d bytes needed, %d left)", d.off, field, n, len(d.b)-d.off)
		return nil
	}
	p := d.b[d.off : d.off+n]
	d.off += n
	return p
}

func (d *decoder) u8(field string) uint8 {
	if p := d.take(1, field); p != nil {
		return p[0]
	}
	return 0
}

func (d *decoder) u16(field string) uint16 {
	if p := d.take(2, field); p != nil {
		return binary.LittleEndian.Uint16(p)
	}
	return 0
}

func (d *decoder) u32(field string) uint32 {
	if p := d.take(4, field); p != nil {
		return binary.LittleEndian.Uint32(p)
	}
	return 0
}

func (d *decoder) u64(field string) uint64 {
	if p := d.take(8, field); p != nil {
		return binary.LittleEndian.Uint64(p)
	}
	return 0
}

func (d *decoder) hash(h *Hash, field string) {
	if p := d.take(HashLen, field); p != nil {
		copy(h[:], p)
	}
}

func (d *decoder) string16(field string, limit int) string {
	n := int(d.u16(field + " length"))
	if d.err != nil {
		return ""
	}
	if n > limit {
		d.fail("%s is %d bytes, limit %d", field, n, limit)
		return ""
	}
	return string(d.take(n, field))
}

func (d *decoder) finish() error {
	if d.err == nil && d.off != len(d.b) {
		d.fail("%d trailing bytes after byte %d", len(d.b)-d.off, d.off)
	}
	return d.err
}
