package session

import (
	"context"
	"hash/fnv"
	"log/slog"
)

// Event is one transition of a request's lifecycle. Every transition is
// one slog record (LogEvent) whose attribute "event" names it and whose
// "request_id" is the id the client or the proxy gave the request, the
// same on P, D and the proxy, so one filter follows a request across
// instances. Instances add their own id ("instance_request_id"), the peer
// and, on failure, the phase and the cause.
type Event string

// The events, in the order a disaggregated request meets them. P logs
// received, prefilled, held, then released, expired or aborted; D logs
// received, handshaked, reads_posted, read_done (or failed), finished.
const (
	EventReceived    Event = "received"     // an instance accepted the request
	EventPrefilled   Event = "prefilled"    // P computed the positions it hands off
	EventHeld        Event = "held"         // P holds the state under a lease and granted it to D
	EventHandshaked  Event = "handshaked"   // D knows the peer's incarnation (fresh: it handshook now)
	EventReadsPosted Event = "reads_posted" // D planned the request and posts its reads
	EventReadDone    Event = "read_done"    // every D rank's reads completed
	EventReleased    Event = "released"     // P freed the hold: every consumer notified it
	EventExpired     Event = "expired"      // P freed the hold at lease expiry, without notification
	EventAborted     Event = "aborted"      // P freed the hold on an abort (D or the proxy gave up)
	EventFinished    Event = "finished"     // the instance answered the request
	EventFailed      Event = "failed"       // the request failed on this instance (phase, cause)
)

// Events lists every lifecycle event (docs and tests use it).
func Events() []Event {
	return []Event{EventReceived, EventPrefilled, EventHeld, EventHandshaked, EventReadsPosted, EventReadDone,
		EventReleased, EventExpired, EventAborted, EventFinished, EventFailed}
}

// The attribute keys of lifecycle records.
const (
	AttrEvent   = "event"
	AttrRequest = "request_id"
)

// RequestLog binds a request's ids to l: records logged through it carry
// request_id (the client's or proxy's id) and, when set,
// instance_request_id (this instance's id for it).
func RequestLog(l *slog.Logger, requestID, instanceID string) *slog.Logger {
	if instanceID == "" {
		return l.With(AttrRequest, requestID)
	}
	return l.With(AttrRequest, requestID, "instance_request_id", instanceID)
}

// LogEvent writes ev as one record through l (a RequestLog): at info,
// failed and expired at warn.
func LogEvent(l *slog.Logger, ev Event, attrs ...any) {
	level := slog.LevelInfo
	if ev == EventFailed || ev == EventExpired {
		level = slog.LevelWarn
	}
	l.Log(context.Background(), level, "request "+string(ev), append([]any{AttrEvent, string(ev)}, attrs...)...)
}

// Sampled reports whether request id is one of the 1 in n requests whose
// lifecycle is logged under SampleEvents: a hash of the id, so P, D and
// the proxy keep the same requests.
func Sampled(id string, n int) bool {
	if n <= 1 || id == "" {
		return true
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	return h.Sum32()%uint32(n) == 0
}

// SampleEvents wraps h so that lifecycle records (those with an "event"
// attribute) pass for 1 in n requests (Sampled) and every other record
// passes unchanged; n <= 1 returns h itself. For load: every transition
// of a sampled request is kept, so its story stays whole.
func SampleEvents(h slog.Handler, n int) slog.Handler {
	if n <= 1 {
		return h
	}
	return &sampler{h: h, n: n}
}

type sampler struct {
	h       slog.Handler
	n       int
	req     string // request_id bound with With, if any
	grouped bool   // attributes bound after WithGroup are not top-level
}

func (s *sampler) Enabled(ctx context.Context, l slog.Level) bool { return s.h.Enabled(ctx, l) }

func (s *sampler) Handle(ctx context.Context, r slog.Record) error {
	event, req := false, s.req
	if !s.grouped {
		r.Attrs(func(a slog.Attr) bool {
			switch a.Key {
			case AttrEvent:
				event = true
			case AttrRequest:
				req = a.Value.String()
			}
			return true
		})
	}
	if event && !Sampled(req, s.n) {
		return nil
	}
	return s.h.Handle(ctx, r)
}

func (s *sampler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *s
	c.h = s.h.WithAttrs(as)
	if !s.grouped {
		for _, a := range as {
			if a.Key == AttrRequest {
				c.req = a.Value.String()
			}
		}
	}
	return &c
}

func (s *sampler) WithGroup(name string) slog.Handler {
	c := *s
	c.h = s.h.WithGroup(name)
	c.grouped = c.grouped || name != ""
	return &c
}
