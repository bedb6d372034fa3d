package engine

import (
	"context"
	"testing"

	"github.com/hybridxfer/hybridxfer/backend"
	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/prometheus/client_golang/prometheus"
)

// TestTransportPathCounts: after one disaggregated request, D's
// transports have counted the batches and bytes of its reads by path
// (inproc here), P's have read nothing, and the Collector exports D's
// counts as hybridxfer_transport_path_{batches,bytes}_total per rank.
func TestTransportPathCounts(t *testing.T) {
	m, err := groups.Preset("qwen3.5-27b", groups.PresetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	x := newPD(t, m, groups.InstanceConfig{TP: 2}, groups.InstanceConfig{TP: 2}, nil)
	if _, _, err := x.run(context.Background(), "paths", "count my bytes please", 2); err != nil {
		t.Fatal(err)
	}
	var dBytes, dBatches uint64
	ranks := map[int]bool{}
	for _, c := range x.d.TransportPaths() {
		if c.Path != "inproc" {
			t.Errorf("path %q, want inproc", c.Path)
		}
		dBytes, dBatches = dBytes+c.Bytes, dBatches+c.Batches
		if c.Bytes > 0 {
			ranks[c.Rank] = true
		}
	}
	if dBytes == 0 || dBatches == 0 || len(ranks) != 2 {
		t.Fatalf("D's transports counted %d batches, %d bytes on ranks %v; want reads on both ranks", dBatches, dBytes, ranks)
	}
	for _, c := range x.p.TransportPaths() {
		if c.Bytes != 0 {
			t.Errorf("P's rank %d read %d bytes, want none (D reads P's memory)", c.Rank, c.Bytes)
		}
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(x.d, "D", backend.RoleDecode))
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var exported float64
	for _, f := range fams {
		if f.GetName() == "hybridxfer_transport_path_bytes_total" {
			for _, mt := range f.GetMetric() {
				exported += mt.GetCounter().GetValue()
			}
		}
	}
	if exported != float64(dBytes) {
		t.Fatalf("exported %v path bytes, transports counted %d", exported, dBytes)
	}
}
