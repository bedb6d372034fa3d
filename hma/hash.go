package hma

// BlockHash identifies the contents of a full block and of every block before
// it (a hash chain). The prefix cache is keyed by (BlockHash, group id).
type BlockHash uint64

// RootHash is the parent hash of a request's first block.
const RootHash BlockHash = 0x9e3779b97f4a7c15

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

// HashBlock is the chained FNV-1a 64 hash of one full block: its parent's
// hash, the block size it was cut at, the request's extra key (LoRA, cache
// salt, ...; 0 for none) and the block's token ids, all little endian.
// Groups with different block sizes hash the same tokens to different chains.
func HashBlock(parent BlockHash, blockSize int, extra uint64, tokens []uint32) BlockHash {
	h := uint64(fnvOffset)
	h = mix64(h, uint64(parent))
	h = mix64(h, uint64(blockSize))
	h = mix64(h, extra)
	for _, t := range tokens {
		h ^= uint64(t & 0xff)
		h *= fnvPrime
		h ^= uint64(t >> 8 & 0xff)
		h *= fnvPrime
		h ^= uint64(t >> 16 & 0xff)
		h *= fnvPrime
		h ^= uint64(t >> 24)
		h *= fnvPrime
	}
	return BlockHash(h)
}

func mix64(h, v uint64) uint64 {
	for i := 0; i < 8; i++ {
		h ^= v & 0xff
		h *= fnvPrime
		v >>= 8
	}
	return h
}

// HashBlocks returns the hash chain of every full block of tokens cut at
// blockSize (none when blockSize < 1).
func HashBlocks(tokens []uint32, blockSize int, extra uint64) []BlockHash {
	if blockSize < 1 {
		return nil
	}
	n := len(tokens) / blockSize
	out := make([]BlockHash, n)
	parent := RootHash
	for i := 0; i < n; i++ {
		parent = HashBlock(parent, blockSize, extra, tokens[i*blockSize:(i+1)*blockSize])
		out[i] = parent
	}
	return out
}
