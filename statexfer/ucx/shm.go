package ucx

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Shared-memory files. UCX 1.13's posix memory domain (mm/posix) allocates
// a segment by creating ucx_shm_posix_<hex id> in UCX_POSIX_DIR (default
// /dev/shm, through shm_open) with O_CREAT|O_EXCL, writing the whole length
// into it (UCX's check that the file system has room: seconds for
// gigabytes), and only then, in the default proc-link mode
// (UCX_POSIX_USE_PROC_LINK=y), unlinking it; peers then open it through
// /proc/<pid>/fd/<fd>. A process killed during that write leaves the file
// with all it wrote. UCX 1.13 fails the allocation if the file is gone when
// it unlinks it, so the name cannot be removed earlier from outside. SysV
// segments (mm/sysv, first in UCX_ALLOC_PRIO) are marked for removal
// (IPC_RMID) at once and leave nothing; posix serves what sysv refuses (a
// size shmget cannot reserve) and the posix transport's receive FIFOs.
//
// So each process gives UCX a directory of its own,
// /dev/shm/hybridxfer-ucx-<uid>/<pidns>-<pid>-<start> (start: the process
// start time from /proc/<pid>/stat, so a reused pid is not mistaken for the
// owner). The first Transport of a process removes the directories of dead
// owners of the same user and pid namespace; the last Close removes its
// own. Nothing outside these directories is touched.

// shmRoot is the tmpfs under which the directories live.
var shmRoot = "/dev/shm"

// ErrShmDir: the shared-memory directory cannot be used (exists with
// another owner or mode, or is not a directory).
var ErrShmDir = errors.New("ucx: shared-memory directory unusable")

// procID identifies a process: pid namespace, pid, start time.
type procID struct {
	ns    uint64
	pid   int
	start uint64
}

func (p procID) String() string { return fmt.Sprintf("%d-%d-%d", p.ns, p.pid, p.start) }

func parseProcID(s string) (procID, bool) {
	f := strings.Split(s, "-")
	if len(f) != 3 {
		return procID{}, false
	}
	ns, e1 := strconv.ParseUint(f[0], 10, 64)
	pid, e2 := strconv.Atoi(f[1])
	start, e3 := strconv.ParseUint(f[2], 10, 64)
	if e1 != nil || e2 != nil || e3 != nil || pid <= 0 || (procID{ns, pid, start}).String() != s {
		return procID{}, false
	}
	return procID{ns, pid, start}, true
}

// procStart returns the start time (field 22 of /proc/<pid>/stat).
func procStart(pid string) (uint64, error) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("bad /proc/%s/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, fmt.Errorf("bad /proc/%s/stat", pid)
	}
	return strconv.ParseUint(f[19], 10, 64) // field 22; f[0] is field 3
}

func pidNS() (uint64, error) {
	l, err := os.Readlink("/proc/self/ns/pid")
	if err != nil {
		return 0, err
	}
	l = strings.TrimSuffix(strings.TrimPrefix(l, "pid:["), "]")
	return strconv.ParseUint(l, 10, 64)
}

var self = sync.OnceValues(func() (procID, error) {
	ns, err := pidNS()
	if err != nil {
		return procID{}, err
	}
	st, err := procStart("self")
	if err != nil {
		return procID{}, err
	}
	return procID{ns: ns, pid: os.Getpid(), start: st}, nil
})

func shmBase() string {
	return filepath.Join(shmRoot, fmt.Sprintf("hybridxfer-ucx-%d", os.Getuid()))
}

// ShmDir returns the directory this process gives UCX for posix
// shared-memory segments (it exists while a Transport is open).
func ShmDir() (string, error) {
	id, err := self()
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrShmDir, err)
	}
	return filepath.Join(shmBase(), id.String()), nil
}

var shmRefs struct {
	sync.Mutex
	n   int
	dir string
}

// acquireShm creates this process's directory (reaping dead owners' first)
// and returns it; releaseShm undoes one acquireShm.
func acquireShm() (string, error) {
	shmRefs.Lock()
	defer shmRefs.Unlock()
	if shmRefs.n > 0 {
		shmRefs.n++
		return shmRefs.dir, nil
	}
	dir, err := ShmDir()
	if err != nil {
		return "", err
	}
	if err := ensurePrivateDir(shmBase()); err != nil {
		return "", err
	}
	if n, err := reapShm(shmBase()); err != nil {
		slog.Warn("ucx: removing shared memory of dead processes", "dir", shmBase(), "err", err)
	} else if n > 0 {
		slog.Info("ucx: removed shared-memory directories of dead processes", "dir", shmBase(), "dirs", n)
	}
	if err := ensurePrivateDir(dir); err != nil {
		return "", err
	}
	shmRefs.n, shmRefs.dir = 1, dir
	return dir, nil
}

func releaseShm() {
	shmRefs.Lock()
	defer shmRefs.Unlock()
	if shmRefs.n == 0 {
		return
	}
	if shmRefs.n--; shmRefs.n == 0 {
		// Every segment is unmapped (ucp_cleanup ran); in proc-link mode
		// the files are unlinked already.
		if err := os.RemoveAll(shmRefs.dir); err != nil {
			slog.Warn("ucx: removing shared-memory directory", "dir", shmRefs.dir, "err", err)
		}
	}
}

func ensurePrivateDir(dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%w: %w", ErrShmDir, err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrShmDir, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.IsDir():
		return fmt.Errorf("%w: %s is not a directory", ErrShmDir, dir)
	case !ok || int(st.Uid) != os.Getuid():
		return fmt.Errorf("%w: %s is not owned by uid %d", ErrShmDir, dir, os.Getuid())
	case fi.Mode().Perm()&0o077 != 0:
		return fmt.Errorf("%w: %s has mode %v, want 0700", ErrShmDir, dir, fi.Mode().Perm())
	}
	return nil
}

// reapShm removes the entries of base named <pidns>-<pid>-<start> whose
// pid namespace is this process's and whose process is gone (no such pid,
// or a pid with another start time). It returns how many it removed.
func reapShm(base string) (int, error) {
	me, err := self()
	if err != nil {
		return 0, err
	}
	ents, err := os.ReadDir(base)
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, e := range ents {
		id, ok := parseProcID(e.Name())
		if !ok || !e.IsDir() || id.ns != me.ns || id == me {
			continue
		}
		if st, err := procStart(strconv.Itoa(id.pid)); err == nil && st == id.start {
			continue // alive
		} else if err != nil && !errors.Is(err, os.ErrNotExist) {
			continue // cannot tell: keep
		}
		if err := os.RemoveAll(filepath.Join(base, e.Name())); err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// CleanStaleShm removes the shared-memory directories (and the UCX segment
// files in them) of this user's dead processes: what a process killed
// while UCX was creating a posix segment left behind. It is safe while
// other processes run (it keeps every directory whose owner is alive or
// cannot be checked) and the first Transport of a process runs it anyway;
// call it at startup to free the memory before sizing checks. It returns
// how many directories it removed.
func CleanStaleShm() (int, error) {
	base := shmBase()
	if _, err := os.Lstat(base); errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err := ensurePrivateDir(base); err != nil {
		return 0, err
	}
	return reapShm(base)
}
