package zmqchan

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// bytesString draws an arbitrary byte string (not only UTF-8) of at most n
// bytes.
func bytesString(n int) *rapid.Generator[string] {
	return rapid.Custom(func(t *rapid.T) string {
		return string(rapid.SliceOfN(rapid.Byte(), 0, n).Draw(t, "bytes"))
	})
}

func hashGen() *rapid.Generator[Hash] {
	return rapid.Custom(func(t *rapid.T) Hash {
		var h Hash
		copy(h[:], rapid.SliceOfN(rapid.Byte(), HashLen, HashLen).Draw(t, "hash"))
		return h
	})
}

func requestGen() *rapid.Generator[Request] {
	return rapid.Custom(func(t *rapid.T) Request {
		return Request{
			Version:    ProtocolVersion,
			ID:         rapid.Uint64().Draw(t, "id"),
			Rank:       rapid.IntRange(RankAll, math.MaxInt32).Draw(t, "rank"),
			EngineID:   bytesString(MaxEngineIDLen).Draw(t, "engine"),
			CompatHash: hashGen().Draw(t, "hash"),
		}
	})
}

func replyGen() *rapid.Generator[Reply] {
	return rapid.Custom(func(t *rapid.T) Reply {
		r := Reply{
			Version:    ProtocolVersion,
			Status:     Status(rapid.IntRange(0, int(maxStatus)).Draw(t, "status")),
			RequestID:  rapid.Uint64().Draw(t, "id"),
			EngineID:   bytesString(MaxEngineIDLen).Draw(t, "engine"),
			DPIndex:    rapid.IntRange(0, math.MaxUint32).Draw(t, "dp"),
			CompatHash: hashGen().Draw(t, "hash"),
			Summary: rapid.MapOfN(bytesString(MaxSummaryKeyLen), bytesString(MaxSummaryValueLen),
				0, 12).Draw(t, "summary"),
			Timestamp: rapid.Int64().Draw(t, "ts"),
			Message:   bytesString(300).Draw(t, "msg"),
			Payload:   rapid.SliceOfN(rapid.Byte(), 0, 2048).Draw(t, "payload"),
		}
		// The decoder returns nil for empty collections.
		if len(r.Summary) == 0 {
			r.Summary = nil
		}
		if len(r.Payload) == 0 {
			r.Payload = nil
		}
		return r
	})
}

func TestRequestRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		want := requestGen().Draw(t, "req")
		b, err := AppendRequest(nil, &want)
		if err != nil {
			t.Fatalf("encode: %v", err)
		}
		got, err := DecodeRequest(b)
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
		}
	})
}

func TestReplyRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		want := replyGen().Draw(t, "reply")
		prefix := rapid.SliceOfN(rapid.Byte(), 0, 8).Draw(t, "prefix")
		b, err := AppendReply(bytes.Clone(prefix), &want)
		if err != nil {
			t.Fatalf("encode: %v", err)
		}
		if !bytes.Equal(b[:len(prefix)], prefix) {
			t.Fatalf("AppendReply changed dst's prefix")
		}
		got, err := DecodeReply(b[len(prefix):])
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
		}
		// Canonical: re-encoding gives the same bytes.
		b2, err := AppendReply(nil, &got)
		if err != nil || !bytes.Equal(b2, b[len(prefix):]) {
			t.Fatalf("re-encoding differs (err %v)", err)
		}
	})
}

// Every strict prefix of a valid encoding is malformed, never a panic.
func TestDecodeTruncated(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		req := requestGen().Draw(t, "req")
		rep := replyGen().Draw(t, "reply")
		rb, _ := AppendRequest(nil, &req)
		pb, _ := AppendReply(nil, &rep)
		for n := range len(rb) {
			if _, err := DecodeRequest(rb[:n]); !errors.Is(err, ErrMalformed) {
				t.Fatalf("request truncated to %d/%d bytes: err %v, want ErrMalformed", n, len(rb), err)
			}
		}
		for n := range len(pb) {
			if _, err := DecodeReply(pb[:n]); !errors.Is(err, ErrMalformed) {
				t.Fatalf("reply truncated to %d/%d bytes: err %v, want ErrMalformed", n, len(pb), err)
			}
		}
	})
}

func validReply() Reply {
	return Reply{
		Version: ProtocolVersion, RequestID: 7, EngineID: "p0", DPIndex: 1,
		Summary: map[string]string{"a": "1", "b": "2"}, Timestamp: 42, Payload: []byte("meta"),
	}
}

// replyOffsets returns the offsets of fields of an encoding of validReply.
const (
	offStatus   = prefixLen
	offSummaryN = prefixLen + 1 + 8 + 4 + 8 + HashLen + 2 + len("p0")
	offKeyA     = offSummaryN + 2
	offKeyB     = offKeyA + 2 + 1 + 2 + 1
)

func TestDecodeReplyRejects(t *testing.T) {
	good, err := AppendReply(nil, ptr(validReply()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeReply(good); err != nil {
		t.Fatalf("valid reply: %v", err)
	}
	edit := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	tests := []struct {
		name, reason string
		b            []byte
	}{
		{"empty", "shorter than", nil},
		{"bad magic", "bad magic", edit(func(b []byte) []byte { b[0] = 'X'; return b })},
		{"request magic", "bad magic", edit(func(b []byte) []byte { copy(b, requestMagic[:]); return b })},
		{"trailing byte", "payload length 4 but 5 bytes left", append(bytes.Clone(good), 0)},
		{"unknown status", "unknown status", edit(func(b []byte) []byte { b[offStatus] = 9; return b })},
		{"summary count lies", "exceeds the", edit(func(b []byte) []byte {
			binary.LittleEndian.PutUint16(b[offSummaryN:], 100)
			return b
		})},
		{"too many summary entries", "limit 128", edit(func(b []byte) []byte {
			binary.LittleEndian.PutUint16(b[offSummaryN:], MaxSummaryEntries+1)
			return b
		})},
		{"duplicate key", "strictly ascending", edit(func(b []byte) []byte { b[offKeyB+2] = 'a'; return b })},
		{"unsorted keys", "strictly ascending", edit(func(b []byte) []byte {
			b[offKeyA+2], b[offKeyB+2] = 'b', 'a'
			return b
		})},
		{"huge payload length", "exceeds limit", edit(func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[len(b)-4-4:], math.MaxUint32)
			return b
		})},
		{"huge string length", "limit 4096", edit(func(b []byte) []byte {
			binary.LittleEndian.PutUint16(b[len(b)-4-4-2:], 0xffff)
			return b
		})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeReply(tc.b)
			var me *MalformedError
			if !errors.As(err, &me) || !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v, want *MalformedError", err)
			}
			if !strings.Contains(me.Reason, tc.reason) || !strings.HasPrefix(err.Error(), "zmqchan: ") {
				t.Fatalf("err = %q, want it to mention %q", err, tc.reason)
			}
		})
	}
}

func TestDecodeVersionFirst(t *testing.T) {
	b, _ := AppendReply(nil, ptr(validReply()))
	binary.LittleEndian.PutUint16(b[4:], 2)
	b = b[:prefixLen+1] // the rest of a version-2 reply is unknown: not read
	r, err := DecodeReply(b)
	var vm *VersionMismatchError
	if !errors.As(err, &vm) || vm.Local != ProtocolVersion || vm.Remote != 2 || r.Version != 2 {
		t.Fatalf("DecodeReply = %+v, %v; want *VersionMismatchError 1 vs 2", r, err)
	}
	q, _ := AppendRequest(nil, &Request{Version: 3})
	if _, err := DecodeRequest(q[:prefixLen]); !errors.As(err, &vm) || vm.Remote != 3 {
		t.Fatalf("DecodeRequest err = %v, want version mismatch 1 vs 3", err)
	}
}

func TestDecodeRequestRejects(t *testing.T) {
	good, _ := AppendRequest(nil, &Request{Version: ProtocolVersion, Rank: 3, EngineID: "d0"})
	bad := bytes.Clone(good)
	binary.LittleEndian.PutUint32(bad[prefixLen+8:], uint32(0xfffffffe)) // rank -2
	for name, b := range map[string][]byte{
		"rank below -1":  bad,
		"trailing bytes": append(bytes.Clone(good), 1, 2),
		"reply magic":    append(replyMagic[:], good[4:]...),
	} {
		if _, err := DecodeRequest(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}
}

func TestEncodeLimits(t *testing.T) {
	long := func(n int) string { return strings.Repeat("x", n) }
	for name, r := range map[string]Request{
		"rank":   {Rank: -2},
		"engine": {EngineID: long(MaxEngineIDLen + 1)},
	} {
		if _, err := AppendRequest(nil, &r); err == nil {
			t.Errorf("request %s: encoded, want error", name)
		}
	}
	for name, r := range map[string]Reply{
		"status":        {Status: maxStatus + 1},
		"dp":            {DPIndex: -1},
		"engine":        {EngineID: long(MaxEngineIDLen + 1)},
		"message":       {Message: long(MaxMessageLen + 1)},
		"summary key":   {Summary: map[string]string{long(MaxSummaryKeyLen + 1): ""}},
		"summary value": {Summary: map[string]string{"k": long(MaxSummaryValueLen + 1)}},
		"payload":       {Payload: make([]byte, MaxPayloadLen+1)},
	} {
		if _, err := AppendReply(nil, &r); err == nil {
			t.Errorf("reply %s: encoded, want error", name)
		}
	}
	many := map[string]string{}
	for i := range MaxSummaryEntries + 1 {
		many[string(rune('a'+i%26))+strings.Repeat("z", i)] = ""
	}
	if _, err := AppendReply(nil, &Reply{Summary: many}); err == nil {
		t.Errorf("reply with %d summary entries encoded, want error", len(many))
	}
	// At the limits everything encodes and decodes.
	max := Reply{Version: ProtocolVersion, EngineID: long(MaxEngineIDLen), Message: long(MaxMessageLen),
		Summary: map[string]string{long(MaxSummaryKeyLen): long(MaxSummaryValueLen)}, DPIndex: math.MaxUint32}
	b, err := AppendReply(nil, &max)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := DecodeReply(b); err != nil || !reflect.DeepEqual(got, max) {
		t.Fatalf("decode at limits: %v", err)
	}
}

func FuzzDecodeRequest(f *testing.F) {
	for _, r := range []Request{
		{Version: ProtocolVersion},
		{Version: ProtocolVersion, ID: 1, Rank: RankAll, EngineID: "decode-0", CompatHash: Hash{1, 2}},
		{Version: 2, Rank: 5},
	} {
		b, _ := AppendRequest(nil, &r)
		f.Add(b)
	}
	f.Add([]byte("HXQ"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRequest(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrVersionMismatch) {
				t.Fatalf("error %v wraps no sentinel", err)
			}
			return
		}
		b2, err := AppendRequest(nil, &r)
		if err != nil {
			t.Fatalf("decoded %+v does not encode: %v", r, err)
		}
		if !bytes.Equal(b, b2) {
			t.Fatalf("decode->encode not canonical:\n in  %x\n out %x", b, b2)
		}
		r2, err := DecodeRequest(b2)
		if err != nil || !reflect.DeepEqual(r, r2) {
			t.Fatalf("decode->encode->decode unstable: %+v vs %+v (%v)", r, r2, err)
		}
	})
}

func FuzzDecodeReply(f *testing.F) {
	for _, r := range []Reply{
		{Version: ProtocolVersion},
		validReply(),
		{Version: ProtocolVersion, Status: StatusHandlerError, Message: "boom", Summary: map[string]string{"": "x"}},
		{Version: 9},
	} {
		b, _ := AppendReply(nil, &r)
		f.Add(b)
	}
	f.Add([]byte("HXR\x00\x01\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeReply(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrVersionMismatch) {
				t.Fatalf("error %v wraps no sentinel", err)
			}
			return
		}
		if len(r.Payload) > len(b) || len(r.Summary) > MaxSummaryEntries {
			t.Fatalf("decoded more than the input holds")
		}
		b2, err := AppendReply(nil, &r)
		if err != nil {
			t.Fatalf("decoded %+v does not encode: %v", r, err)
		}
		if !bytes.Equal(b, b2) {
			t.Fatalf("decode->encode not canonical:\n in  %x\n out %x", b, b2)
		}
		r2, err := DecodeReply(b2)
		if err != nil || !reflect.DeepEqual(r, r2) {
			t.Fatalf("decode->encode->decode unstable: %+v vs %+v (%v)", r, r2, err)
		}
	})
}

func TestEstimateClockOffset(t *testing.T) {
	sent := time.Unix(100, 0)
	recv := sent.Add(10 * time.Millisecond)
	server := sent.Add(5*time.Millisecond + 3*time.Second).UnixNano()
	off, unc := EstimateClockOffset(server, sent, recv)
	if off != 3*time.Second || unc != 5*time.Millisecond {
		t.Fatalf("offset %v ± %v, want 3s ± 5ms", off, unc)
	}
	// A server behind the client gives a negative offset.
	off, _ = EstimateClockOffset(sent.Add(-time.Minute).UnixNano(), sent, recv)
	if off != -time.Minute-5*time.Millisecond {
		t.Fatalf("offset %v, want -1m0.005s", off)
	}
	r := Reply{Timestamp: server, Sent: sent, Received: recv}
	if o, u := r.ClockOffset(); o != 3*time.Second || u != 5*time.Millisecond || r.RTT() != 10*time.Millisecond {
		t.Fatalf("Reply.ClockOffset = %v ± %v, RTT %v", o, u, r.RTT())
	}
}

func ptr[T any](v T) *T { return &v }
