package zmqchan

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hybridxfer/hybridxfer/internal/ratelog"
	"github.com/pebbe/zmq4"
)

// Handler answers one request. It runs on one of the server's worker
// goroutines, possibly concurrently with other calls, and must return in
// bounded time: Server.Close waits for running handlers.
//
// Only the Payload of the returned Reply is used: the server stamps every
// level-1 field (version, engine id, dp index, compatibility hash, summary,
// timestamp) from its ServerConfig and its clock, so a handler cannot
// misstate the engine's identity. A returned error travels back to the
// client, which gets a *RemoteError holding its text.
//
// The server calls the handler only for requests of its protocol version
// whose compatibility hash equals ServerConfig.CompatHash and, when
// ServerConfig.Ranks is set, whose rank is RankAll or in [0, Ranks); with
// ServerConfig.Curve, only for clients whose key is allow-listed.
type Handler func(req Request) (Reply, error)

// ServerConfig configures a Server.
type ServerConfig struct {
	// Host is the interface to bind: an IP address, a host name, or "*" or
	// "" for every interface.
	Host string
	// BasePort and DPIndex give the port: BasePort + DPIndex. A zero
	// BasePort binds an ephemeral port (see Server.Port).
	BasePort int
	DPIndex  int

	// EngineID, CompatHash and Summary identify the engine in every reply.
	EngineID   string
	CompatHash Hash
	Summary    map[string]string

	// Handler answers requests. Required.
	Handler Handler

	// Ranks is the number of TP ranks the server serves. When positive, a
	// request for a rank outside [0, Ranks) other than RankAll is answered
	// StatusBadRequest without running the handler. 0 leaves the check to
	// the handler.
	Ranks int

	// Curve, when set, makes the server a CURVE server: clients must
	// prove a key in Curve.Allow, and the connection is encrypted. Other
	// clients are refused during the handshake; their requests never
	// reach the server. See "# Authentication" in the package doc.
	Curve *CurveServer

	// Logger receives the server's logs; nil means slog.Default().
	Logger *slog.Logger
	// Workers is the number of handler goroutines; 0 means 4.
	Workers int
	// QueueLen is the number of requests that may wait for a worker; a
	// request beyond it is answered StatusBusy at once. 0 means 256.
	QueueLen int
	// Clock stamps Reply.Timestamp; nil means time.Now. For tests.
	Clock func() time.Time
}

const (
	defaultWorkers  = 4
	defaultQueueLen = 256

	// serverMaxMsgSize bounds every frame the server accepts. It is far
	// above MaxRequestLen so that a request of a later, larger protocol
	// version still gets a version-mismatch answer instead of a dropped
	// connection.
	serverMaxMsgSize = 64 << 10
	// maxEnvelopeFrames bounds the frames of one request (routing
	// identities, delimiter, body).
	maxEnvelopeFrames = 8
	// loopPollInterval bounds how long the server loop sleeps without
	// checking whether it was closed (Close also wakes it at once).
	loopPollInterval = 250 * time.Millisecond
	// maxDrain bounds the messages the loop takes from one socket before it
	// looks at the others.
	maxDrain = 64
	// zapEndpoint is where libzmq sends ZAP requests (RFC 27), in each
	// context.
	zapEndpoint = "inproc://zeromq.zap.01"
)

// Server answers handshake requests on a ROUTER socket.
//
// Goroutines and sockets: the loop goroutine owns the ROUTER socket (clients),
// an inproc PULL socket (replies from workers), an inproc PULL socket
// (Close's wake-up) and, with CURVE, the REP socket of the ZAP handler. Each
// worker goroutine owns one inproc PUSH socket. Every socket is created in
// Listen, handed over once, and then used and closed by its owner only. All of them live in a zmq context of the server's own,
// terminated by Close after every socket is closed.
type Server struct {
	cfg  ServerConfig
	log  *slog.Logger
	zctx *zmq4.Context
	addr string
	port int

	ctrlEndpoint string
	jobs         chan job
	warns        *[numWarnKinds]*ratelog.Limiter

	// CURVE: the server's public key, its ZAP domain and the allowed
	// client keys (read-only after Listen).
	curvePublic string
	zapDomain   string
	curveAllow  map[string]bool

	closing   atomic.Bool
	loopDone  chan struct{}
	workersWG sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

type job struct {
	envelope [][]byte // routing frames, returned with the reply
	body     []byte
}

var serverSeq atomic.Uint64

// Endpoint returns the zmq endpoint of the server of dp rank dpIndex of an
// engine on host whose base port is basePort: tcp://host:(basePort+dpIndex).
func Endpoint(host string, basePort, dpIndex int) string {
	return "tcp://" + net.JoinHostPort(host, strconv.Itoa(basePort+dpIndex))
}

// Listen binds tcp://Host:(BasePort+DPIndex) and starts serving.
func Listen(cfg ServerConfig) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Workers == 0 {
		cfg.Workers = defaultWorkers
	}
	if cfg.QueueLen == 0 {
		cfg.QueueLen = defaultQueueLen
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	host := cfg.Host
	if host == "" {
		host = "*"
	}
	port := "*"
	if cfg.BasePort != 0 {
		port = strconv.Itoa(cfg.BasePort + cfg.DPIndex)
	}
	bindEndpoint := "tcp://" + net.JoinHostPort(host, port)

	var curvePublic string
	var curveAllow map[string]bool
	if cfg.Curve != nil {
		var err error
		if curvePublic, curveAllow, err = cfg.Curve.validate(); err != nil {
			return nil, err
		}
	}

	zctx, err := zmq4.NewContext()
	if err != nil {
		return nil, fmt.Errorf("zmqchan: new zmq context: %w", err)
	}
	s := &Server{
		cfg:          cfg,
		log:          cfg.Logger.With("component", "zmqchan", "engine", cfg.EngineID, "dp", cfg.DPIndex),
		zctx:         zctx,
		ctrlEndpoint: fmt.Sprintf("inproc://zmqchan-ctrl-%d", serverSeq.Add(1)),
		jobs:         make(chan job, cfg.QueueLen),
		warns:        newWarnLimiters(),
		loopDone:     make(chan struct{}),
		curvePublic:  curvePublic,
		curveAllow:   curveAllow,
	}
	repliesEndpoint := fmt.Sprintf("inproc://zmqchan-replies-%d", serverSeq.Add(1))

	var socks []*zmq4.Socket
	fail := func(format string, args ...any) (*Server, error) {
		err := fmt.Errorf(format, args...)
		for _, sk := range socks {
			sk.SetLinger(0)
			sk.Close()
		}
		zctx.Term()
		return nil, err
	}
	newSocket := func(t zmq4.Type) (*zmq4.Socket, error) {
		sk, err := zctx.NewSocket(t)
		if err != nil {
			return nil, err
		}
		socks = append(socks, sk)
		return sk, sk.SetLinger(0)
	}

	// The ZAP handler: ZeroMQ asks it, over inproc://zeromq.zap.01 of the
	// socket's own context, whether to admit each CURVE client. The
	// server's context is its own, so the handler is too: no process-wide
	// state is shared with other servers. It must be bound before the
	// ROUTER socket accepts anyone, for without a ZAP handler libzmq
	// admits every CURVE client.
	var zap *zmq4.Socket
	if cfg.Curve != nil {
		s.zapDomain = fmt.Sprintf("zmqchan-%d", serverSeq.Add(1))
		if zap, err = newSocket(zmq4.REP); err != nil {
			return fail("zmqchan: new ZAP socket: %w", err)
		}
		if err := zap.Bind(zapEndpoint); err != nil {
			return fail("zmqchan: bind ZAP handler %s: %w", zapEndpoint, err)
		}
	}

	router, err := newSocket(zmq4.ROUTER)
	if err != nil {
		return fail("zmqchan: new ROUTER socket: %w", err)
	}
	if cfg.Curve != nil {
		if err := router.ServerAuthCurve(s.zapDomain, cfg.Curve.Secret); err != nil {
			return fail("zmqchan: make the ROUTER socket a CURVE server: %w", err)
		}
	}
	if err := router.SetMaxmsgsize(serverMaxMsgSize); err != nil {
		return fail("zmqchan: set ZMQ_MAXMSGSIZE: %w", err)
	}
	if strings.Contains(host, ":") {
		if err := router.SetIpv6(true); err != nil {
			return fail("zmqchan: set ZMQ_IPV6: %w", err)
		}
	}
	if err := router.Bind(bindEndpoint); err != nil {
		return fail("zmqchan: bind %s: %w (is another engine or dp rank using port %s? check base port and dp index)", bindEndpoint, err, port)
	}
	if s.addr, err = router.GetLastEndpoint(); err != nil {
		return fail("zmqchan: read bound endpoint: %w", err)
	}
	if i := strings.LastIndexByte(s.addr, ':'); i >= 0 {
		s.port, _ = strconv.Atoi(s.addr[i+1:])
	}

	replies, err := newSocket(zmq4.PULL)
	if err != nil {
		return fail("zmqchan: new PULL socket: %w", err)
	}
	if err := replies.Bind(repliesEndpoint); err != nil {
		return fail("zmqchan: bind %s: %w", repliesEndpoint, err)
	}
	ctrl, err := newSocket(zmq4.PULL)
	if err != nil {
		return fail("zmqchan: new PULL socket: %w", err)
	}
	if err := ctrl.Bind(s.ctrlEndpoint); err != nil {
		return fail("zmqchan: bind %s: %w", s.ctrlEndpoint, err)
	}
	pushes := make([]*zmq4.Socket, cfg.Workers)
	for i := range pushes {
		if pushes[i], err = newSocket(zmq4.PUSH); err != nil {
			return fail("zmqchan: new PUSH socket: %w", err)
		}
		if err := pushes[i].Connect(repliesEndpoint); err != nil {
			return fail("zmqchan: connect %s: %w", repliesEndpoint, err)
		}
	}

	// Hand the sockets over; from here on only their owners touch them.
	s.workersWG.Add(len(pushes))
	for _, p := range pushes {
		go s.worker(p)
	}
	go s.loop(router, replies, ctrl, zap)
	args := []any{"addr", s.addr, "workers", cfg.Workers,
		"protocol_version", ProtocolVersion, "compat_hash", cfg.CompatHash.String()}
	if cfg.Curve != nil {
		args = append(args, "curve_public", curvePublic, "curve_allowed_clients", len(curveAllow))
	} else {
		args = append(args, "curve", false)
	}
	if cfg.Ranks > 0 {
		args = append(args, "ranks", cfg.Ranks)
	}
	s.log.Info("zmqchan: handshake server listening", args...)
	return s, nil
}

func (c *ServerConfig) validate() error {
	switch {
	case c.Handler == nil:
		return errors.New("zmqchan: ServerConfig.Handler is nil")
	case c.BasePort < 0 || c.BasePort > 65535:
		return fmt.Errorf("zmqchan: ServerConfig.BasePort %d out of range [0, 65535]", c.BasePort)
	case c.DPIndex < 0:
		return fmt.Errorf("zmqchan: ServerConfig.DPIndex %d is negative", c.DPIndex)
	case c.BasePort != 0 && c.BasePort+c.DPIndex > 65535:
		return fmt.Errorf("zmqchan: port BasePort+DPIndex = %d+%d exceeds 65535; lower the base port", c.BasePort, c.DPIndex)
	case int64(c.DPIndex) > 1<<32-1:
		return fmt.Errorf("zmqchan: ServerConfig.DPIndex %d does not fit the wire format", c.DPIndex)
	case c.Workers < 0:
		return fmt.Errorf("zmqchan: ServerConfig.Workers %d is negative", c.Workers)
	case c.QueueLen < 0:
		return fmt.Errorf("zmqchan: ServerConfig.QueueLen %d is negative", c.QueueLen)
	case c.Ranks < 0 || int64(c.Ranks) > math.MaxInt32:
		return fmt.Errorf("zmqchan: ServerConfig.Ranks %d out of range [0, %d]", c.Ranks, math.MaxInt32)
	}
	// The identity fields must fit a reply; check them once here rather
	// than fail every request.
	if err := checkReply(&Reply{EngineID: c.EngineID, Summary: c.Summary}); err != nil {
		return fmt.Errorf("zmqchan: ServerConfig: %w", err)
	}
	return nil
}

// Addr returns the endpoint the server is bound to, as zmq reports it (for
// example tcp://127.0.0.1:40123; tcp://0.0.0.0:40123 for every interface).
func (s *Server) Addr() string { return s.addr }

// Port returns the TCP port the server is bound to.
func (s *Server) Port() int { return s.port }

// CurvePublic returns the server's CURVE public key (Z85), which clients
// need (CurveClient.ServerPublic), or "" when the server does not use CURVE.
func (s *Server) CurvePublic() string { return s.curvePublic }

// Close stops the server: it stops accepting requests, closes its sockets,
// waits for running handlers to return and terminates its zmq context.
// Replies of handlers still running are dropped; their clients time out.
// Close is idempotent; calls after the first return the first's result.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.closing.Store(true)
		s.wakeLoop()
		<-s.loopDone
		s.workersWG.Wait()
		if err := s.zctx.Term(); err != nil {
			s.closeErr = fmt.Errorf("zmqchan: terminate zmq context: %w", err)
		}
		s.log.Info("zmqchan: handshake server closed", "addr", s.addr)
	})
	return s.closeErr
}

// wakeLoop tells the loop to stop now rather than at its next poll timeout.
// It is best effort: the loop also checks s.closing after every poll.
func (s *Server) wakeLoop() {
	select {
	case <-s.loopDone:
		return
	default:
	}
	sk, err := s.zctx.NewSocket(zmq4.PUSH)
	if err != nil {
		return
	}
	defer sk.Close()
	// A bounded linger lets the wake-up reach the loop's pipe without
	// letting an undeliverable one hold up context termination.
	sk.SetLinger(time.Second)
	if sk.Connect(s.ctrlEndpoint) == nil {
		sk.Send("stop", zmq4.DONTWAIT)
	}
}

// loop owns the server's sockets; zap is nil without CURVE.
func (s *Server) loop(router, replies, ctrl, zap *zmq4.Socket) {
	defer close(s.loopDone)
	defer func() {
		router.Close()
		replies.Close()
		ctrl.Close()
		if zap != nil {
			zap.Close() // after the router: no handshake goes unanswered
		}
		close(s.jobs) // workers drain and exit
	}()

	poller := zmq4.NewPoller()
	poller.Add(router, zmq4.POLLIN)
	poller.Add(replies, zmq4.POLLIN)
	poller.Add(ctrl, zmq4.POLLIN)
	if zap != nil {
		poller.Add(zap, zmq4.POLLIN)
	}
	for !s.closing.Load() {
		polled, err := poller.PollAll(loopPollInterval)
		if err != nil {
			s.log.Error("zmqchan: poll failed, server stops", "addr", s.addr, "err", err)
			s.closing.Store(true)
			return
		}
		if polled[2].Events&zmq4.POLLIN != 0 {
			return
		}
		if zap != nil && polled[3].Events&zmq4.POLLIN != 0 {
			s.answerZAP(zap)
		}
		if polled[1].Events&zmq4.POLLIN != 0 {
			s.forwardReplies(replies, router)
		}
		if polled[0].Events&zmq4.POLLIN != 0 {
			s.dispatch(router)
		}
	}
}

// answerZAP answers the pending ZAP requests (one per CURVE handshake).
func (s *Server) answerZAP(zap *zmq4.Socket) {
	for range maxDrain {
		msg, err := zap.RecvMessageBytes(zmq4.DONTWAIT)
		if err != nil {
			return // EAGAIN: drained
		}
		// A REP socket must answer before it can receive again; the
		// inproc pipe to libzmq's ZAP client always has room.
		if _, err := zap.SendMessageDontwait(s.zapDecide(msg)); err != nil {
			s.log.Error("zmqchan: cannot answer ZAP request; CURVE handshakes may hang", "err", err)
		}
	}
}

// forwardReplies moves finished replies from the workers to the clients.
func (s *Server) forwardReplies(replies, router *zmq4.Socket) {
	for range maxDrain {
		frames, err := recvFrames(replies, maxEnvelopeFrames+1)
		if err != nil {
			return // EAGAIN: drained
		}
		// A ROUTER drops a message for a client that went away.
		if _, err := router.SendMessageDontwait(frames); err != nil {
			s.log.Debug("zmqchan: reply dropped", "err", err)
		}
	}
}

// dispatch queues requests for the workers.
func (s *Server) dispatch(router *zmq4.Socket) {
	for range maxDrain {
		frames, err := recvFrames(router, maxEnvelopeFrames)
		if errors.Is(err, errTooManyFrames) {
			s.warn(warnDropped, "zmqchan: request dropped", "err", err)
			continue
		}
		if err != nil {
			return // EAGAIN: drained
		}
		if len(frames) < 2 {
			s.warn(warnDropped, "zmqchan: request dropped: no body frame", "frames", len(frames))
			continue
		}
		j := job{envelope: frames[:len(frames)-1], body: frames[len(frames)-1]}
		select {
		case s.jobs <- j:
		default:
			r := s.baseReply()
			if req, err := DecodeRequest(j.body); err == nil {
				r.RequestID = req.ID
			}
			r.Status = StatusBusy
			r.Message = fmt.Sprintf("%d requests queued for %d handlers; retry later", s.cfg.QueueLen, s.cfg.Workers)
			s.warn(warnBusy, "zmqchan: busy, request refused", "queued", s.cfg.QueueLen)
			if _, err := router.SendMessageDontwait(j.envelope, s.encode(&r)); err != nil {
				s.log.Debug("zmqchan: reply dropped", "err", err)
			}
		}
	}
}

func (s *Server) worker(push *zmq4.Socket) {
	defer s.workersWG.Done()
	defer push.Close()
	for j := range s.jobs {
		if s.closing.Load() {
			continue // nobody would get the reply
		}
		out := s.serve(j.body)
		// DONTWAIT: the inproc pipe has room for far more than one reply
		// per worker; it only fails once the loop has gone.
		if _, err := push.SendMessageDontwait(j.envelope, out); err != nil {
			s.log.Debug("zmqchan: reply dropped", "err", err)
		}
	}
}

func (s *Server) baseReply() Reply {
	return Reply{
		Version:    ProtocolVersion,
		EngineID:   s.cfg.EngineID,
		DPIndex:    s.cfg.DPIndex,
		CompatHash: s.cfg.CompatHash,
		Summary:    s.cfg.Summary,
	}
}

// serve decodes one request, runs the handler and encodes the reply.
func (s *Server) serve(body []byte) []byte {
	r := s.baseReply()
	req, err := DecodeRequest(body)
	var vm *VersionMismatchError
	switch {
	case errors.As(err, &vm):
		s.warn(warnVersion, "zmqchan: client speaks another protocol version", "client_version", vm.Remote,
			"server_version", ProtocolVersion)
		r.Status = StatusVersionMismatch
		r.Message = fmt.Sprintf("server speaks protocol version %d, client %d", ProtocolVersion, vm.Remote)
	case err != nil:
		s.warn(warnBadRequest, "zmqchan: bad request", "err", err)
		r.Status = StatusBadRequest
		r.Message = err.Error()
	case req.CompatHash != s.cfg.CompatHash:
		// Level 1 only: the client reports the mismatch with both hashes.
		r.RequestID = req.ID
		s.warn(warnHash, "zmqchan: client has another compatibility hash; metadata withheld",
			"client_engine", req.EngineID, "client_hash", req.CompatHash.String(),
			"server_hash", s.cfg.CompatHash.String())
	case s.cfg.Ranks > 0 && req.Rank != RankAll && (req.Rank < 0 || req.Rank >= s.cfg.Ranks):
		r.RequestID = req.ID
		r.Status = StatusBadRequest
		r.Message = fmt.Sprintf("rank %d out of range: this server serves ranks [0, %d); ask for one of them or %d for all", req.Rank, s.cfg.Ranks, RankAll)
		s.warn(warnBadRequest, "zmqchan: bad request: rank out of range", "client_engine", req.EngineID,
			"rank", req.Rank, "ranks", s.cfg.Ranks)
	default:
		r.RequestID = req.ID
		s.log.Debug("zmqchan: request", "client_engine", req.EngineID, "rank", req.Rank, "id", req.ID)
		payload, err := s.callHandler(req)
		if err != nil {
			s.warn(warnHandler, "zmqchan: handler failed", "client_engine", req.EngineID, "rank", req.Rank, "err", err)
			r.Status = StatusHandlerError
			r.Message = err.Error()
		} else {
			r.Payload = payload
		}
	}
	return s.encode(&r)
}

func (s *Server) callHandler(req Request) (payload []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("zmqchan: handler panicked", "client_engine", req.EngineID, "rank", req.Rank, "panic", p)
			payload, err = nil, fmt.Errorf("handler panicked: %v", p)
		}
	}()
	rep, err := s.cfg.Handler(req)
	if err != nil {
		return nil, err
	}
	return rep.Payload, nil
}

// encode stamps the timestamp and encodes r, turning an unencodable reply
// (a payload over MaxPayloadLen) into a handler error.
func (s *Server) encode(r *Reply) []byte {
	r.Message = truncate(r.Message, MaxMessageLen)
	r.Timestamp = s.cfg.Clock().UnixNano()
	b, err := AppendReply(nil, r)
	if err != nil {
		s.log.Error("zmqchan: cannot encode reply", "err", err)
		r.Status, r.Message, r.Payload = StatusHandlerError, truncate(err.Error(), MaxMessageLen), nil
		b, _ = AppendReply(nil, r) // identity fields were validated by Listen
	}
	return b
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}

var errTooManyFrames = errors.New("zmqchan: too many frames")

// recvFrames receives one multipart message without waiting, keeping at most
// max frames; a longer message is consumed and reported as errTooManyFrames.
func recvFrames(sk *zmq4.Socket, max int) ([][]byte, error) {
	var frames [][]byte
	n := 0
	for {
		b, err := sk.RecvBytes(zmq4.DONTWAIT)
		if err != nil {
			return nil, err
		}
		n++
		if len(frames) < max {
			frames = append(frames, b)
		}
		more, err := sk.GetRcvmore()
		if err != nil {
			return nil, err
		}
		if !more {
			break
		}
	}
	if n > max {
		return nil, fmt.Errorf("%w: %d frames, limit %d", errTooManyFrames, n, max)
	}
	return frames, nil
}
