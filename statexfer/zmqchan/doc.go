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
// handler for a client whose hash differs, nor, when ServerConfig.Ranks is
// set, for a rank outside [0, Ranks) other than RankAll (it answers status
// 3, bad request, naming the rank and the range). Every failure is a typed
// error wrapping one of the sentinels (ErrHashMismatch, ErrVersionMismatch,
// ErrTimeout, ErrMalformed, ErrEngineMismatch, ErrRemote,
// ErrUnauthenticated) whose text says what differs and what to fix. On a hash mismatch, a client that passes
// its own summary (WithSummary) learns which summary fields differ.
//
// The reply's timestamp, with the client's send and receive times, estimates
// the offset between the two clocks (EstimateClockOffset, Reply.ClockOffset),
// which lease expiries need.
//
// The server logs a WARN line per refused or failed request (bad request,
// other version or hash, busy, handler error, refused CURVE client), rate
// limited per kind: 10 at once, then one per second; the next line logged
// after suppressed ones carries suppressed=N.
//
// # Authentication
//
// Without configuration the channel is plaintext and unauthenticated: anyone
// who reaches the port and knows the compatibility hash gets the metadata,
// remote keys included. With ServerConfig.Curve the server speaks ZeroMQ
// CURVE (RFC 26, Curve25519 via libsodium), and Fetch must use WithCurve.
// CURVE gives:
//
//   - server authentication: the client names the server's public key
//     (CurveClient.ServerPublic); only the holder of the matching secret key
//     can complete the handshake, so a decode instance does not hand its
//     request to an impostor, nor accept its metadata;
//   - a client allow-list: the server admits only clients whose public key
//     is in CurveServer.Allow (clients prove they hold the secret key);
//   - encryption and integrity of everything after the handshake: requests,
//     replies and the metadata in flight.
//
// Each CURVE server runs its own ZAP handler (RFC 27) on its own zmq
// context, answered by the server's loop goroutine: servers in one process
// share no authentication state (pebbe/zmq4's process-wide auth handler is
// not used), and one server's allow-list never admits a client to another.
//
// A peer that is not admitted never gets a request delivered: ZeroMQ breaks
// off its handshake, so the handler is not run and the server sends nothing
// but the handshake's error. The server logs refused keys (WARN, rate
// limited, with the peer's IP address and public key). zmq would retry such
// a connection silently until the timeout; Fetch watches its socket's
// handshake events instead and fails at the first failure with an
// *UnauthenticatedError (ErrUnauthenticated), whose Failure says which case
// it is:
//
//	client key not in the allow-list   AuthRefused: "the prefill refused our
//	                                   CURVE key PUB: add PUB to its
//	                                   allow-list"
//	plaintext client, CURVE server     AuthServerRequiresCurve
//	CURVE client, plaintext server     AuthServerPlaintext, or
//	                                   AuthHandshakeFailed when the server
//	                                   hangs up first
//	wrong ServerPublic                 AuthHandshakeFailed ("check that KEY,
//	                                   the server public key we use, is that
//	                                   prefill's public key")
//
// ZeroMQ cannot tell a wrong server key from a plaintext server that hangs
// up first, so AuthHandshakeFailed names both. What remains a timeout
// (*TimeoutError) is a server that accepts the TCP connection but never
// completes nor breaks off the handshake (a hung process, a service that is
// not zmq and waits); TimeoutError.Connected and Handshaken, and its text,
// say how far the fetch got.
//
// Key files (`hybridxfer keys curve --out PREFIX` writes a pair):
//
//   - a secret key file (LoadCurveKey) holds the Z85 secret key, 40
//     characters, on one line. It must not be accessible by group or others
//     (chmod 600): LoadCurveKey refuses it otherwise. The public key is
//     derived from it.
//   - a public key file (PREFIX.pub, LoadCurvePublic) holds one Z85 public
//     key; a decode instance reads the prefill's to set ServerPublic.
//   - an allow-list file (LoadAllowList) holds one Z85 public key per line.
//     Blank lines, lines starting with '#', and a '#' comment after a key
//     ("KEY  # decode-3") are ignored; '#' cannot start a valid Z85 key. Any
//     other line is an error naming the file and the line. A .pub file is a
//     one-key allow-list; concatenate the decode instances' .pub files to
//     make one.
//
// The same line rules hold for all three. Key errors never quote the key's
// text. Keys are Z85 (RFC 32): 40 characters of the Z85 alphabet, each
// group of 5 encoding a 32-bit value (CheckCurveKey).
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
//	id           uint64    the request's id (0 for status 2, and for 3
//	                       when the request could not be decoded)
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
