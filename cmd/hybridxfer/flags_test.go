package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"testing"

	"github.com/hybridxfer/hybridxfer/statexfer/session"
)

// Every numeric flag is checked before anything starts, and the error
// names the flag. The command is only parsed and pre-run: nothing serves.
func TestServeFlagsValidated(t *testing.T) {
	cases := []struct {
		args []string
		flag string // "" : valid
	}{
		{nil, ""},
		{[]string{"--role", "prefill", "--lease-ttl", "2s", "--heartbeat-interval", "500ms"}, ""},
		{[]string{"--block-size", "0"}, "--block-size"},
		{[]string{"--tp", "0"}, "--tp"},
		{[]string{"--kernel-block-size", "-1"}, "--kernel-block-size"},
		{[]string{"--num-blocks", "0"}, "--num-blocks"},
		{[]string{"--block-layout", "diagonal"}, "--block-layout"},
		{[]string{"--log-format", "xml"}, "--log-format"},
		{[]string{"--log-level", "loud"}, "--log-level"},
		{[]string{"--log-format", "JSON", "--log-level", "debug"}, ""},
		{[]string{"--block-layout", "Cross-Layer"}, ""},
		{[]string{"--layout", "HDN"}, "--layout"},
		{[]string{"--memory", "shared"}, "--memory"},
		{[]string{"--num-blocks", "100000000"}, "--num-blocks"},
		{[]string{"--lease-ttl", "0"}, "--lease-ttl"},
		{[]string{"--lease-ttl", "-5s"}, "--lease-ttl"},
		{[]string{"--transfer-timeout", "0"}, "--transfer-timeout"},
		{[]string{"--heartbeat-interval", "0"}, "--heartbeat-interval"},
		{[]string{"--heartbeat-interval", "40s"}, "--heartbeat-interval"},
		{[]string{"--port", "0"}, "--port"},
		{[]string{"--port", "70000"}, "--port"},
		{[]string{"--handshake-port", "-1"}, "--handshake-port"},
		{[]string{"--max-model-len", "0"}, "--max-model-len"},
		{[]string{"--staging-bytes", "-1"}, "--staging-bytes"},
		{[]string{"--fault-drop-notify", "2"}, "--fault-drop-notify"},
		{[]string{"--role", "wizard"}, "--role"},
		{[]string{"--handoff", "sometimes"}, "--handoff"},
		{[]string{"--kv-load-failure-policy", "pray"}, "--kv-load-failure-policy"},
		{[]string{"--mode", "fast"}, "--mode"},
		{[]string{"--host", "0.0.0.0"}, "--host"},
		{[]string{"--mamba-cache-mode", "align"}, ""},
		{[]string{"--mamba-cache-mode", "all"}, ""},
		{[]string{"--mamba-cache-mode", "some"}, "--mamba-cache-mode"},
	}
	for _, c := range cases {
		cmd := serveCmd()
		if err := cmd.ParseFlags(c.args); err != nil {
			t.Fatalf("%v: parse: %v", c.args, err)
		}
		err := cmd.PreRunE(cmd, nil)
		switch {
		case c.flag == "" && err != nil:
			t.Errorf("%v: refused: %v", c.args, err)
		case c.flag != "" && (!errors.Is(err, errFlag) || !strings.Contains(err.Error(), c.flag+":")):
			t.Errorf("%v: got %v, want an error naming %s", c.args, err, c.flag)
		}
	}
	// Several bad flags are reported together.
	cmd := serveCmd()
	_ = cmd.ParseFlags([]string{"--num-blocks", "0", "--lease-ttl", "0"})
	if err := cmd.PreRunE(cmd, nil); err == nil || !strings.Contains(err.Error(), "--num-blocks") || !strings.Contains(err.Error(), "--lease-ttl") {
		t.Errorf("two bad flags: %v", err)
	}
}

func TestVerifyFlagsNameTheSide(t *testing.T) {
	f := instanceFlags{}
	f.prefix, f.tp, f.blockSize, f.layout, f.conv, f.memory, f.blockLayout = "prefill-", 1, 0, "HND", "DS", "unified", "per-layer"
	if _, err := f.config(); err == nil || !strings.Contains(err.Error(), "--prefill-block-size") {
		t.Errorf("prefill block size 0: %v", err)
	}
}

// --log-format json writes one JSON object per record, at --log-level and
// above only, and becomes the default logger.
func TestLogFlagsJSON(t *testing.T) {
	defer slog.SetDefault(slog.Default())
	f := logFlags{format: "json", level: "warn"}
	var b strings.Builder
	log, err := f.logger(&b)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("hidden")
	log.Warn("shown", "request", "r1")
	slog.Error("through the default", "peer", "p1")
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d records, want 2: %q", len(lines), b.String())
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil || rec["msg"] != "shown" || rec["request"] != "r1" || rec["level"] != "WARN" {
		t.Errorf("first record %q: %v %v", lines[0], rec, err)
	}
	if err := json.Unmarshal([]byte(lines[1]), &rec); err != nil || rec["peer"] != "p1" {
		t.Errorf("default logger record %q: %v", lines[1], err)
	}
	if _, err := (&logFlags{format: "text", level: "nope"}).logger(&b); err == nil || !strings.Contains(err.Error(), "--log-level") {
		t.Errorf("bad level: %v", err)
	}
}

// --log-sample N keeps the lifecycle records of the requests Sampled
// picks, all of each, and every other record.
func TestLogFlagsSample(t *testing.T) {
	defer slog.SetDefault(slog.Default())
	f := logFlags{format: "json", level: "info", sample: 4}
	var b strings.Builder
	log, err := f.logger(&b)
	if err != nil {
		t.Fatal(err)
	}
	kept := map[string]int{}
	for i := range 64 {
		id := fmt.Sprintf("req-%d", i)
		rl := session.RequestLog(log, id, "p-1-"+id)
		session.LogEvent(rl, session.EventReceived)
		session.LogEvent(rl, session.EventFinished)
		if session.Sampled(id, 4) {
			kept[id] = 2
		}
	}
	log.Info("not a lifecycle record")
	if len(kept) == 0 || len(kept) == 64 {
		t.Fatalf("Sampled kept %d of 64 ids: the sample is not a sample", len(kept))
	}
	got := map[string]int{}
	other := 0
	for _, line := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatal(err)
		}
		if rec["event"] == nil {
			other++
			continue
		}
		got[rec["request_id"].(string)]++
	}
	if !maps.Equal(got, kept) || other != 1 {
		t.Errorf("lifecycle records per request %v, want %v; %d other records, want 1", got, kept, other)
	}
	if _, err := (&logFlags{format: "text", level: "info", sample: -1}).logger(&b); err == nil || !strings.Contains(err.Error(), "--log-sample") {
		t.Errorf("bad sample: %v", err)
	}
}
