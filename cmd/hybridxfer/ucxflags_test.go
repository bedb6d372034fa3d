package main

import (
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/hybridxfer/hybridxfer/statexfer/ucx"
	"github.com/spf13/cobra"
)

// TestUCXFlags: the flags parse into the ucx.Config the transports get,
// refuse what they do not know, and travel to workers in the spec's JSON
// (nothing through the environment).
func TestUCXFlags(t *testing.T) {
	for _, c := range []struct {
		u       ucxFlags
		idle    ucx.IdleMode
		errMode ucx.ErrMode
	}{
		{ucxFlags{}, ucx.Config{}.Idle, ucx.ErrModeNone},
		{ucxFlags{ErrMode: "peer", Idle: "spin"}, ucx.IdleSpin, ucx.ErrModePeer},
		{ucxFlags{ErrMode: "none", Idle: "sleep"}, ucx.IdleSleep, ucx.ErrModeNone},
	} {
		cfg, err := c.u.config("x")
		if err != nil || cfg.Idle != c.idle || cfg.ErrMode != c.errMode || cfg.Name != "x" {
			t.Errorf("%+v: %+v, %v", c.u, cfg, err)
		}
	}
	for _, bad := range []ucxFlags{{ErrMode: "all"}, {Idle: "busy"}, {WorkerLog: "loud"}} {
		var fc flagChecks
		bad.check(&fc)
		if fc.err() == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	spec := workerSpec{Side: "decode", UCX: ucxFlags{ErrMode: "peer", Idle: "sleep", WorkerLog: "debug"}}
	b, _ := json.Marshal(spec)
	var back workerSpec
	if err := json.Unmarshal(b, &back); err != nil || back.UCX != spec.UCX {
		t.Fatalf("spec round trip: %+v, %v (%s)", back.UCX, err, b)
	}
	if l, err := back.UCX.workerLevel(); err != nil || l != slog.LevelDebug {
		t.Fatalf("worker level %v, %v", l, err)
	}
}

// TestServeDataParallelFlags: the rank flags and the ports of every rank
// are checked before anything starts (serve's PreRunE).
func TestServeDataParallelFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--data-parallel-size", "0"}, "data-parallel-size"},
		{[]string{"--data-parallel-size", "2", "--data-parallel-rank", "2"}, "data-parallel-rank"},
		{[]string{"--data-parallel-size", "4", "--port", "65534"}, "port"},
		{[]string{"--data-parallel-size", "2", "--port", "0"}, "port"},
		{[]string{"--discovery", "127.0.0.1:2379"}, "discovery"},
		{[]string{"--ucx-idle", "busy"}, "ucx"},
	} {
		cmd := serveCmd()
		cmd.SetArgs(c.args)
		cmd.SetOut(io.Discard)
		cmd.SetErr(io.Discard)
		cmd.RunE = func(*cobra.Command, []string) error { t.Errorf("%v: serve started", c.args); return nil }
		if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want an error naming --%s", c.args, err, c.want)
		}
	}
	o := serveOptions{dpSize: 3, dpRank: 1}
	if got := o.dpRanks(); len(got) != 1 || got[0] != 1 {
		t.Errorf("--data-parallel-rank 1 runs %v", got)
	}
	o.dpRank = -1
	if got := o.dpRanks(); len(got) != 3 || got[2] != 2 {
		t.Errorf("--data-parallel-size 3 runs %v", got)
	}
}
