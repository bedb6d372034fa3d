package ratelog

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestLimiterSuppressesAndCounts(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	l := New(time.Hour, 3) // nothing refills during the test
	wrote := 0
	for i := 0; i < 1000; i++ {
		if l.Log(log, slog.LevelWarn, "bad input", "i", i) {
			wrote++
		}
	}
	if wrote != 3 || strings.Count(buf.String(), "bad input") != 3 {
		t.Fatalf("wrote %d records:\n%s", wrote, buf.String())
	}
	if l.Suppressed() != 997 {
		t.Fatalf("suppressed %d, want 997", l.Suppressed())
	}
	// Once allowed again, the record carries the count and it resets.
	l.lim.SetBurst(1)
	l.lim.SetLimit(1e9)
	time.Sleep(time.Millisecond) // let a token accrue (not an assertion on time)
	buf.Reset()
	if !l.Log(log, slog.LevelWarn, "bad input") || !strings.Contains(buf.String(), "suppressed=997") || l.Suppressed() != 0 {
		t.Fatalf("after refill: %q, suppressed now %d", buf.String(), l.Suppressed())
	}
}
