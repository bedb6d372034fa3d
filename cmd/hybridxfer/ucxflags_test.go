package main

import (
	"encoding/json"
	"log/slog"
	"testing"

	"github.com/hybridxfer/hybridxfer/statexfer/ucx"
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
