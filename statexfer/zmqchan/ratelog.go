package zmqchan

import (
	"log/slog"
	"time"

	"github.com/hybridxfer/hybridxfer/internal/ratelog"
)

// warnKind is a class of per-request WARN lines; each class has its own
// rate limit, so that a flood of one kind does not hide the others.
type warnKind int

const (
	warnDropped    warnKind = iota // unroutable or oversized messages
	warnBusy                       // queue full
	warnVersion                    // client of another protocol version
	warnBadRequest                 // undecodable request, rank out of range
	warnHash                       // compatibility hash mismatch
	warnHandler                    // handler error
	warnAuth                       // CURVE client refused
	numWarnKinds
)

// Every class logs at most warnBurst lines at once and then one line per
// warnEvery; the next line logged says how many were suppressed.
const (
	warnBurst = 10
	warnEvery = time.Second
)

func newWarnLimiters() *[numWarnKinds]*ratelog.Limiter {
	var ls [numWarnKinds]*ratelog.Limiter
	for i := range ls {
		ls[i] = ratelog.New(warnEvery, warnBurst)
	}
	return &ls
}

// warn logs a per-request WARN line of class kind unless its rate limit is
// spent; a line logged after suppressed ones carries suppressed=N. The
// server's Clock drives the limit.
func (s *Server) warn(kind warnKind, msg string, args ...any) {
	s.warns[kind].LogAt(s.cfg.Clock(), s.log, slog.LevelWarn, msg, args...)
}
