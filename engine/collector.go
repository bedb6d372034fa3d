package engine

import (
	"strconv"

	"github.com/hybridxfer/hybridxfer/backend"

	"github.com/prometheus/client_golang/prometheus"
)

// Collector exports an instance's state at scrape time: the allocator's
// pools and KV cache groups, its requests and holds, P's leases and their
// releases, D's peers and loads in flight. It reads the same snapshots as
// /debug (Inspector), so /metrics and /debug never disagree and no call
// site has to remember to push a gauge. Events (transfers, failures,
// tokens) stay counters in Metrics.
type Collector struct {
	in    backend.Inspector
	descs collectorDescs
}

type collectorDescs struct {
	used, total, cached, held *prometheus.Desc
	free                      *prometheus.Desc
	running, holds            *prometheus.Desc
	soonest                   *prometheus.Desc
	released, expired         *prometheus.Desc
	peers, loads              *prometheus.Desc
	pathBatches, pathBytes    *prometheus.Desc
}

// transportPaths is implemented by instances whose transports count
// batches by path (Engine.TransportPaths).
type transportPaths interface {
	TransportPaths() []RankPathCount
}

// PeerStates are the values of the state label of hybridxfer_peers
// (statexfer/session's PeerInfo.State). Every scrape exports each of them
// and of LoadStates, at 0 when nothing is in it (stable series).
var PeerStates = []string{"handshaking", "ready", "failed"}

// LoadStates are the values of the state label of
// hybridxfer_loads_in_flight (statexfer/session's request states that are
// not final).
var LoadStates = []string{"accepted", "handshaking", "loading"}

// LeaseCauses are the values of the cause label of
// hybridxfer_leases_released_total.
var LeaseCauses = []string{"notified", "expired", "aborted"}

// NewCollector returns the collector of the instance in (an Engine),
// labelled like its Metrics; register it on the same registry.
func NewCollector(in backend.Inspector, engineID string, role backend.Role) *Collector {
	cl := prometheus.Labels{"engine_id": engineID, "role": string(role)}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, cl)
	}
	return &Collector{in: in, descs: collectorDescs{
		used:     d("hybridxfer_pool_blocks_used", "Blocks a KV cache group holds (referenced by requests).", "group", "kind"),
		total:    d("hybridxfer_pool_blocks_capacity", "Usable blocks of the pool a KV cache group allocates from.", "group", "kind"),
		cached:   d("hybridxfer_pool_blocks_cached", "Blocks of a KV cache group in the prefix cache (free or used).", "group", "kind"),
		held:     d("hybridxfer_pool_blocks_held", "Blocks of a KV cache group held for a transfer (P).", "group", "kind"),
		free:     d("hybridxfer_pool_free_blocks", "Blocks in a pool's free queue (prefix-cached ones included).", "pool"),
		running:  d("hybridxfer_requests_running", "Requests being computed or decoded on this instance."),
		holds:    d("hybridxfer_requests_held", "Finished requests whose state P holds for decode instances."),
		soonest:  d("hybridxfer_lease_soonest_expiry_seconds", "Seconds until the soonest lease expiry among P's holds (absent without holds; negative: past due, the sweeper frees it)."),
		released: d("hybridxfer_leases_released_total", "Leases on held state released, by cause.", "cause"),
		expired:  d("hybridxfer_leases_expired_total", "Leases on held state that expired before every consumer notified."),
		peers:    d("hybridxfer_peers", "Prefill incarnations a decode instance knows, by state.", "state"),
		loads:    d("hybridxfer_loads_in_flight", "Loads on a decode instance not yet done or failed, by state.", "state"),
		pathBatches: d("hybridxfer_transport_path_batches_total",
			"Batches of reads (or writes) the rank's transport completed, by the path that served them (ucx: mapped, one-sided, emulated; inproc).", "rank", "path"),
		pathBytes: d("hybridxfer_transport_path_bytes_total",
			"Bytes those batches moved (failed ops excluded), by rank and path.", "rank", "path"),
	}}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	d := &c.descs
	for _, x := range []*prometheus.Desc{d.used, d.total, d.cached, d.held, d.free, d.running, d.holds, d.soonest, d.released, d.expired, d.peers, d.loads, d.pathBatches, d.pathBytes} {
		ch <- x
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	d := &c.descs
	gauge := func(desc *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, labels...)
	}
	pools := c.in.DebugPools()
	for _, g := range pools.Groups {
		gid := strconv.Itoa(g.Group)
		gauge(d.used, float64(g.Used), gid, g.Kind)
		gauge(d.cached, float64(g.Cached), gid, g.Kind)
		gauge(d.held, float64(g.Held), gid, g.Kind)
		if g.Pool >= 0 && g.Pool < len(pools.Pools) {
			gauge(d.total, float64(pools.Pools[g.Pool].NumBlocks), gid, g.Kind)
		}
	}
	for _, p := range pools.Pools {
		gauge(d.free, float64(p.Free), strconv.Itoa(p.Pool))
	}
	gauge(d.running, float64(pools.Requests-pools.Holds))
	gauge(d.holds, float64(pools.Holds))

	leases := c.in.DebugLeases()
	if len(leases.Leases) > 0 {
		// Sorted soonest first.
		gauge(d.soonest, leases.Leases[0].RemainingMs/1e3)
	}
	released := map[string]uint64{"notified": leases.ReleasedNotified, "expired": leases.ReleasedExpired, "aborted": leases.ReleasedAborted}
	for _, cause := range LeaseCauses {
		ch <- prometheus.MustNewConstMetric(d.released, prometheus.CounterValue, float64(released[cause]), cause)
	}
	ch <- prometheus.MustNewConstMetric(d.expired, prometheus.CounterValue, float64(leases.ReleasedExpired))

	peers := c.in.DebugPeers()
	counts := map[string]int{}
	for _, p := range peers.Peers {
		counts[p.State]++
	}
	for _, s := range PeerStates {
		gauge(d.peers, float64(counts[s]), s)
	}
	counts = map[string]int{}
	for _, l := range peers.Loads {
		counts[l.State]++
	}
	for _, s := range LoadStates {
		gauge(d.loads, float64(counts[s]), s)
	}

	if tp, ok := c.in.(transportPaths); ok {
		// A rank of a "both" instance has two transports: summed.
		type key struct {
			rank int
			path string
		}
		sums := map[key][2]uint64{}
		var keys []key
		for _, pc := range tp.TransportPaths() {
			k := key{pc.Rank, pc.Path}
			if _, seen := sums[k]; !seen {
				keys = append(keys, k)
			}
			v := sums[k]
			sums[k] = [2]uint64{v[0] + pc.Batches, v[1] + pc.Bytes}
		}
		for _, k := range keys {
			r := strconv.Itoa(k.rank)
			ch <- prometheus.MustNewConstMetric(d.pathBatches, prometheus.CounterValue, float64(sums[k][0]), r, k.path)
			ch <- prometheus.MustNewConstMetric(d.pathBytes, prometheus.CounterValue, float64(sums[k][1]), r, k.path)
		}
	}
}
