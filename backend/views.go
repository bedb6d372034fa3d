package backend

// Inspector is implemented by backends that show their state under
// /debug (an Engine does): JSON snapshots taken under the engine's lock,
// for operators and `hybridxfer inspect`. Nothing in them is secret
// (grants and tokens are left out), but they name requests and peers, so
// with API keys they need a key like any other path but /health and
// /metrics.
type Inspector interface {
	DebugPools() PoolsView
	DebugLeases() LeasesView
	DebugPeers() PeersView
	// DebugRequests returns the live requests whose id is id, or whose
	// client id (the part after the engine's "p-N-" / "d-N-" prefix) is.
	DebugRequests(id string) []RequestView
}

// InstanceView names the instance a view comes from.
type InstanceView struct {
	Engine string `json:"engine"`
	Role   Role   `json:"role"`
	Model  string `json:"model"`
	TP     int    `json:"tp"`
	Time   string `json:"time"` // when the snapshot was taken, RFC 3339
}

// PoolsView is GET /debug/pools: the block pools and KV cache groups of
// rank 0's geometry (every rank allocates the same block ids) with the
// allocator's counts.
type PoolsView struct {
	InstanceView
	BlockLayout string      `json:"block_layout"`
	Memory      string      `json:"memory"`
	Pools       []PoolView  `json:"pools"`
	Groups      []GroupView `json:"groups"`
	Requests    int         `json:"requests"` // live, running and held
	Holds       int         `json:"holds"`
}

// PoolView is one block pool.
type PoolView struct {
	Pool        int `json:"pool"`
	NumBlocks   int `json:"num_blocks"` // usable blocks (the null block excluded)
	Free        int `json:"free"`
	Used        int `json:"used"`
	Cached      int `json:"cached"`
	Held        int `json:"held"`
	Regions     int `json:"regions"`      // registered regions per rank
	BlockStride int `json:"block_stride"` // bytes between block ids in a region
}

// GroupView is one KV cache group.
type GroupView struct {
	Group     int    `json:"group"`
	Kind      string `json:"kind"`
	Layers    int    `json:"layers"`
	Pool      int    `json:"pool"`
	BlockSize int    `json:"block_size"`
	PageBytes int    `json:"page_bytes"`
	Used      int    `json:"used"`
	Cached    int    `json:"cached"`
	Held      int    `json:"held"`
}

// LeasesView is GET /debug/leases: what a prefill instance holds for
// decode instances, soonest expiry first.
type LeasesView struct {
	InstanceView
	Leases []LeaseView `json:"leases"`
	// Released counts the holds ended since start, by cause.
	ReleasedNotified uint64 `json:"released_notified"`
	ReleasedExpired  uint64 `json:"released_expired"`
	ReleasedAborted  uint64 `json:"released_aborted"`
}

// LeaseView is one held request.
type LeaseView struct {
	Request     string  `json:"request"`
	Expiry      string  `json:"expiry"` // RFC 3339, this instance's clock
	RemainingMs float64 `json:"remaining_ms"`
	Consumers   int     `json:"consumers"` // notifications the release waits for
	Notified    int     `json:"notified"`
}

// PeersView is GET /debug/peers: the prefill incarnations a decode
// instance knows (a prefill instance lists none: D ranks reach it, it
// keeps no table of them), and the loads in flight.
type PeersView struct {
	InstanceView
	Peers []PeerView `json:"peers"`
	Loads []LoadView `json:"loads"`
}

// PeerView is one prefill incarnation as D knows it.
type PeerView struct {
	Peer          string  `json:"peer"` // engine id @ host:port
	BootID        string  `json:"boot_id"`
	State         string  `json:"state"` // handshaking, ready, failed
	Error         string  `json:"error,omitempty"`
	TP            int     `json:"tp"`
	ClockOffsetMs float64 `json:"clock_offset_ms"`
	BlockLayout   string  `json:"block_layout,omitempty"`
	Memory        string  `json:"memory,omitempty"`
}

// LoadView is one load in flight on D.
type LoadView struct {
	Request     string `json:"request"` // P's request id
	Transfer    uint64 `json:"transfer"`
	Peer        string `json:"peer"`
	State       string `json:"state"`
	Reason      string `json:"reason,omitempty"`
	LeaseExpiry string `json:"lease_expiry,omitempty"` // P's hold expiry on D's clock
}

// RequestView is GET /debug/requests/{id}.
type RequestView struct {
	Request  string     `json:"request"`
	State    string     `json:"state"` // running or held
	Tokens   int        `json:"tokens"`
	Computed int        `json:"computed"`
	Pending  int        `json:"pending"` // external tokens being loaded
	Blocks   [][]int    `json:"blocks"`  // per group: the block table (0 = null)
	Scratch  [][]int    `json:"scratch,omitempty"`
	Lease    *LeaseView `json:"lease,omitempty"`
}
