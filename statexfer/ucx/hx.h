// C helpers for package ucx. Everything here runs on the progress goroutine's
// locked OS thread; nothing in this file is called concurrently.
#ifndef HYBRIDXFER_UCX_HX_H
#define HYBRIDXFER_UCX_HX_H

#include <stdint.h>
#include <stddef.h>
#include <ucp/api/ucp.h>

// AM ids. Handlers for all of them are registered before the worker address
// is exported (UCX 1.13 crashes on an AM for an id without a handler).
enum {
	HX_AM_NOTIFY = 0x4858, // user notification: header = sender transport id
	HX_AM_PING   = 0x4859, // raw round-trip probe: echoed back on the reply ep
	HX_AM_PONG   = 0x485a, // echo of HX_AM_PING
};

// hx_op_t is the callback user data of one request: which batch, which slot.
typedef struct hx_op {
	struct hx_batch *b;
	uint32_t idx;
} hx_op_t;

// hx_batch_t is the C-side state of one batch of gets or puts. It is C memory
// (malloc) because UCX keeps pointers to it (callback user data) after the
// posting call returns. Completion is counted here, never per request in Go.
typedef struct hx_batch {
	ucp_ep_h ep;
	uint32_t n;          // ops in the batch
	uint32_t posted;     // ops [0, posted) have been posted
	uint64_t completed;  // completions seen (immediate, error or callback)
	uint64_t expected;   // completions to wait for: posted ops (+1 for flush)
	int is_write;
	int flush_posted;
	uint64_t *laddr;     // local address per op
	uint64_t *raddr;     // remote address per op
	uint64_t *len;       // length per op
	ucp_rkey_h *rkey;    // unpacked rkey per op
	int32_t *status;     // per op ucs_status_t; slot n is the flush
	hx_op_t *ops;        // n+1 callback records
} hx_batch_t;

hx_batch_t *hx_batch_new(ucp_ep_h ep, uint32_t n, int is_write);
void hx_batch_free(hx_batch_t *b);
// hx_batch_post posts ops [b->posted, to). Returns nothing: failures are
// recorded in status[] and counted as completions.
void hx_batch_post(hx_batch_t *b, uint32_t to);
// hx_batch_flush posts the endpoint flush that completes a write batch.
void hx_batch_flush(hx_batch_t *b);

// Status pointer helpers (UCS_PTR_IS_ERR / UCS_PTR_STATUS are macros).
int hx_ptr_is_err(ucs_status_ptr_t p);
int hx_ptr_status(ucs_status_ptr_t p);

// hx_mem_types returns the context's supported memory types
// (ucp_context_query UCP_ATTR_FIELD_MEMORY_TYPES: a bit per
// ucs_memory_type_t), 0 when the query fails.
uint64_t hx_mem_types(ucp_context_h ctx);

// Context and worker.
ucs_status_t hx_init(ucp_context_h *ctx, const char **keys, const char **vals,
		     int nkv, int wakeup);
// hx_wctx_t is per-worker C state handed to AM handlers as their argument.
typedef struct hx_wctx {
	uintptr_t tkey;       // Go registry key of the owning Transport
	ucp_worker_h worker;
	ucp_ep_h *pong_eps;   // reply eps of pings waiting for their pong
	uint64_t *pong_hdr;
	uint32_t npong, cappong;
	uint64_t pongs;       // pongs received
} hx_wctx_t;

ucs_status_t hx_worker_create(ucp_context_h ctx, int wakeup, uintptr_t tkey,
			      hx_wctx_t **wc);
void hx_worker_destroy(hx_wctx_t *wc);
ucs_status_t hx_worker_address(ucp_worker_h w, void **buf, size_t *len);
void hx_worker_address_free(ucp_worker_h w, void *buf);

// hx_progress calls ucp_worker_progress up to max times, stopping after the
// first call that reports no events, then sends queued pongs. Returns the
// events seen.
unsigned hx_progress(hx_wctx_t *wc, unsigned max);

// hx_arm arms the worker for events and returns its event fd in *efd: 0
// when armed, 1 when events are pending (progress again) or it failed. It
// must be called with the worker lock held.
int hx_arm(ucp_worker_h w, int *efd);
// hx_poll blocks until efd (when >= 0) or wake_fd is readable, or
// timeout_us (-1: none) passes, and drains wake_fd. It makes no UCX call:
// the worker lock is not held while it blocks.
void hx_poll(int efd, int wake_fd, int64_t timeout_us);
int hx_eventfd(void);
void hx_close_fd(int fd);

// Endpoints.
ucs_status_t hx_ep_create(ucp_worker_h w, const void *addr, int peer_mode,
			  uintptr_t pkey, ucp_ep_h *ep);
// hx_ep_close starts closing ep. Returns NULL when done, an error pointer, or
// a request that hx_req_done must be polled on (and hx_req_free'd).
void *hx_ep_close(ucp_ep_h ep, int force);
// hx_flush_ep starts an endpoint flush with the same contract.
void *hx_flush_ep(ucp_ep_h ep);
// hx_flush_worker starts a flush of every endpoint of the worker, including
// those UCX created for incoming connections, with the same contract.
void *hx_flush_worker(ucp_worker_h w);
int hx_req_status(void *req); // UCS_INPROGRESS while pending
void hx_req_free(void *req);

// Memory. mem_type is a ucs_memory_type_t (host or cuda).
ucs_status_t hx_mem_alloc(ucp_context_h ctx, size_t n, int mem_type,
			  ucp_mem_h *memh, void **addr, size_t *len);
ucs_status_t hx_mem_register(ucp_context_h ctx, void *addr, size_t n,
			     ucp_mem_h *memh);
ucs_status_t hx_rkey_pack(ucp_context_h ctx, ucp_mem_h memh, void **buf,
			  size_t *len);

// Active messages. hx_am_send copies msg into C memory it frees on completion.
// Returns the immediate status (UCS_INPROGRESS when queued).
int hx_am_send(ucp_ep_h ep, unsigned id, uint64_t hdr, const void *msg,
	       size_t len, int reply);
// hx_send_pongs sends queued pong replies (AM callbacks do not send).
void hx_send_pongs(hx_wctx_t *wc);

// Raw benchmark helpers: post all gets and progress until done, in C.
int hx_raw_gets(hx_wctx_t *wc, ucp_ep_h ep, ucp_rkey_h rkey, uint64_t lbase,
		uint64_t rbase, const uint64_t *roff, const uint64_t *loff,
		const uint64_t *len, uint32_t n, uint64_t timeout_ns, uint64_t *ns);
int hx_raw_rtt(hx_wctx_t *wc, ucp_ep_h ep, ucp_rkey_h rkey, uint64_t laddr,
	       uint64_t raddr, uint64_t len, uint32_t iters, uint64_t timeout_ns,
	       uint64_t *ns);

// Diagnostics: ucp_ep_print_info into a malloc'd string (free it).
char *hx_ep_info(ucp_ep_h ep, size_t *len);
const char *hx_status_string(int st);

#endif
