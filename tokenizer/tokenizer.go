package tokenizer

import (
	"strings"

	"github.com/hybridxfer/hybridxfer/oracle/refmodel"
)

// alphabet renders token t as alphabet[t]: exactly refmodel.Vocab distinct
// printable characters.
const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ."

// The alphabet must cover the vocabulary exactly; a mismatch is a negative
// array length, so it fails to compile.
var (
	_ [len(alphabet) - refmodel.Vocab]struct{}
	_ [refmodel.Vocab - len(alphabet)]struct{}
)

// Tokenize maps text to the reference model's token ids, one token per
// byte: b -> b mod Vocab. It is deterministic and total. The empty string
// becomes the single token 0, so a prompt is never empty.
func Tokenize(s string) []uint32 {
	if s == "" {
		return []uint32{0}
	}
	toks := make([]uint32, len(s))
	for i := 0; i < len(s); i++ {
		toks[i] = uint32(s[i]) % refmodel.Vocab
	}
	return toks
}

// Detokenize renders one token as a single printable character. Ids
// outside the vocabulary render as U+FFFD.
func Detokenize(t uint32) string {
	if t >= refmodel.Vocab {
		return "\uFFFD"
	}
	return alphabet[t : t+1]
}

// TokenText is text that Tokenize maps back to toks exactly (byte
// Vocab+t for token t; Detokenize's printable rendering does not
// round-trip): a follow-up prompt that continues a conversation with its
// answer, token for token.
func TokenText(toks []uint32) string {
	b := make([]byte, len(toks))
	for i, t := range toks {
		b[i] = byte(refmodel.Vocab + t%refmodel.Vocab)
	}
	return string(b)
}

// Retokenize returns the tokens whose Detokenize renderings make up text
// (an answer as the API returns it), or false when text holds a
// character Detokenize never produces.
func Retokenize(text string) ([]uint32, bool) {
	out := make([]uint32, 0, len(text))
	for i := 0; i < len(text); i++ {
		t := strings.IndexByte(alphabet, text[i])
		if t < 0 {
			return nil, false
		}
		out = append(out, uint32(t))
	}
	return out, true
}
