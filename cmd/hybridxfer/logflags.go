package main

import (
	"io"
	"log/slog"
	"strings"

	"github.com/hybridxfer/hybridxfer/statexfer/session"
	"github.com/spf13/cobra"
)

// logFlags are --log-format and --log-level of the long-running commands
// (serve, proxy).
type logFlags struct {
	format, level string
	sample        int
}

func (f *logFlags) register(c *cobra.Command) {
	c.Flags().StringVar(&f.format, "log-format", "text", "log records as text (key=value) or json (one object per line)")
	c.Flags().StringVar(&f.level, "log-level", "info", "lowest level logged: debug, info, warn or error")
	c.Flags().IntVar(&f.sample, "log-sample", 1, "log the lifecycle records (event=...) of 1 in N requests, chosen by request id so every instance keeps the same ones; other records are all logged")
}

// check reports bad values as flag errors naming the flag.
func (f *logFlags) check(fc *flagChecks) {
	switch strings.ToLower(f.format) {
	case "text", "json":
	default:
		fc.fail("log-format", "%q (want text or json)", f.format)
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(f.level)); err != nil {
		fc.fail("log-level", "%q (want debug, info, warn or error)", f.level)
	}
	if f.sample < 0 {
		fc.fail("log-sample", "%d (want 1 or more; 0 and 1 keep every request)", f.sample)
	}
}

// logger builds the logger the flags describe, writing to w, and makes it
// the default (so the UCX and ZeroMQ packages' records share its format).
func (f *logFlags) logger(w io.Writer) (*slog.Logger, error) {
	var fc flagChecks
	f.check(&fc)
	if err := fc.err(); err != nil {
		return nil, err
	}
	var l slog.Level
	_ = l.UnmarshalText([]byte(f.level))
	o := &slog.HandlerOptions{Level: l}
	var h slog.Handler = slog.NewTextHandler(w, o)
	if strings.ToLower(f.format) == "json" {
		h = slog.NewJSONHandler(w, o)
	}
	log := slog.New(session.SampleEvents(h, f.sample))
	slog.SetDefault(log)
	return log, nil
}
