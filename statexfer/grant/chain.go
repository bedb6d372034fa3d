package grant

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
)

// ChainBlock is the number of tokens per link of a token chain.
const ChainBlock = 16

// LinkBytes is the size of one link.
const LinkBytes = 16

// Handoff names of the grants a decode instance issues for a finished
// turn (kv_transfer_params handoff): the state of the conversation so
// far, readable back by a prefill instance for the next turn. A grant of
// this kind never passes Check (a decode instance refuses it as a P ->
// D grant) and a P -> D grant never passes CheckExport.
const HandoffExport = "decode-export"

// TokenChain is a hash chain over tokens, one link per ChainBlock tokens
// (the last link covers the last, possibly partial, block): link i is the
// first LinkBytes of SHA-256(link i-1 ‖ the little-endian token ids of
// block i), link -1 being empty. Link i commits to the first
// min((i+1)·ChainBlock, len(tokens)) tokens, so comparing chains link by
// link finds the longest common block-aligned prefix without sending the
// tokens. It is returned as the links concatenated, hex.
func TokenChain(tokens []uint32) string {
	return hex.EncodeToString(chainLinks(tokens))
}

func chainLinks(tokens []uint32) []byte {
	var out []byte
	var prev []byte
	var b [4]byte
	for lo := 0; lo < len(tokens); lo += ChainBlock {
		h := sha256.New()
		h.Write(prev)
		for _, t := range tokens[lo:min(lo+ChainBlock, len(tokens))] {
			binary.LittleEndian.PutUint32(b[:], t)
			h.Write(b[:])
		}
		sum := h.Sum(nil)[:LinkBytes]
		out = append(out, sum...)
		prev = sum
	}
	return out
}

// ChainDigest is what a grant binds of a chain (its Prompt field): the
// SHA-256 of the chain's text.
func ChainDigest(chain string) [32]byte { return sha256.Sum256([]byte(chain)) }

// ChainMatch compares chain, the chain of a sequence of n tokens, with
// tokens and returns how many leading tokens the two have in common as
// far as the chain can tell: a multiple of ChainBlock, or n when every
// link matches and tokens has at least n tokens. A malformed chain (not
// hex, or not one link per block of n) is an error.
func ChainMatch(chain string, n int, tokens []uint32) (int, error) {
	raw, err := hex.DecodeString(chain)
	if err != nil {
		return 0, fmt.Errorf("%w: token_chain is not hex", ErrMalformed)
	}
	links := (n + ChainBlock - 1) / ChainBlock
	if n < 0 || len(raw) != links*LinkBytes {
		return 0, fmt.Errorf("%w: token_chain has %d bytes, %d tokens need %d links of %d", ErrMalformed, len(raw), n, links, LinkBytes)
	}
	own := chainLinks(tokens[:min(n, len(tokens))])
	matched := 0
	for i := 0; i < links && (i+1)*LinkBytes <= len(own); i++ {
		if string(own[i*LinkBytes:(i+1)*LinkBytes]) != string(raw[i*LinkBytes:(i+1)*LinkBytes]) {
			break
		}
		matched = min((i+1)*ChainBlock, n)
	}
	// A partial last link of tokens (fewer than n tokens) hashes fewer
	// token bytes than the chain's link of that block, so it differs: the
	// match ends at the block before it.
	return matched, nil
}

// CheckExport checks a decode instance's export grant against its
// kv_transfer_params p and their token chain: every field as Check does
// and the chain's digest instead of a prompt hash.
func (g *Grant) CheckExport(p Params, chain string) error {
	if g.Handoff != HandoffExport {
		return &FieldError{Field: "handoff", Msg: fmt.Sprintf("%q: not a decode instance's export", g.Handoff)}
	}
	if err := g.checkParams(p); err != nil {
		return err
	}
	if ChainDigest(chain) != g.Prompt {
		return &FieldError{Field: "token_chain", Msg: "differs from the chain the grant was issued for"}
	}
	return nil
}
