package ratelog

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Limiter lets burst records through at once and then one per interval.
type Limiter struct {
	lim        *rate.Limiter
	suppressed atomic.Int64
}

// New returns a limiter of one record per interval after a burst.
func New(interval time.Duration, burst int) *Limiter {
	return &Limiter{lim: rate.NewLimiter(rate.Every(interval), burst)}
}

// Log writes the record when the limiter allows it, with a "suppressed"
// attribute counting the records dropped since the last one written;
// otherwise it counts it. It reports whether it wrote.
func (l *Limiter) Log(log *slog.Logger, level slog.Level, msg string, args ...any) bool {
	return l.LogAt(time.Now(), log, level, msg, args...)
}

// LogAt is Log on the caller's clock.
func (l *Limiter) LogAt(now time.Time, log *slog.Logger, level slog.Level, msg string, args ...any) bool {
	if !l.lim.AllowN(now, 1) {
		l.suppressed.Add(1)
		return false
	}
	if n := l.suppressed.Swap(0); n > 0 {
		args = append(args, "suppressed", n)
	}
	log.Log(context.Background(), level, msg, args...)
	return true
}

// Suppressed is the number of records dropped since the last one written.
func (l *Limiter) Suppressed() int64 { return l.suppressed.Load() }
