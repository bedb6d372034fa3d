// Package tokenizer is the reference model's tokenizer: one token per
// byte (Tokenize: b -> b mod refmodel.Vocab), a printable rendering of
// each token (Detokenize) and, because that rendering does not map back,
// TokenText: text that tokenizes to given tokens exactly, for follow-up
// prompts that continue a conversation token for token. It is pure and
// total; the engine, the property suite, verify and the demo share it.
package tokenizer
