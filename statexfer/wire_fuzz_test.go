package statexfer_test

// Fuzz targets for the bytes a peer sends: handshake metadata (msgpack)
// and control messages. FuzzDecodeRankMetas and FuzzDecodeMessage (in
// statexfer_test.go) check sentinels and sanity; these add the round trip
// and bounds on what a decoded value may hold.

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/statexfer"
	"github.com/hybridxfer/hybridxfer/statexfer/plan"
	"github.com/hybridxfer/hybridxfer/statexfer/transport"
)

// fzRealMetas is the metadata real ranks publish: a hybrid preset at TP 2
// on the in-process transport.
func fzRealMetas(f *testing.F) []statexfer.RankMeta {
	f.Helper()
	m, err := groups.Preset("qwen3.5-0.8b", groups.PresetOptions{})
	if err != nil {
		f.Fatal(err)
	}
	var ms []statexfer.RankMeta
	for rank := range 2 {
		g, err := groups.NewGeometry(m, groups.InstanceConfig{TP: 2}, rank)
		if err != nil {
			f.Fatal(err)
		}
		tr := transport.NewInproc(transport.Handlers{})
		f.Cleanup(func() { tr.Close() })
		l, err := statexfer.NewLocal(tr, g, []int{4}, 1024, statexfer.MemoryConfig{})
		if err != nil {
			f.Fatal(err)
		}
		ms = append(ms, l.Meta("prefill-0", 1, tr.Address(), time.Unix(1750000000, 42)))
	}
	return ms
}

// FuzzRankMetasRoundTrip: accepted metadata holds no more elements or
// bytes than the input (bounded allocation), re-encodes, and decodes to
// the same value; errors wrap ErrMetadata.
func FuzzRankMetasRoundTrip(f *testing.F) {
	real := fzRealMetas(f)
	for _, ms := range [][]statexfer.RankMeta{
		real, real[:1], nil,
		{{Version: statexfer.MetadataVersion, TP: 1, Address: []byte{1}, Regions: []statexfer.RegionMeta{{Pool: plan.StagingPool, Len: 8}}}},
	} {
		b, err := statexfer.EncodeRankMetas(ms)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0x82, 0xa1, 'v', 0x02, 0xa1, 'm', 0xdd, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		ms, err := statexfer.DecodeRankMetas(b)
		if err != nil {
			if !errors.Is(err, statexfer.ErrMetadata) {
				t.Fatalf("error %v does not wrap ErrMetadata", err)
			}
			return
		}
		held := len(ms)
		for _, m := range ms {
			held += len(m.Regions) + len(m.Groups) + len(m.Address) + len(m.EngineID) + len(m.BootID)
			for _, r := range m.Regions {
				held += len(r.Key)
			}
		}
		if held > len(b) {
			t.Fatalf("%d input bytes decoded to %d elements and bytes", len(b), held)
		}
		enc, err := statexfer.EncodeRankMetas(ms)
		if err != nil {
			t.Fatalf("accepted metadata does not encode: %v", err)
		}
		again, err := statexfer.DecodeRankMetas(enc)
		if err != nil {
			t.Fatalf("re-encoded metadata refused: %v", err)
		}
		if !reflect.DeepEqual(again, ms) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", again, ms)
		}
		if enc2, err := statexfer.EncodeRankMetas(again); err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding unstable (%v)", err)
		}
	})
}

// FuzzMessageBounds: an accepted message is no larger than its input
// (re-encoded, with minimal varints, it takes at most len(b) bytes; its
// steps and ranks are bounded by the input), it round-trips, its
// encoding's strict prefixes and any extension are refused, and errors
// wrap ErrMessage.
func FuzzMessageBounds(f *testing.F) {
	ft := []*statexfer.Message{
		{Type: statexfer.MsgDone, ReqID: "r1", Grant: 1 << 63, Xfer: 9, Consumers: 2},
		{Type: statexfer.MsgStage, ReqID: "r2", Part: 1, Parts: 3, Offset: 1 << 40, Reply: []byte("HXU1addr"),
			Steps: []plan.Step{{Kind: plan.StepCopy, Src: plan.Region{Pool: 1, Slot: 2}, SrcOff: 64, Dst: plan.Region{Pool: plan.StagingPool}, Len: 4096},
				{Kind: plan.StepTranspose, Len: -1, Rows: 4, Cols: 8, ItemBytes: 2}}},
		{Type: statexfer.MsgStaged, ReqID: "r3", DRank: 1, PRank: 1 << 20, Err: "staging full", Retry: true},
		{Type: statexfer.MsgLease, ReqID: "r4", Expiry: -5},
		{Type: statexfer.MsgClaim, ReqID: "r5", Grant: 7, Xfer: 8, Ranks: []int{0, 1, 1 << 20}},
		{Type: statexfer.MsgClaimed, Expiry: 1 << 62},
	}
	for _, m := range ft {
		f.Add(statexfer.AppendMessage(nil, m))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := statexfer.DecodeMessage(b)
		if err != nil {
			if !errors.Is(err, statexfer.ErrMessage) {
				t.Fatalf("error %v does not wrap ErrMessage", err)
			}
			return
		}
		enc := statexfer.AppendMessage(nil, m)
		if len(enc) > len(b) {
			t.Fatalf("%d input bytes decoded to a message of %d bytes", len(b), len(enc))
		}
		if 11*len(m.Steps)+len(m.Ranks)+len(m.ReqID)+len(m.Reply)+len(m.Err) > len(b) {
			t.Fatalf("%d input bytes hold %d steps, %d ranks and %d string bytes", len(b), len(m.Steps), len(m.Ranks),
				len(m.ReqID)+len(m.Reply)+len(m.Err))
		}
		again, err := statexfer.DecodeMessage(enc)
		if err != nil || !reflect.DeepEqual(again, m) {
			t.Fatalf("round trip: %+v vs %+v (%v)", again, m, err)
		}
		if _, err := statexfer.DecodeMessage(append(enc, 0)); err == nil {
			t.Fatal("a trailing byte was accepted")
		}
		if len(enc) <= 512 {
			for i := range enc {
				if _, err := statexfer.DecodeMessage(enc[:i]); err == nil {
					t.Fatalf("a %d-byte prefix of a %d-byte message decoded", i, len(enc))
				}
			}
		}
	})
}
