package ucx

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// rssKiB is the resident size this process has mapped in the mapping of
// /proc/self/smaps that contains addr: pages whose page table entries are
// filled in this mapping.
func rssKiB(t *testing.T, addr uintptr) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Skipf("no smaps: %v", err)
	}
	defer f.Close()
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if lo, hi, ok := strings.Cut(strings.Fields(line)[0], "-"); ok && !strings.HasSuffix(strings.Fields(line)[0], ":") {
			a, err1 := strconv.ParseUint(lo, 16, 64)
			b, err2 := strconv.ParseUint(hi, 16, 64)
			in = err1 == nil && err2 == nil && uint64(addr) >= a && uint64(addr) < b
			continue
		}
		if in && strings.HasPrefix(line, "Rss:") {
			n, err := strconv.ParseInt(strings.Fields(line)[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no mapping holds %#x", addr)
	return 0
}

// waitPrefaults waits until the process's prefaulter has nothing queued.
func waitPrefaults(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(time.Minute) // a hang guard
	for time.Now().Before(deadline) {
		prefaults.mu.Lock()
		idle := !prefaults.running
		prefaults.mu.Unlock()
		if idle {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("prefaults still running after a minute")
}

// Importing a peer's range that maps here populates this process's page
// tables for it in the background (its mapping's Rss reaches the range's
// size before any copy touched it); with NoPrefault the mapping stays
// unpopulated until copies fault it in.
func TestPrefaultPopulatesMappedRange(t *testing.T) {
	const size = 8 << 20
	for _, tc := range []struct {
		name       string
		noPrefault bool
	}{{"prefault", false}, {"no-prefault", true}} {
		t.Run(tc.name, func(t *testing.T) {
			x := newPair(t, Config{UCX: shmTLS(), NoPrefault: tc.noPrefault})
			r := importRemote(t, x.dp, alloc(t, x.P, size))
			if r.mapped == nil {
				t.Skip("the range did not map here (no shared-memory path)")
			}
			waitPrefaults(t)
			rss := rssKiB(t, uintptr(r.mapped))
			want := int64(size / 1024)
			if tc.noPrefault && rss >= want {
				t.Fatalf("without prefault the mapping holds %d KiB of %d before any copy", rss, want)
			}
			if !tc.noPrefault && rss < want {
				t.Fatalf("after prefault the mapping holds %d KiB, want the range's %d", rss, want)
			}
			t.Logf("%d KiB resident of %d", rss, want)
		})
	}
}
