package hostmem

import (
	"errors"
	"strings"
	"testing"
)

const fakeMeminfo = `MemTotal:       24576000 kB
MemFree:        20000000 kB
MemAvailable:   22000000 kB
Buffers:          100000 kB
Shmem:             12345 kB
`

func fakeSource(meminfo string, shmFree int64) Source {
	return Source{
		Meminfo: func() ([]byte, error) { return []byte(meminfo), nil },
		ShmDir:  "/fake/shm",
		ShmFree: func(string) (int64, error) { return shmFree, nil },
	}
}

func TestParseMemAvailable(t *testing.T) {
	for in, want := range map[string]int64{
		fakeMeminfo:                  22000000 << 10,
		"MemAvailable: 0 kB\n":       0,
		"MemAvailable:\t7 kB":        7 << 10,
		"X: 1 kB\nMemAvailable: 5\n": 5,
	} {
		got, err := parseMemAvailable([]byte(in))
		if err != nil || got != want {
			t.Errorf("parse(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MemTotal: 1 kB\n", "MemAvailable: x kB\n", "MemAvailable: 1 TB\n", "MemAvailable: -1 kB\n", "MemAvailable: 99999999999999999 kB\n"} {
		if _, err := parseMemAvailable([]byte(in)); !errors.Is(err, ErrUnavailable) {
			t.Errorf("parse(%q): %v, want ErrUnavailable", in, err)
		}
	}
}

func TestCheck(t *testing.T) {
	const gib = int64(1) << 30
	s := fakeSource(fakeMeminfo, 12*gib)
	info, err := s.Available()
	if err != nil || info.MemAvailable != 22000000<<10 || info.ShmFree != 12*gib || info.ShmDir != "/fake/shm" {
		t.Fatalf("Available = %+v, %v", info, err)
	}
	if err := s.Check(10*gib, "small"); err != nil {
		t.Fatalf("10 GiB refused: %v", err)
	}
	what := "--num-blocks 100000000 x 37 KiB pages on 2 ranks"
	err = s.Check(100000000*37<<10*2, what)
	var tl *TooLargeError
	if !errors.Is(err, ErrTooLarge) || !errors.As(err, &tl) || tl.Limit != "MemAvailable" {
		t.Fatalf("huge: %v", err)
	}
	for _, sub := range []string{"hostmem: ", what, "7057.19 GiB", "MemAvailable is 20.98 GiB"} {
		if !strings.Contains(err.Error(), sub) {
			t.Errorf("message %q lacks %q", err, sub)
		}
	}
	// Fits RAM, not /dev/shm.
	err = s.Check(15*gib, "pool")
	if !errors.As(err, &tl) || tl.Limit != "free space of /fake/shm" || !strings.Contains(err.Error(), "12.00 GiB") {
		t.Fatalf("shm limit: %v", err)
	}
	// ShmDir "-" skips the file-system check.
	s.ShmDir = "-"
	if err := s.Check(15*gib, "pool"); err != nil {
		t.Fatalf("without shm check: %v", err)
	}
	bad := Source{Meminfo: func() ([]byte, error) { return nil, errors.New("boom") }}
	if err := bad.Check(1, "x"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("unreadable meminfo: %v", err)
	}
}

// TestAvailableReal reads this machine.
func TestAvailableReal(t *testing.T) {
	info, err := Available()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("MemAvailable %s, %s free %s", GiB(info.MemAvailable), info.ShmDir, GiB(info.ShmFree))
	if info.MemAvailable <= 0 || info.ShmFree < 0 {
		t.Fatalf("implausible %+v", info)
	}
	if err := Check(1<<62, "an exabyte"); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Check(4 EiB): %v", err)
	}
	if err := Check(4096, "a page"); err != nil {
		t.Fatalf("Check(4 KiB): %v", err)
	}
}
