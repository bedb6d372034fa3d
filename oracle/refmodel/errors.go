package refmodel

import "errors"

// Sentinel errors. Every error returned by this package wraps one of them.
var (
	// ErrNotMiniature: the model given to New is not one the reference
	// model can run (it does not validate, a dtype is not fp32, an MLA
	// cache uses fp8_ds_mla, or a recurrent family has no update rule).
	// Build it with Miniature.
	ErrNotMiniature = errors.New("refmodel: not a miniature model")
	// ErrCoord: a state coordinate is outside the model's global shape, or
	// the vector passed with it has the wrong length.
	ErrCoord = errors.New("refmodel: bad state coordinate")
	// ErrMissingState: a read found no state at a coordinate: a null block
	// in a RankStore, a never-written element in a MapStore. The state the
	// step needs is not there (not transferred, already freed, skipped).
	ErrMissingState = errors.New("refmodel: missing state")
	// ErrNullBlock: a write addressed a position or state slot whose block
	// is null: the caller did not allocate before computing.
	ErrNullBlock = errors.New("refmodel: write to a null block")
	// ErrBadBlock: a block id is negative or beyond the rank's memory.
	ErrBadBlock = errors.New("refmodel: block id out of range")
	// ErrStoreConfig: the ranks, geometries or memories given to
	// NewRankStore do not describe one instance.
	ErrStoreConfig = errors.New("refmodel: inconsistent rank store")
	// ErrToken: a token id is outside the vocabulary.
	ErrToken = errors.New("refmodel: token out of vocabulary")
	// ErrRange: a position or position range is unusable.
	ErrRange = errors.New("refmodel: bad position range")
	// ErrStateMismatch: two snapshots differ.
	ErrStateMismatch = errors.New("refmodel: states differ")
)
