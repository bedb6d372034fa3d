// C helpers for package ucx; see hx.h. Only the progress goroutine's locked
// OS thread calls into this file and into UCX, so nothing here is atomic.

#define _GNU_SOURCE
#include "hx.h"
#include "_cgo_export.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

int hx_ptr_is_err(ucs_status_ptr_t p) { return UCS_PTR_IS_ERR(p); }
int hx_ptr_status(ucs_status_ptr_t p) { return (int)UCS_PTR_STATUS(p); }

/* ---- context / worker ------------------------------------------------- */

ucs_status_t hx_init(ucp_context_h *ctx, const char **keys, const char **vals,
		     int nkv, int wakeup)
{
	ucp_config_t *cfg;
	ucs_status_t st = ucp_config_read(NULL, NULL, &cfg);
	if (st != UCS_OK)
		return st;
	for (int i = 0; i < nkv; i++) {
		st = ucp_config_modify(cfg, keys[i], vals[i]);
		if (st != UCS_OK) {
			ucp_config_release(cfg);
			return st;
		}
	}
	ucp_params_t p;
	memset(&p, 0, sizeof(p));
	p.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_MT_WORKERS_SHARED;
	p.features = UCP_FEATURE_RMA | UCP_FEATURE_AM;
	if (wakeup)
		p.features |= UCP_FEATURE_WAKEUP;
	p.mt_workers_shared = 0;
	st = ucp_init(&p, cfg, ctx);
	ucp_config_release(cfg);
	return st;
}

uint64_t hx_mem_types(ucp_context_h ctx)
{
	ucp_context_attr_t a;
	memset(&a, 0, sizeof(a));
	a.field_mask = UCP_ATTR_FIELD_MEMORY_TYPES;
	if (ucp_context_query(ctx, &a) != UCS_OK)
		return 0;
	return a.memory_types;
}

static ucs_status_t hx_am_notify_cb(void *arg, const void *header,
				    size_t header_length, void *data,
				    size_t length, const ucp_am_recv_param_t *param)
{
	hx_wctx_t *wc = arg;
	uint64_t from = 0;
	if (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) {
		// Senders force eager; a rendezvous notification is a protocol
		// error. Returning an error drops it and fails the send.
		return UCS_ERR_UNSUPPORTED;
	}
	if (header_length == sizeof(from))
		memcpy(&from, header, sizeof(from));
	// The Go side copies data before returning: data is only valid here.
	hxGoNotify(wc->tkey, from, data, length);
	return UCS_OK;
}

static ucs_status_t hx_am_ping_cb(void *arg, const void *header,
				  size_t header_length, void *data,
				  size_t length, const ucp_am_recv_param_t *param)
{
	hx_wctx_t *wc = arg;
	if (!(param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP))
		return UCS_OK;
	if (wc->npong == wc->cappong) {
		uint32_t c = wc->cappong ? 2 * wc->cappong : 16;
		ucp_ep_h *e = realloc(wc->pong_eps, c * sizeof(*e));
		if (e == NULL)
			return UCS_OK;
		wc->pong_eps = e;
		uint64_t *h = realloc(wc->pong_hdr, c * sizeof(*h));
		if (h == NULL)
			return UCS_OK;
		wc->pong_hdr = h;
		wc->cappong = c;
	}
	uint64_t hdr = 0;
	if (header_length == sizeof(hdr))
		memcpy(&hdr, header, sizeof(hdr));
	wc->pong_eps[wc->npong] = param->reply_ep;
	wc->pong_hdr[wc->npong] = hdr;
	wc->npong++;
	return UCS_OK;
}

static ucs_status_t hx_am_pong_cb(void *arg, const void *header,
				  size_t header_length, void *data,
				  size_t length, const ucp_am_recv_param_t *param)
{
	hx_wctx_t *wc = arg;
	wc->pongs++;
	return UCS_OK;
}

static ucs_status_t hx_set_am(ucp_worker_h w, unsigned id, ucp_am_recv_callback_t cb,
			      void *arg)
{
	ucp_am_handler_param_t p;
	memset(&p, 0, sizeof(p));
	p.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID |
		       UCP_AM_HANDLER_PARAM_FIELD_FLAGS |
		       UCP_AM_HANDLER_PARAM_FIELD_CB |
		       UCP_AM_HANDLER_PARAM_FIELD_ARG;
	p.id = id;
	p.flags = UCP_AM_FLAG_WHOLE_MSG;
	p.cb = cb;
	p.arg = arg;
	return ucp_worker_set_am_recv_handler(w, &p);
}

ucs_status_t hx_worker_create(ucp_context_h ctx, int wakeup, uintptr_t tkey,
			      hx_wctx_t **wcp)
{
	hx_wctx_t *wc = calloc(1, sizeof(*wc));
	if (wc == NULL)
		return UCS_ERR_NO_MEMORY;
	wc->tkey = tkey;
	ucp_worker_params_t p;
	memset(&p, 0, sizeof(p));
	p.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
	p.thread_mode = UCS_THREAD_MODE_SERIALIZED;
	if (wakeup) {
		p.field_mask |= UCP_WORKER_PARAM_FIELD_EVENTS;
		p.events = UCP_WAKEUP_RMA | UCP_WAKEUP_AMO | UCP_WAKEUP_TAG_SEND |
			   UCP_WAKEUP_TAG_RECV | UCP_WAKEUP_TX | UCP_WAKEUP_RX;
	}
	ucs_status_t st = ucp_worker_create(ctx, &p, &wc->worker);
	if (st != UCS_OK) {
		free(wc);
		return st;
	}
	// Register every handler before the address can leave this process.
	if ((st = hx_set_am(wc->worker, HX_AM_NOTIFY, hx_am_notify_cb, wc)) != UCS_OK ||
	    (st = hx_set_am(wc->worker, HX_AM_PING, hx_am_ping_cb, wc)) != UCS_OK ||
	    (st = hx_set_am(wc->worker, HX_AM_PONG, hx_am_pong_cb, wc)) != UCS_OK) {
		ucp_worker_destroy(wc->worker);
		free(wc);
		return st;
	}
	*wcp = wc;
	return UCS_OK;
}

void hx_worker_destroy(hx_wctx_t *wc)
{
	ucp_worker_destroy(wc->worker);
	free(wc->pong_eps);
	free(wc->pong_hdr);
	free(wc);
}

ucs_status_t hx_worker_address(ucp_worker_h w, void **buf, size_t *len)
{
	ucp_address_t *a;
	ucs_status_t st = ucp_worker_get_address(w, &a, len);
	if (st != UCS_OK)
		return st;
	*buf = a;
	return UCS_OK;
}

void hx_worker_address_free(ucp_worker_h w, void *buf)
{
	ucp_worker_release_address(w, (ucp_address_t *)buf);
}

unsigned hx_progress(hx_wctx_t *wc, unsigned max)
{
	unsigned total = 0;
	for (unsigned i = 0; i < max; i++) {
		unsigned n = ucp_worker_progress(wc->worker);
		total += n;
		if (n == 0)
			break;
	}
	if (wc->npong > 0)
		hx_send_pongs(wc);
	return total;
}

int hx_eventfd(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }
void hx_close_fd(int fd) { close(fd); }

int hx_arm(ucp_worker_h w, int *efd)
{
	if (ucp_worker_get_efd(w, efd) != UCS_OK)
		return 1;
	return ucp_worker_arm(w) == UCS_OK ? 0 : 1; // BUSY: events pending
}

void hx_poll(int efd, int wake_fd, int64_t timeout_us)
{
	struct pollfd fds[2];
	int nfds = 0;
	if (efd >= 0) {
		fds[nfds].fd = efd;
		fds[nfds].events = POLLIN;
		fds[nfds].revents = 0;
		nfds++;
	}
	fds[nfds].fd = wake_fd;
	fds[nfds].events = POLLIN;
	fds[nfds].revents = 0;
	nfds++;
	struct timespec ts, *tsp = NULL;
	if (timeout_us >= 0) {
		ts.tv_sec = timeout_us / 1000000;
		ts.tv_nsec = (timeout_us % 1000000) * 1000;
		tsp = &ts;
	}
	int r = ppoll(fds, nfds, tsp, NULL);
	if (r > 0 && (fds[nfds - 1].revents & POLLIN)) {
		uint64_t v;
		ssize_t rd = read(wake_fd, &v, sizeof(v));
		(void)rd;
	}
}

/* ---- endpoints ---------------------------------------------------------- */

static void hx_ep_err_cb(void *arg, ucp_ep_h ep, ucs_status_t status)
{
	hxGoEpError((uintptr_t)arg, (int)status);
}

ucs_status_t hx_ep_create(ucp_worker_h w, const void *addr, int peer_mode,
			  uintptr_t pkey, ucp_ep_h *ep)
{
	ucp_ep_params_t p;
	memset(&p, 0, sizeof(p));
	p.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS |
		       UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
		       UCP_EP_PARAM_FIELD_ERR_HANDLER;
	p.address = (const ucp_address_t *)addr;
	p.err_mode = peer_mode ? UCP_ERR_HANDLING_MODE_PEER : UCP_ERR_HANDLING_MODE_NONE;
	p.err_handler.cb = hx_ep_err_cb;
	p.err_handler.arg = (void *)pkey;
	return ucp_ep_create(w, &p, ep);
}

void *hx_ep_close(ucp_ep_h ep, int force)
{
	ucp_request_param_t p;
	memset(&p, 0, sizeof(p));
	if (force) {
		p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
		p.flags = UCP_EP_CLOSE_FLAG_FORCE;
	}
	return ucp_ep_close_nbx(ep, &p);
}

void *hx_flush_ep(ucp_ep_h ep)
{
	ucp_request_param_t p;
	memset(&p, 0, sizeof(p));
	return ucp_ep_flush_nbx(ep, &p);
}

void *hx_flush_worker(ucp_worker_h w)
{
	ucp_request_param_t p;
	memset(&p, 0, sizeof(p));
	return ucp_worker_flush_nbx(w, &p);
}

int hx_req_status(void *req) { return (int)ucp_request_check_status(req); }
void hx_req_free(void *req) { ucp_request_free(req); }

/* ---- memory ------------------------------------------------------------- */

ucs_status_t hx_mem_alloc(ucp_context_h ctx, size_t n, int mem_type,
			  ucp_mem_h *memh, void **addr, size_t *len)
{
	ucp_mem_map_params_t p;
	memset(&p, 0, sizeof(p));
	p.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS |
		       UCP_MEM_MAP_PARAM_FIELD_LENGTH |
		       UCP_MEM_MAP_PARAM_FIELD_FLAGS |
		       UCP_MEM_MAP_PARAM_FIELD_MEMORY_TYPE;
	p.address = NULL;
	p.length = n;
	p.flags = UCP_MEM_MAP_ALLOCATE;
	p.memory_type = (ucs_memory_type_t)mem_type;
	ucs_status_t st = ucp_mem_map(ctx, &p, memh);
	if (st != UCS_OK)
		return st;
	ucp_mem_attr_t a;
	memset(&a, 0, sizeof(a));
	a.field_mask = UCP_MEM_ATTR_FIELD_ADDRESS | UCP_MEM_ATTR_FIELD_LENGTH;
	st = ucp_mem_query(*memh, &a);
	if (st != UCS_OK) {
		ucp_mem_unmap(ctx, *memh);
		return st;
	}
	*addr = a.address;
	*len = a.length;
	return UCS_OK;
}

ucs_status_t hx_mem_register(ucp_context_h ctx, void *addr, size_t n,
			     ucp_mem_h *memh)
{
	ucp_mem_map_params_t p;
	memset(&p, 0, sizeof(p));
	p.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS |
		       UCP_MEM_MAP_PARAM_FIELD_LENGTH;
	p.address = addr;
	p.length = n;
	return ucp_mem_map(ctx, &p, memh);
}

ucs_status_t hx_rkey_pack(ucp_context_h ctx, ucp_mem_h memh, void **buf,
			  size_t *len)
{
	return ucp_rkey_pack(ctx, memh, buf, len);
}

/* ---- batches ------------------------------------------------------------ */

hx_batch_t *hx_batch_new(ucp_ep_h ep, uint32_t n, int is_write)
{
	hx_batch_t *b = calloc(1, sizeof(*b));
	if (b == NULL)
		return NULL;
	b->ep = ep;
	b->n = n;
	b->is_write = is_write;
	b->laddr = malloc(n * sizeof(uint64_t));
	b->raddr = malloc(n * sizeof(uint64_t));
	b->len = malloc(n * sizeof(uint64_t));
	b->rkey = malloc(n * sizeof(ucp_rkey_h));
	b->status = malloc((n + 1) * sizeof(int32_t));
	b->ops = malloc((n + 1) * sizeof(hx_op_t));
	if (!b->laddr || !b->raddr || !b->len || !b->rkey || !b->status || !b->ops) {
		hx_batch_free(b);
		return NULL;
	}
	for (uint32_t i = 0; i <= n; i++) {
		b->status[i] = UCS_INPROGRESS;
		b->ops[i].b = b;
		b->ops[i].idx = i;
	}
	return b;
}

void hx_batch_free(hx_batch_t *b)
{
	if (b == NULL)
		return;
	free(b->laddr);
	free(b->raddr);
	free(b->len);
	free(b->rkey);
	free(b->status);
	free(b->ops);
	free(b);
}

static void hx_op_cb(void *req, ucs_status_t status, void *user_data)
{
	hx_op_t *op = user_data;
	op->b->status[op->idx] = status;
	op->b->completed++;
	ucp_request_free(req);
}

static void hx_note(hx_batch_t *b, uint32_t idx, ucs_status_ptr_t sp)
{
	if (sp == NULL) {
		b->status[idx] = UCS_OK;
		b->completed++;
	} else if (UCS_PTR_IS_ERR(sp)) {
		b->status[idx] = UCS_PTR_STATUS(sp);
		b->completed++;
	}
	// else: in flight; hx_op_cb completes it.
}

void hx_batch_post(hx_batch_t *b, uint32_t to)
{
	ucp_request_param_t p;
	memset(&p, 0, sizeof(p));
	p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
	p.cb.send = hx_op_cb;
	for (uint32_t i = b->posted; i < to; i++) {
		p.user_data = &b->ops[i];
		b->expected++;
		ucs_status_ptr_t sp;
		if (b->is_write)
			sp = ucp_put_nbx(b->ep, (void *)(uintptr_t)b->laddr[i], b->len[i],
					 b->raddr[i], b->rkey[i], &p);
		else
			sp = ucp_get_nbx(b->ep, (void *)(uintptr_t)b->laddr[i], b->len[i],
					 b->raddr[i], b->rkey[i], &p);
		hx_note(b, i, sp);
	}
	b->posted = to;
}

void hx_batch_flush(hx_batch_t *b)
{
	ucp_request_param_t p;
	memset(&p, 0, sizeof(p));
	p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
	p.cb.send = hx_op_cb;
	p.user_data = &b->ops[b->n];
	b->flush_posted = 1;
	b->expected++;
	hx_note(b, b->n, ucp_ep_flush_nbx(b->ep, &p));
}

/* ---- active messages ---------------------------------------------------- */

typedef struct hx_am_req {
	uint64_t hdr;
	char data[];
} hx_am_req_t;

static void hx_am_send_cb(void *req, ucs_status_t status, void *user_data)
{
	free(user_data);
	ucp_request_free(req);
}

int hx_am_send(ucp_ep_h ep, unsigned id, uint64_t hdr, const void *msg,
	       size_t len, int reply)
{
	hx_am_req_t *r = malloc(sizeof(*r) + len);
	if (r == NULL)
		return UCS_ERR_NO_MEMORY;
	r->hdr = hdr;
	if (len > 0)
		memcpy(r->data, msg, len);
	ucp_request_param_t p;
	memset(&p, 0, sizeof(p));
	p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA |
			 UCP_OP_ATTR_FIELD_FLAGS;
	p.cb.send = hx_am_send_cb;
	p.user_data = r;
	// Eager only: the receiver copies whole messages inside its callback and
	// never has to start a rendezvous receive.
	p.flags = UCP_AM_SEND_FLAG_EAGER | (reply ? UCP_AM_SEND_FLAG_REPLY : 0);
	ucs_status_ptr_t sp = ucp_am_send_nbx(ep, id, &r->hdr, sizeof(r->hdr),
					      r->data, len, &p);
	if (sp == NULL) {
		free(r);
		return UCS_OK;
	}
	if (UCS_PTR_IS_ERR(sp)) {
		free(r);
		return UCS_PTR_STATUS(sp);
	}
	return UCS_INPROGRESS;
}

void hx_send_pongs(hx_wctx_t *wc)
{
	uint32_t n = wc->npong;
	wc->npong = 0;
	for (uint32_t i = 0; i < n; i++)
		hx_am_send(wc->pong_eps[i], HX_AM_PONG, wc->pong_hdr[i], NULL, 0, 0);
}

/* ---- raw benchmarks ----------------------------------------------------- */

static uint64_t hx_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

typedef struct {
	uint64_t done;
	int32_t err;
} hx_raw_t;

static void hx_raw_cb(void *req, ucs_status_t status, void *user_data)
{
	hx_raw_t *r = user_data;
	r->done++;
	if (status != UCS_OK && r->err == UCS_OK)
		r->err = status;
	ucp_request_free(req);
}

// hx_raw_wait progresses until r->done reaches want or the deadline passes.
static int hx_raw_wait(hx_wctx_t *wc, hx_raw_t *r, uint64_t want, uint64_t deadline)
{
	unsigned spins = 0;
	while (r->done < want) {
		ucp_worker_progress(wc->worker);
		if (wc->npong > 0)
			hx_send_pongs(wc);
		if (++spins == 1024) {
			spins = 0;
			if (hx_now() > deadline)
				return 0;
		}
	}
	return 1;
}

int hx_raw_gets(hx_wctx_t *wc, ucp_ep_h ep, ucp_rkey_h rkey, uint64_t lbase,
		uint64_t rbase, const uint64_t *roff, const uint64_t *loff,
		const uint64_t *len, uint32_t n, uint64_t timeout_ns, uint64_t *ns)
{
	// Heap, not stack: on timeout requests may still complete into it, so
	// it is leaked then.
	hx_raw_t *r = calloc(1, sizeof(*r));
	if (r == NULL)
		return UCS_ERR_NO_MEMORY;
	ucp_request_param_t p;
	memset(&p, 0, sizeof(p));
	p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
	p.cb.send = hx_raw_cb;
	p.user_data = r;
	uint64_t t0 = hx_now();
	for (uint32_t i = 0; i < n; i++) {
		ucs_status_ptr_t sp = ucp_get_nbx(ep, (void *)(uintptr_t)(lbase + loff[i]),
						  len[i], rbase + roff[i], rkey, &p);
		if (sp == NULL) {
			r->done++;
		} else if (UCS_PTR_IS_ERR(sp)) {
			r->done++;
			if (r->err == UCS_OK)
				r->err = UCS_PTR_STATUS(sp);
		}
	}
	if (!hx_raw_wait(wc, r, n, t0 + timeout_ns))
		return UCS_ERR_TIMED_OUT;
	*ns = hx_now() - t0;
	int err = r->err;
	free(r);
	return err;
}

int hx_raw_rtt(hx_wctx_t *wc, ucp_ep_h ep, ucp_rkey_h rkey, uint64_t laddr,
	       uint64_t raddr, uint64_t len, uint32_t iters, uint64_t timeout_ns,
	       uint64_t *ns)
{
	hx_raw_t *r = calloc(1, sizeof(*r));
	if (r == NULL)
		return UCS_ERR_NO_MEMORY;
	ucp_request_param_t p;
	memset(&p, 0, sizeof(p));
	p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
	p.cb.send = hx_raw_cb;
	p.user_data = r;
	uint64_t t0 = hx_now(), deadline = t0 + timeout_ns;
	for (uint32_t i = 0; i < iters; i++) {
		uint64_t want = r->done + 1;
		ucs_status_ptr_t sp = ucp_get_nbx(ep, (void *)(uintptr_t)laddr, len,
						  raddr, rkey, &p);
		if (sp == NULL) {
			r->done++;
		} else if (UCS_PTR_IS_ERR(sp)) {
			free(r);
			return UCS_PTR_STATUS(sp);
		}
		if (!hx_raw_wait(wc, r, want, deadline))
			return UCS_ERR_TIMED_OUT;
		if (r->err != UCS_OK) {
			int err = r->err;
			free(r);
			return err;
		}
		// The pong counter lives in wc, which outlives any request.
		uint64_t pongs = wc->pongs + 1;
		int st = hx_am_send(ep, HX_AM_PING, i, NULL, 0, 1);
		if (st != UCS_OK && st != UCS_INPROGRESS) {
			free(r);
			return st;
		}
		unsigned spins = 0;
		while (wc->pongs < pongs) {
			ucp_worker_progress(wc->worker);
			if (wc->npong > 0)
				hx_send_pongs(wc);
			if (++spins == 1024) {
				spins = 0;
				if (hx_now() > deadline) {
					free(r);
					return UCS_ERR_TIMED_OUT;
				}
			}
		}
	}
	*ns = hx_now() - t0;
	free(r);
	return UCS_OK;
}

/* ---- diagnostics -------------------------------------------------------- */

char *hx_ep_info(ucp_ep_h ep, size_t *len)
{
	char *buf = NULL;
	FILE *f = open_memstream(&buf, len);
	if (f == NULL)
		return NULL;
	ucp_ep_print_info(ep, f);
	fclose(f);
	return buf;
}

const char *hx_status_string(int st) { return ucs_status_string((ucs_status_t)st); }
