// Copy kernels of package kernels/cuda, compiled at run time with NVRTC.
// Self-contained: no includes, so NVRTC needs no headers.

typedef unsigned long long u64;
typedef long long i64;
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;
struct alignas(16) u128 { u64 lo, hi; };

// One copy: dst[dst, dst+len) = src[src, src+len), byte offsets.
struct CopyOp { i64 dst, src, len; };

__device__ __forceinline__ void copy_bytes(u8* d, const u8* s, i64 n) {
  for (i64 i = threadIdx.x; i < n; i += blockDim.x) d[i] = s[i];
}

// copy_vec copies n bytes with T-sized loads and stores where d and s are
// equally misaligned modulo sizeof(T): bytes up to the first aligned address,
// then whole units, then the tail.
template <typename T>
__device__ __forceinline__ void copy_vec(u8* d, const u8* s, i64 n) {
  const i64 w = sizeof(T);
  i64 head = (w - (i64)((u64)d & (w - 1))) & (w - 1);
  if (head > n) head = n;
  copy_bytes(d, s, head);
  d += head; s += head; n -= head;
  i64 k = n / w;
  T* dt = (T*)d;
  const T* st = (const T*)s;
  for (i64 i = threadIdx.x; i < k; i += blockDim.x) dt[i] = st[i];
  copy_bytes(d + k * w, s + k * w, n - k * w);
}

// hx_copy_ops runs n ops, one thread block per op (grid-stride over ops).
// The host splits large ops so that blocks get similar work.
extern "C" __global__ void hx_copy_ops(u8* dst, const u8* src, const CopyOp* ops, i64 n) {
  for (i64 i = blockIdx.x; i < n; i += gridDim.x) {
    CopyOp op = ops[i];
    u8* d = dst + op.dst;
    const u8* s = src + op.src;
    u64 mis = (u64)d ^ (u64)s;
    if ((mis & 15) == 0) copy_vec<u128>(d, s, op.len);
    else if ((mis & 7) == 0) copy_vec<u64>(d, s, op.len);
    else if ((mis & 3) == 0) copy_vec<u32>(d, s, op.len);
    else if ((mis & 1) == 0) copy_vec<u16>(d, s, op.len);
    else copy_bytes(d, s, op.len);
  }
}

// transpose_tiled transposes batches of rows x cols matrices of T through a
// 32x32 shared-memory tile (padded against bank conflicts), so that both the
// reads and the writes are coalesced. Strides are in items. Block: 32 x 8.
template <typename T>
__device__ __forceinline__ void transpose_tiled(T (*tile)[33], T* dst, const T* src, i64 batches,
                                                i64 rows, i64 cols, i64 sstride, i64 dstride) {
  const i64 tr = (rows + 31) / 32, tc = (cols + 31) / 32, per = tr * tc;
  const i64 total = batches * per;
  for (i64 t = blockIdx.x; t < total; t += gridDim.x) {
    const i64 b = t / per, rem = t % per;
    const i64 r0 = (rem / tc) * 32, c0 = (rem % tc) * 32;
    const T* s = src + b * sstride;
    T* d = dst + b * dstride;
    for (int j = threadIdx.y; j < 32; j += 8) {
      const i64 r = r0 + j, c = c0 + threadIdx.x;
      if (r < rows && c < cols) tile[j][threadIdx.x] = s[r * cols + c];
    }
    __syncthreads();
    for (int j = threadIdx.y; j < 32; j += 8) {
      const i64 c = c0 + j, r = r0 + threadIdx.x;
      if (r < rows && c < cols) d[c * rows + r] = tile[threadIdx.x][j];
    }
    __syncthreads();
  }
}

#define HX_TILED(NAME, T)                                                                  \
  extern "C" __global__ void NAME(T* dst, const T* src, i64 batches, i64 rows, i64 cols,   \
                                  i64 sstride, i64 dstride) {                              \
    __shared__ T tile[32][33];                                                             \
    transpose_tiled<T>(tile, dst, src, batches, rows, cols, sstride, dstride);             \
  }
HX_TILED(hx_transpose_u8, u8)
HX_TILED(hx_transpose_u16, u16)
HX_TILED(hx_transpose_u32, u32)
HX_TILED(hx_transpose_u64, u64)

// transpose_items moves items of k units of U, one warp per item, walking
// items in destination order so that consecutive warps write consecutive
// items. Strides are in units.
template <typename U>
__device__ __forceinline__ void transpose_items(U* dst, const U* src, i64 batches, i64 rows, i64 cols,
                                                i64 k, i64 sstride, i64 dstride) {
  const i64 warp = (blockIdx.x * (i64)blockDim.x + threadIdx.x) / 32;
  const i64 nwarps = (gridDim.x * (i64)blockDim.x) / 32;
  const int lane = threadIdx.x & 31;
  const i64 per = rows * cols, total = batches * per;
  for (i64 i = warp; i < total; i += nwarps) {
    const i64 b = i / per, rem = i % per;
    const i64 c = rem / rows, r = rem % rows;
    const U* s = src + b * sstride + (r * cols + c) * k;
    U* d = dst + b * dstride + rem * k;
    for (i64 u = lane; u < k; u += 32) d[u] = s[u];
  }
}

#define HX_ITEMS(NAME, U)                                                                  \
  extern "C" __global__ void NAME(U* dst, const U* src, i64 batches, i64 rows, i64 cols,   \
                                  i64 k, i64 sstride, i64 dstride) {                       \
    transpose_items<U>(dst, src, batches, rows, cols, k, sstride, dstride);                \
  }
HX_ITEMS(hx_items_u8, u8)
HX_ITEMS(hx_items_u16, u16)
HX_ITEMS(hx_items_u32, u32)
HX_ITEMS(hx_items_u64, u64)
HX_ITEMS(hx_items_u128, u128)
