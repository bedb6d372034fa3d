package proptest

import (
	"testing"

	"pgregory.net/rapid"
)

func TestTransferByteExact(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		CheckTransfer(t, GenTransferCase().Draw(t, "case"))
	})
}
