package proptest

import (
	"flag"
	"maps"
	"slices"
	"strconv"
	"testing"

	"pgregory.net/rapid"

	"github.com/hybridxfer/hybridxfer/hma"
)

// minSteps is the number of state-machine steps a default run must reach.
const minSteps = 10000

func TestHMAStateMachine(t *testing.T) {
	total := 0
	events := map[string]int{}
	ran := 0 // subtests that ran (a -run filter may skip some)
	run := func(rt *rapid.T, cfg hma.Config) {
		m, err := NewHMAMachine(cfg)
		if err != nil {
			rt.Fatalf("config %+v: %v", cfg, err)
		}
		rt.Repeat(m.Actions())
		total += m.Steps
		for k, v := range m.Events {
			events[k] += v
		}
	}
	t.Run("random", func(t *testing.T) {
		ran++
		rapid.Check(t, func(rt *rapid.T) { run(rt, GenHMAConfig().Draw(rt, "cfg")) })
	})
	for _, p := range HMAPresets() {
		t.Run(p.Name, func(t *testing.T) {
			ran++
			rapid.Check(t, func(rt *rapid.T) { run(rt, GenHMAPresetConfig(p).Draw(rt, "cfg")) })
		})
	}
	keys := slices.Sorted(maps.Keys(events))
	for _, k := range keys {
		t.Logf("%-40s %d", k, events[k])
	}
	t.Logf("%d state-machine steps", total)
	if ran == 1+len(HMAPresets()) && !testing.Short() && flagInt("rapid.checks") >= 100 && flagInt("rapid.steps") >= 30 && total < minSteps {
		t.Fatalf("only %d state-machine steps, want >= %d", total, minSteps)
	}
}

func flagInt(name string) int {
	f := flag.Lookup(name)
	if f == nil {
		return 0
	}
	v, _ := strconv.Atoi(f.Value.String())
	return v
}
