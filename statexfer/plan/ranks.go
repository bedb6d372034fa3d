package plan

import "sort"

// natural returns the P ranks that D rank d naturally pairs with: with
// pTP >= dTP the pTP/dTP ranks whose shards make up d's; otherwise the one
// P rank whose shard contains d's. Every P rank is natural to at least one D
// rank, which is what makes the notification plan complete.
func natural(pTP, dTP, d int) (lo, hi int) {
	if pTP >= dTP {
		k := pTP / dTP
		return d * k, (d + 1) * k
	}
	p := d * pTP / dTP
	return p, p + 1
}

// holders returns the P ranks [lo, hi) holding unit u of units sharded over
// pTP (replicated when pTP > units).
func holders(units, pTP, u int) (lo, hi int) {
	if units%pTP == 0 {
		p := u / (units / pTP)
		return p, p + 1
	}
	// replicated: pTP is a multiple of units
	k := pTP / units
	return u * k, (u + 1) * k
}

// pick chooses, among holder ranks [lo, hi), the first inside D's natural
// range [nlo, nhi), else the first holder. Deterministic.
func pick(lo, hi, nlo, nhi int) int {
	for p := lo; p < hi; p++ {
		if p >= nlo && p < nhi {
			return p
		}
	}
	return lo
}

// Notifications is the static notification plan between a P of pTP ranks
// and a D of dTP ranks: targets[d] are the P ranks D rank d notifies when a
// request's reads complete (its natural ranks: every rank it can read from,
// and for replicated state the ranks it reads nothing from but must
// release), and consumers[p] is how many notifications P rank p waits for
// before freeing the request's blocks.
func Notifications(pTP, dTP int) (targets [][]int, consumers []int) {
	targets = make([][]int, dTP)
	consumers = make([]int, pTP)
	for d := 0; d < dTP; d++ {
		lo, hi := natural(pTP, dTP, d)
		for p := lo; p < hi; p++ {
			targets[d] = append(targets[d], p)
			consumers[p]++
		}
		sort.Ints(targets[d])
	}
	return targets, consumers
}
