// Package hostmem sizes an allocation against the machine before it is
// made. Registering memory for transfers (statexfer/ucx Alloc) allocates
// shared memory: UCX tries SysV first and then POSIX files under /dev/shm,
// and its POSIX path writes the whole length into the file before mapping
// it. An allocation that cannot fit therefore takes seconds, fills RAM and
// /dev/shm, and then fails or is killed by the OOM killer. Check refuses it
// up front with the sizes in the message.
//
// Available reads MemAvailable from /proc/meminfo and the free space of the
// shared-memory file system (statfs of /dev/shm, the bytes an unprivileged
// process may use). Check compares a need with both; a Source with other
// readers serves tests and other mount points. The package is pure Go and
// builds with CGO_ENABLED=0.
//
// Errors are ErrTooLarge (wrapped by *TooLargeError, which names what was
// to be allocated and the limit that refused it) and ErrUnavailable (the
// limits could not be read).
package hostmem
