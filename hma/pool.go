package hma

// noLink marks the end of the free list and a block that is not in it.
const noLink int32 = -1

// noGroup is the owner of a block that belongs to no group (fresh and free).
const noGroup int32 = -1

// block is the per-block metadata of a pool, indexed by block id.
type block struct {
	prev, next int32 // free-list links, noLink at the ends
	ref        int32 // number of table (or scratch) slots holding the block
	owner      int32 // group the block belongs to, noGroup if none
	hash       BlockHash
	hashed     bool // the block is the prefix-cache entry for (hash, owner)
	inFree     bool
}

type cacheKey struct {
	hash  BlockHash
	group int32
}

// pool is one block pool: block 0 is the null block, the others are either
// referenced (ref > 0) or in the free queue. The free queue is an intrusive
// doubly linked list: fresh (unhashed) blocks are pushed at the head and
// reused first, prefix-cached blocks are appended at the tail and kept
// longest. Allocation pops the head.
type pool struct {
	blocks     []block
	head, tail int32
	numFree    int
	cache      map[cacheKey]int32
}

func newPool(numBlocks int) *pool {
	p := &pool{
		blocks: make([]block, numBlocks),
		head:   noLink,
		tail:   noLink,
		cache:  make(map[cacheKey]int32),
	}
	p.blocks[0] = block{prev: noLink, next: noLink, owner: noGroup}
	for id := 1; id < numBlocks; id++ {
		p.blocks[id] = block{prev: noLink, next: noLink, owner: noGroup}
		p.pushBack(int32(id))
	}
	return p
}

func (p *pool) pushBack(id int32) {
	b := &p.blocks[id]
	b.prev, b.next, b.inFree = p.tail, noLink, true
	if p.tail == noLink {
		p.head = id
	} else {
		p.blocks[p.tail].next = id
	}
	p.tail = id
	p.numFree++
}

func (p *pool) pushFront(id int32) {
	b := &p.blocks[id]
	b.prev, b.next, b.inFree = noLink, p.head, true
	if p.head == noLink {
		p.tail = id
	} else {
		p.blocks[p.head].prev = id
	}
	p.head = id
	p.numFree++
}

func (p *pool) remove(id int32) {
	b := &p.blocks[id]
	if b.prev == noLink {
		p.head = b.next
	} else {
		p.blocks[b.prev].next = b.next
	}
	if b.next == noLink {
		p.tail = b.prev
	} else {
		p.blocks[b.next].prev = b.prev
	}
	b.prev, b.next, b.inFree = noLink, noLink, false
	p.numFree--
}

// alloc pops the least valuable free block for group g; the caller checked
// that one is free. A reused block loses its prefix-cache entry.
func (p *pool) alloc(g int32) int32 {
	id := p.head
	p.remove(id)
	b := &p.blocks[id]
	if b.hashed {
		p.dropHash(id)
	}
	b.ref = 1
	b.owner = g
	return id
}

// touch takes one more reference on a prefix-cache hit, taking it out of the
// free queue if it was there.
func (p *pool) touch(id int32) {
	b := &p.blocks[id]
	if b.ref == 0 {
		p.remove(id)
	}
	b.ref++
}

// release drops one reference; at zero the block goes back to the free queue,
// at the tail if it is prefix-cached, at the head otherwise.
func (p *pool) release(id int32) {
	b := &p.blocks[id]
	b.ref--
	if b.ref > 0 {
		return
	}
	if b.hashed {
		p.pushBack(id)
		return
	}
	b.owner = noGroup
	p.pushFront(id)
}

// lookup returns the cached block of (h, g), or 0.
func (p *pool) lookup(h BlockHash, g int32) int32 {
	return p.cache[cacheKey{h, g}]
}

// cacheBlock makes block id the prefix-cache entry of (h, g) unless it is
// already hashed or another block holds that entry (no dedup, so tables stay
// append-only).
func (p *pool) cacheBlock(id int32, h BlockHash, g int32) {
	b := &p.blocks[id]
	if b.hashed {
		return
	}
	k := cacheKey{h, g}
	if _, ok := p.cache[k]; ok {
		return
	}
	p.cache[k] = id
	b.hash, b.hashed = h, true
}

// dropHash removes block id from the prefix cache. A free block keeps its
// place in the free queue; it now belongs to no group.
func (p *pool) dropHash(id int32) {
	b := &p.blocks[id]
	delete(p.cache, cacheKey{b.hash, b.owner})
	b.hash, b.hashed = 0, false
	if b.ref == 0 {
		b.owner = noGroup
	}
}
