package session

import (
	"errors"
	"testing"

	"pgregory.net/rapid"
)

// modelReq is the model's view of one request: the simplest bookkeeping
// that says what the machine must do.
type modelReq struct {
	state  State
	expiry Time // D's clock; 0: none
	lastHB Time // last heartbeat the shell sent (or acceptance)
	answer Time
}

// TestMachineAgainstModel drives the machine with random operations and
// checks it against the model: states move only forward and final states
// never change; leases never shorten; a request whose lease is within the
// margin is never allowed to post and fails at the next Ready; a silent
// peer fails its requests; every live request with a lease gets a
// heartbeat once an interval has passed, never two within an interval;
// Ready changes nothing.
func TestMachineAgainstModel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		cfg := MachineConfig{
			HeartbeatInterval: Time(rapid.IntRange(1, 50).Draw(t, "interval")),
			LeaseMargin:       Time(rapid.IntRange(0, 20).Draw(t, "margin")),
			SuspectAfter:      Time(rapid.IntRange(0, 200).Draw(t, "suspect")),
		}
		m := NewMachine(cfg)
		model := map[Key]*modelReq{}
		now := Time(1000)
		next := Key(1)
		keys := func() []Key {
			var ks []Key
			for k := range model {
				ks = append(ks, k)
			}
			return ks
		}
		pick := func(t *rapid.T) (Key, bool) {
			ks := keys()
			if len(ks) == 0 {
				return 0, false
			}
			return rapid.SampledFrom(ks).Draw(t, "key"), true
		}
		t.Repeat(map[string]func(*rapid.T){
			"accept": func(t *rapid.T) {
				var exp Time
				if rapid.Bool().Draw(t, "lease") {
					exp = now + Time(rapid.IntRange(0, 300).Draw(t, "ttl"))
				}
				if err := m.Accept(next, "p", exp, now); err != nil {
					t.Fatal(err)
				}
				if err := m.Accept(next, "p", exp, now); err == nil {
					t.Fatal("accepted twice")
				}
				model[next] = &modelReq{state: Accepted, expiry: exp, lastHB: now, answer: now}
				next++
			},
			"time": func(t *rapid.T) { now += Time(rapid.IntRange(0, 40).Draw(t, "dt")) },
			"to": func(t *rapid.T) {
				k, ok := pick(t)
				if !ok {
					t.Skip()
				}
				s := rapid.SampledFrom([]State{Handshaking, Loading, Done, Failed}).Draw(t, "state")
				r := model[k]
				allowed := map[State]bool{Handshaking: r.state == Accepted, Loading: r.state == Accepted || r.state == Handshaking,
					Done: r.state == Loading, Failed: !r.state.final()}[s]
				err := m.To(k, s, "test")
				if (err == nil) != allowed {
					t.Fatalf("%d: %s -> %s: err %v, allowed %v", k, r.state, s, err, allowed)
				}
				if allowed {
					r.state = s
				}
			},
			"lease": func(t *rapid.T) {
				k, ok := pick(t)
				if !ok {
					t.Skip()
				}
				exp := now + Time(rapid.IntRange(-100, 300).Draw(t, "ttl"))
				m.Lease(k, exp, now)
				if r := model[k]; !r.state.final() {
					r.expiry = max(r.expiry, exp)
					r.answer = now
				}
			},
			"nohold": func(t *rapid.T) {
				k, ok := pick(t)
				if !ok {
					t.Skip()
				}
				m.NoHold(k)
				if r := model[k]; !r.state.final() {
					r.state = Failed
				}
			},
			"forget": func(t *rapid.T) {
				k, ok := pick(t)
				if !ok {
					t.Skip()
				}
				m.Forget(k)
				delete(model, k)
			},
			"ready": func(t *rapid.T) {
				rd := m.Ready(now)
				if again := m.Ready(now); !equalReady(rd, again) {
					t.Fatalf("Ready is not pure: %+v then %+v", rd, again)
				}
				in := func(ks []Key, k Key) bool {
					for _, x := range ks {
						if x == k {
							return true
						}
					}
					return false
				}
				for k, r := range model {
					live := !r.state.final() && r.expiry != 0
					expired := live && now >= r.expiry-cfg.LeaseMargin
					suspect := live && !expired && cfg.SuspectAfter > 0 && now-r.answer >= cfg.SuspectAfter
					due := live && !expired && !suspect && now-r.lastHB >= cfg.HeartbeatInterval
					if in(rd.Expired, k) != expired || in(rd.Suspect, k) != suspect || in(rd.Heartbeats, k) != due {
						t.Fatalf("%d (%+v) at %d: expired %v suspect %v heartbeat %v; ready %+v", k, *r, now, expired, suspect, due, rd)
					}
					err := m.CheckPost(k, now)
					if expired && !errors.Is(err, ErrLeaseExpired) {
						t.Fatalf("%d: lease expired at %d (margin %d), now %d, CheckPost %v", k, r.expiry, cfg.LeaseMargin, now, err)
					}
					if (err == nil) != (!r.state.final() && !expired) {
						t.Fatalf("%d in %s: CheckPost %v", k, r.state, err)
					}
				}
				m.Advance(rd)
				for _, k := range rd.Heartbeats {
					model[k].lastHB = now
				}
				for _, k := range append(rd.Expired, rd.Suspect...) {
					model[k].state = Failed
				}
			},
		})
		// The machine agrees with the model on every state.
		for k, r := range model {
			s, _, ok := m.State(k)
			if !ok || s != r.state {
				t.Fatalf("%d: machine %s (%v), model %s", k, s, ok, r.state)
			}
		}
		if m.Len() != len(model) {
			t.Fatalf("machine knows %d requests, model %d", m.Len(), len(model))
		}
	})
}

func equalReady(a, b Ready) bool {
	eq := func(x, y []Key) bool {
		if len(x) != len(y) {
			return false
		}
		for i := range x {
			if x[i] != y[i] {
				return false
			}
		}
		return true
	}
	return a.Now == b.Now && eq(a.Heartbeats, b.Heartbeats) && eq(a.Expired, b.Expired) && eq(a.Suspect, b.Suspect)
}

// TestRangeSet: random allocations and frees never overlap, stay inside
// the pool, are aligned, and a second free of a range is an error.
func TestRangeSet(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		s := &rangeSet{size: int64(rapid.IntRange(0, 1<<14).Draw(t, "size"))}
		held := map[int64]int64{}
		t.Repeat(map[string]func(*rapid.T){
			"alloc": func(t *rapid.T) {
				n := int64(rapid.IntRange(1, 3000).Draw(t, "n"))
				off, ok := s.alloc(n)
				if !ok {
					// Refused: then no aligned gap of that size exists.
					return
				}
				if off%poolAlign != 0 || off < 0 || off+n > s.size {
					t.Fatalf("range [%d, +%d) in a pool of %d", off, n, s.size)
				}
				for o, m := range held {
					if off < o+alignUp(m) && o < off+alignUp(n) {
						t.Fatalf("[%d, +%d) overlaps [%d, +%d)", off, n, o, m)
					}
				}
				held[off] = n
			},
			"free": func(t *rapid.T) {
				if len(held) == 0 {
					t.Skip()
				}
				var offs []int64
				for o := range held {
					offs = append(offs, o)
				}
				o := rapid.SampledFrom(offs).Draw(t, "off")
				if err := s.free(o); err != nil {
					t.Fatal(err)
				}
				delete(held, o)
				if err := s.free(o); !errors.Is(err, ErrStaging) {
					t.Fatalf("second free: %v", err)
				}
			},
		})
		var want int64
		for _, n := range held {
			want += alignUp(n)
		}
		if s.inUse() != want {
			t.Fatalf("in use %d, want %d", s.inUse(), want)
		}
	})
}
