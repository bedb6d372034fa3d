package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/hybridxfer/hybridxfer/statexfer/ucx"
	"github.com/spf13/cobra"
)

// ucxFlags are the UCX options of every command that starts transports
// (serve, verify, bench transfer, bench pattern), parsed once into a
// ucx.Config. They travel to worker processes inside the worker's spec,
// never through the environment.
type ucxFlags struct {
	ErrMode string `json:"err_mode"` // none (default) or peer
	Idle    string `json:"idle"`     // auto (default), spin or sleep
	// NoPrefault: do not populate the page tables of peers' mapped memory
	// at import (the first copies then fault once per page).
	NoPrefault bool `json:"no_prefault,omitempty"`
	// WorkerLog is the log level of worker processes (multi-process
	// commands): warn by default.
	WorkerLog string `json:"worker_log,omitempty"`
}

// register adds the flags to c; workers says whether c starts worker
// processes (then --worker-log-level too).
func (u *ucxFlags) register(c *cobra.Command, workers bool) {
	f := c.Flags()
	f.StringVar(&u.ErrMode, "ucx-error-mode", "none", "UCX endpoint error handling: none (shared-memory lanes, dead peers found by the side channel) or peer (UCX 1.13: tcp lanes, emulated gets)")
	f.StringVar(&u.Idle, "ucx-idle", "auto", "how UCX progress threads wait for events: auto (spin briefly, then sleep), spin or sleep")
	f.BoolVar(&u.NoPrefault, "ucx-no-prefault", false, "do not populate the page tables of a same-host peer's mapped memory in the background when it is imported (the first copies then fault once per page)")
	if workers {
		f.StringVar(&u.WorkerLog, "worker-log-level", "warn", "log level of the worker processes (debug, info, warn, error), on their stderr")
	}
}

// check reports bad values into fc.
func (u ucxFlags) check(fc *flagChecks) {
	if _, err := u.config(""); err != nil {
		fc.fail("ucx-error-mode", "%v", err)
	}
	if _, err := u.workerLevel(); err != nil {
		fc.fail("worker-log-level", "%v", err)
	}
}

// config is the ucx.Config of a transport named name.
func (u ucxFlags) config(name string) (ucx.Config, error) {
	c := ucx.Config{Name: name, NoPrefault: u.NoPrefault}
	switch u.Idle {
	case "", "auto":
	case "spin":
		c.Idle = ucx.IdleSpin
	case "sleep":
		c.Idle = ucx.IdleSleep
	default:
		return c, fmt.Errorf("--ucx-idle %q (want auto, spin or sleep)", u.Idle)
	}
	switch u.ErrMode {
	case "", "none":
		c.ErrMode = ucx.ErrModeNone
	case "peer":
		c.ErrMode = ucx.ErrModePeer
	default:
		return c, fmt.Errorf("error mode %q (want none or peer)", u.ErrMode)
	}
	return c, nil
}

func (u ucxFlags) workerLevel() (slog.Level, error) {
	var l slog.Level
	if u.WorkerLog == "" {
		return slog.LevelWarn, nil
	}
	if err := l.UnmarshalText([]byte(u.WorkerLog)); err != nil {
		return 0, fmt.Errorf("%q (want debug, info, warn or error)", u.WorkerLog)
	}
	return l, nil
}

// setWorkerLogger is a worker process's default logger: text on stderr
// at the level its spec carries.
func (u ucxFlags) setWorkerLogger() {
	level, err := u.workerLevel()
	if err != nil {
		level = slog.LevelWarn
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))
}
