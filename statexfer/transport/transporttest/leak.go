package transporttest

import (
	"bytes"
	"runtime"
	"strings"
	"testing"
	"time"
)

// goroutines returns the stacks of all goroutines, keyed by the goroutine
// header line ("goroutine 12 [running]:" minus the state).
func goroutines() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	out := make(map[string]string)
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		s := string(g)
		head, _, _ := strings.Cut(s, "\n")
		id, _, _ := strings.Cut(head, " [")
		out[id] = s
	}
	return out
}

// leakCheck records the goroutines alive now; the returned function fails
// the test if goroutines started since are still alive after settleWait
// (checking often, so it returns as soon as they are gone).
func leakCheck(t *testing.T) func() {
	before := goroutines()
	return func() {
		t.Helper()
		deadline := time.Now().Add(settleWait)
		for {
			var extra []string
			for id, stack := range goroutines() {
				if _, ok := before[id]; !ok {
					extra = append(extra, stack)
				}
			}
			if len(extra) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d goroutines leaked:\n\n%s", len(extra), strings.Join(extra, "\n\n"))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}
