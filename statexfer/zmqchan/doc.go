// Package zmqchan is the handshake side channel between a prefill instance
// (P) and a decode instance (D): before D reads a request's state from P it
// asks P, over ZeroMQ, for the transfer metadata of P's tensor-parallel ranks
// (transport addresses, remote keys, region layouts; encoded elsewhere) and
// checks that the two engines are compatible. It is the only package of the
// project that imports github.com/pebbe/zmq4.
//
// # Protocol
//
// P runs one Server per data-parallel rank, bound to
// tcp://HOST:(base_port + dp_index) (see Listen and Endpoint), on a ROUTER
// socket. D calls Fetch, which opens a fresh DEALER socket with ZMQ_LINGER 0,
// sends one Request (the TP rank wanted or RankAll, D's engine id, D's
// protocol version, D's compatibility hash) and waits for one Reply, within
// a timeout. The server answers any number of clients concurrently: a loop
// goroutine moves requests from the ROUTER socket to a pool of handler
// goroutines and their replies back; zmq sockets never cross goroutines
// after setup.
//
// A reply has two levels. Level 1 identifies the server: protocol version,
// engine id, dp index, compatibility hash, a summary of the hash's inputs,
// the server's wall-clock timestamp and a status. Level 2 is the opaque
// metadata payload produced by the server's Handler. Fetch checks level 1
// (magic, version, request id, compatibility hash, optionally engine id,
// status) before it hands the payload to the caller, so metadata is never
// decoded from an incompatible engine; the server does not even run its
// handler for a client whose hash differs. Every failure is a typed error
// wrapping one of the sentinels (ErrHashMismatch, ErrVersionMismatch,
// ErrTimeout, ErrMalformed, ErrEngineMismatch, ErrRemote) whose text says
// what differs and what to fix. On a hash mismatch, a client that passes
// its own summary (WithSummary) learns which summary fields differ.
//
// The reply's timestamp, with the client's send and receive times, estimates
// the offset between the two clocks (EstimateClockOffset, Reply.ClockOffset),
// which lease expiries need.
//
// # Messages
//
// A request travels as the zmq frames ["", request]: an empty delimiter, as a
// REQ socket sends, then the encoded request. The server answers with its
// routing envelope unchanged followed by the encoded reply, so REQ clients
// and zmq proxies work as well. The server drops frames over 64 KiB and
// messages of more than 8 frames; the client drops replies over MaxReplyLen.
//
// # Wire format
//
// Both messages are encoded by hand (wire.go, pure Go), little-endian.
// str16 is a uint16 byte length followed by that many bytes; every str16
// has a limit (Max* constants) checked by the encoder and the decoder.
// Every message starts with a common prefix that no version may change:
//
//	magic    [4]byte  "HXQ\x00" (request) or "HXR\x00" (reply)
//	version  uint16   protocol version (ProtocolVersion, now 1)
//
// A decoder reads the prefix first and rejects any other magic
// (ErrMalformed) or version (ErrVersionMismatch) before it reads anything
// else. Version 1 continues, for a request:
//
//	id           uint64    request id, echoed by the reply
//	rank         int32     TP rank, or -1 for all ranks
//	compat_hash  [32]byte  the client's compatibility hash
//	engine_id    str16     the client's engine id (<= 256 bytes)
//
// and for a reply:
//
//	status       uint8     0 ok, 1 handler error, 2 version mismatch,
//	                       3 bad request, 4 busy
//	id           uint64    the request's id (0 for status 2 and 3)
//	dp_index     uint32
//	timestamp    int64     server wall clock, Unix nanoseconds
//	compat_hash  [32]byte  the server's compatibility hash
//	engine_id    str16     (<= 256 bytes)
//	summary_n    uint16    number of summary entries (<= 128), then
//	                       summary_n times: key str16 (<= 128 bytes),
//	                       value str16 (<= 1024 bytes), keys strictly
//	                       ascending (byte order)
//	message      str16     error text when status != 0 (<= 4096 bytes)
//	payload_len  uint32    (<= 64 MiB), equal to the bytes that follow
//	payload      [payload_len]byte  level 2, opaque here
//
// Trailing bytes, truncation, over-limit lengths, unsorted or duplicate
// summary keys and unknown statuses are errors, so every byte string decodes
// to exactly one value or to an error, allocation is bounded by the input's
// length, and an accepted encoding re-encodes to the same bytes. A server
// that gets a request of another version answers, in its own version, with
// status 2; the client reports both versions. A version that changes the
// layout after the prefix must bump ProtocolVersion.
package zmqchan
