package hostmem

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

var (
	// ErrTooLarge: the allocation does not fit this machine.
	ErrTooLarge = errors.New("hostmem: allocation does not fit this machine")
	// ErrUnavailable: the memory limits could not be read.
	ErrUnavailable = errors.New("hostmem: cannot read memory limits")
)

// DefaultShmDir is where UCX's POSIX shared memory lives.
const DefaultShmDir = "/dev/shm"

// Info is what the machine can give now, in bytes.
type Info struct {
	MemAvailable int64  // /proc/meminfo MemAvailable
	ShmDir       string // the shared-memory file system checked
	ShmFree      int64  // free bytes there (statfs f_bavail * f_bsize); -1 if not checked
}

// TooLargeError is a refused Check: What needs Need bytes but Limit names
// the resource that has only Have.
type TooLargeError struct {
	What  string
	Need  int64
	Limit string // "MemAvailable" or "free space of /dev/shm"
	Have  int64
}

func (e *TooLargeError) Error() string {
	what := e.What
	if what == "" {
		what = "allocation"
	}
	return fmt.Sprintf("hostmem: %s needs %s, but %s is %s: allocation does not fit this machine",
		what, GiB(e.Need), e.Limit, GiB(e.Have))
}

func (e *TooLargeError) Unwrap() error { return ErrTooLarge }

// GiB formats n bytes as GiB with two decimals ("3.45 GiB").
func GiB(n int64) string {
	return strconv.FormatFloat(float64(n)/(1<<30), 'f', 2, 64) + " GiB"
}

// Source reads the limits. The zero value reads /proc/meminfo and statfs
// of DefaultShmDir.
type Source struct {
	// Meminfo returns the content of /proc/meminfo; nil reads the file.
	Meminfo func() ([]byte, error)
	// ShmDir is the shared-memory file system; "" is DefaultShmDir, "-"
	// skips the check (ShmFree -1).
	ShmDir string
	// ShmFree returns the free bytes of dir; nil uses statfs.
	ShmFree func(dir string) (int64, error)
}

// Available returns the limits of this machine (Source{}.Available).
func Available() (Info, error) { return Source{}.Available() }

// Check refuses an allocation of need bytes that cannot fit this machine
// now: it returns a *TooLargeError (ErrTooLarge) when need exceeds
// MemAvailable or the free space of /dev/shm. what names the allocation in
// the message, e.g. "--num-blocks 100000000 x 37 KiB pages on 2 ranks".
func Check(need int64, what string) error { return Source{}.Check(need, what) }

// Check is the package's Check with this Source's readers.
func (s Source) Check(need int64, what string) error {
	info, err := s.Available()
	if err != nil {
		return err
	}
	return info.Check(need, what)
}

// Check compares need with the limits of info.
func (info Info) Check(need int64, what string) error {
	if need > info.MemAvailable {
		return &TooLargeError{What: what, Need: need, Limit: "MemAvailable", Have: info.MemAvailable}
	}
	if info.ShmFree >= 0 && need > info.ShmFree {
		return &TooLargeError{What: what, Need: need, Limit: "free space of " + info.ShmDir, Have: info.ShmFree}
	}
	return nil
}

// Available reads the limits.
func (s Source) Available() (Info, error) {
	read := s.Meminfo
	if read == nil {
		read = func() ([]byte, error) { return os.ReadFile("/proc/meminfo") }
	}
	b, err := read()
	if err != nil {
		return Info{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	avail, err := parseMemAvailable(b)
	if err != nil {
		return Info{}, err
	}
	info := Info{MemAvailable: avail, ShmDir: s.ShmDir, ShmFree: -1}
	if info.ShmDir == "-" {
		return info, nil
	}
	if info.ShmDir == "" {
		info.ShmDir = DefaultShmDir
	}
	free := s.ShmFree
	if free == nil {
		free = statfsFree
	}
	if info.ShmFree, err = free(info.ShmDir); err != nil {
		return Info{}, fmt.Errorf("%w: %s: %w", ErrUnavailable, info.ShmDir, err)
	}
	return info, nil
}

func statfsFree(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// parseMemAvailable returns MemAvailable of /proc/meminfo content, in
// bytes ("MemAvailable:   22123456 kB").
func parseMemAvailable(b []byte) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(k) != "MemAvailable" {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 || len(f) > 2 {
			return 0, fmt.Errorf("%w: MemAvailable %q", ErrUnavailable, v)
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("%w: MemAvailable %q", ErrUnavailable, v)
		}
		mult := int64(1)
		if len(f) == 2 {
			switch strings.ToLower(f[1]) {
			case "kb":
				mult = 1 << 10
			case "mb":
				mult = 1 << 20
			case "gb":
				mult = 1 << 30
			default:
				return 0, fmt.Errorf("%w: MemAvailable unit %q", ErrUnavailable, f[1])
			}
		}
		if n > (1<<63-1)/mult {
			return 0, fmt.Errorf("%w: MemAvailable %q overflows", ErrUnavailable, v)
		}
		return n * mult, nil
	}
	return 0, fmt.Errorf("%w: no MemAvailable in /proc/meminfo", ErrUnavailable)
}
