package proptest

import (
	"testing"

	"pgregory.net/rapid"
)

func TestServingEqualsMonolithic(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		CheckServing(t, GenServeCase().Draw(t, "case"))
	})
}
