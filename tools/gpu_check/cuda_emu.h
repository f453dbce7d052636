// cuda_emu.h: compile TVM-generated CUDA C with g++ and run it on the host, one block at a time.
//
// Force-included (g++ -include cuda_emu.h) before a kernel module whose CUDA #include lines were
// dropped (tools/gpu_check/emulate.py does both). Every CUDA thread of a block is a coroutine
// (ucontext, its own stack) and the block's threads are scheduled round-robin on the calling OS
// thread: a thread runs until it reaches a __syncthreads(), a warp shuffle or a __syncwarp(),
// or returns. Hence:
//   * __shared__ variables are function-local statics (one copy, seen by every thread of the
//     block; blocks run one after another). They live in the section "cuda_emu_shared", which is
//     filled with 0xFF bytes before each block, as is the dynamic shared memory (which ends at an
//     inaccessible page), so reading shared memory nobody wrote shows as NaN.
//   * __syncthreads() waits for every thread of the block that has not returned.
//   * A shuffle is a warp-level exchange: each lane named in the mask publishes its value and
//     waits for the others; the last to arrive computes every lane's result (PTX shfl.sync rules).
//   * If no thread can run and some have not returned, the launch fails with a description of
//     who waits where (a deadlock on the GPU). So do a lane that leaves a shuffle partner
//     waiting, mismatched shuffle masks and a shuffle whose caller is not in its mask.
// The integer intrinsics follow what nvcc 13 emits for sm_90 (see the comments at each).
// Floating point is IEEE single precision: no FMA contraction, no flush to zero, and the
// fast-math intrinsics are computed at full precision.
//
// The runtime state is one global per loaded library (not thread_local: all emulated threads
// share one OS thread), so a library runs one launch at a time.
#pragma once

#include <ucontext.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cfloat>
#include <climits>
#include <cmath>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <utility>

// ---- vector types (CUDA's sizes and alignments) -------------------------------------------

#define CUDA_EMU_VEC(T, name, a1, a2, a4)                                              \
  struct alignas(a1) name##1 { T x; };                                                 \
  struct alignas(a2) name##2 { T x, y; };                                              \
  struct name##3 { T x, y, z; };                                                       \
  struct alignas(a4) name##4 { T x, y, z, w; };                                        \
  inline name##1 make_##name##1(T x) { return {x}; }                                   \
  inline name##2 make_##name##2(T x, T y) { return {x, y}; }                           \
  inline name##3 make_##name##3(T x, T y, T z) { return {x, y, z}; }                   \
  inline name##4 make_##name##4(T x, T y, T z, T w) { return {x, y, z, w}; }
CUDA_EMU_VEC(signed char, char, 1, 2, 4)
CUDA_EMU_VEC(unsigned char, uchar, 1, 2, 4)
CUDA_EMU_VEC(short, short, 2, 4, 8)
CUDA_EMU_VEC(unsigned short, ushort, 2, 4, 8)
CUDA_EMU_VEC(int, int, 4, 8, 16)
CUDA_EMU_VEC(unsigned int, uint, 4, 8, 16)
CUDA_EMU_VEC(long long, longlong, 8, 16, 16)
CUDA_EMU_VEC(unsigned long long, ulonglong, 8, 16, 16)
CUDA_EMU_VEC(float, float, 4, 8, 16)
CUDA_EMU_VEC(double, double, 8, 16, 16)
#undef CUDA_EMU_VEC

struct dim3 {
  unsigned int x = 1, y = 1, z = 1;
  dim3() = default;
  dim3(unsigned int x_, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

// ---- integer intrinsics -------------------------------------------------------------------

// __byte_perm(x, y, s): result byte n is byte ((s >> 4n) & 7) of the 8 bytes y:x (x is bytes
// 0-3). Bit 3 of each selector nibble is ignored: nvcc emits `and.b32 s, s, 0x7777` before
// `prmt.b32`, so prmt's sign-replicate mode is never reached (CUDA Math API: selector n is
// s<4n+2:4n>).
inline unsigned int __byte_perm(unsigned int x, unsigned int y, unsigned int s) {
  const uint64_t bytes = (uint64_t(y) << 32) | x;
  unsigned int r = 0;
  for (int n = 0; n < 4; ++n) {
    const unsigned int sel = (s >> (4 * n)) & 7u;
    r |= unsigned((bytes >> (8 * sel)) & 0xffu) << (8 * n);
  }
  return r;
}

namespace cuda_emu {
// dp4a.{a}.{b}: c + the sum of the four byte products, bytes signed where the type says so;
// the sum wraps modulo 2^32.
template <bool SignedA, bool SignedB>
inline uint32_t dp4a(uint32_t a, uint32_t b, uint32_t c) {
  int64_t acc = (SignedA || SignedB) ? int64_t(int32_t(c)) : int64_t(c);
  for (int i = 0; i < 4; ++i) {
    const uint32_t ab = (a >> (8 * i)) & 0xffu, bb = (b >> (8 * i)) & 0xffu;
    const int64_t av = SignedA ? int64_t(int8_t(ab)) : int64_t(ab);
    const int64_t bv = SignedB ? int64_t(int8_t(bb)) : int64_t(bb);
    acc += av * bv;
  }
  return uint32_t(acc);
}
template <class V>
inline uint32_t bytes_of(V v) {
  static_assert(sizeof(V) == 4, "a 4-byte vector");
  uint32_t u;
  std::memcpy(&u, &v, 4);
  return u;
}
}  // namespace cuda_emu

// The overloads of sm_61_intrinsics.h (dp4a.s32.s32, .u32.u32, char4, uchar4) and the two
// mixed-sign ones TVM's preamble declares for the device compile (under __CUDA_ARCH__ >= 610):
// (unsigned, int, int) is dp4a.u32.s32 and (int, unsigned, int) is dp4a.s32.u32. Overload
// resolution therefore picks the same variant as nvcc/NVRTC do.
inline int __dp4a(int a, int b, int c) { return int(cuda_emu::dp4a<true, true>(a, b, c)); }
inline unsigned int __dp4a(unsigned int a, unsigned int b, unsigned int c) {
  return cuda_emu::dp4a<false, false>(a, b, c);
}
inline int __dp4a(char4 a, char4 b, int c) {
  return int(cuda_emu::dp4a<true, true>(cuda_emu::bytes_of(a), cuda_emu::bytes_of(b), c));
}
inline unsigned int __dp4a(uchar4 a, uchar4 b, unsigned int c) {
  return cuda_emu::dp4a<false, false>(cuda_emu::bytes_of(a), cuda_emu::bytes_of(b), c);
}
inline int __dp4a(unsigned int a, int b, int c) { return int(cuda_emu::dp4a<false, true>(a, b, c)); }
inline int __dp4a(int a, unsigned int b, int c) { return int(cuda_emu::dp4a<true, false>(a, b, c)); }

// __vneg4: each byte negated modulo 256 (-(-128) is -128), as nvcc's expansion computes.
inline unsigned int __vneg4(unsigned int a) {
  unsigned int r = 0;
  for (int i = 0; i < 4; ++i) r |= ((0u - ((a >> (8 * i)) & 0xffu)) & 0xffu) << (8 * i);
  return r;
}

inline int __popc(unsigned int x) { return __builtin_popcount(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(unsigned(x)); }
inline int __float_as_int(float f) { int i; std::memcpy(&i, &f, 4); return i; }
inline unsigned int __float_as_uint(float f) { unsigned int i; std::memcpy(&i, &f, 4); return i; }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline float __uint_as_float(unsigned int i) { float f; std::memcpy(&f, &i, 4); return f; }

// ---- math: CUDA's global min/max overloads and fast-math intrinsics (full precision) -------

#define CUDA_EMU_MINMAX(R, A, B)                                          \
  inline R max(A a, B b) { return static_cast<R>(a) > static_cast<R>(b) ? static_cast<R>(a) : static_cast<R>(b); } \
  inline R min(A a, B b) { return static_cast<R>(a) < static_cast<R>(b) ? static_cast<R>(a) : static_cast<R>(b); }
CUDA_EMU_MINMAX(int, int, int)
CUDA_EMU_MINMAX(unsigned int, unsigned int, unsigned int)
CUDA_EMU_MINMAX(unsigned int, int, unsigned int)
CUDA_EMU_MINMAX(unsigned int, unsigned int, int)
CUDA_EMU_MINMAX(long long, long long, long long)
CUDA_EMU_MINMAX(unsigned long long, unsigned long long, unsigned long long)
#undef CUDA_EMU_MINMAX
// fmaxf/fminf semantics: a NaN operand yields the other operand.
inline float max(float a, float b) { return std::fmax(a, b); }
inline float min(float a, float b) { return std::fmin(a, b); }
inline double max(double a, double b) { return std::fmax(a, b); }
inline double min(double a, double b) { return std::fmin(a, b); }
inline double max(float a, double b) { return std::fmax(double(a), b); }
inline double max(double a, float b) { return std::fmax(a, double(b)); }
inline double min(float a, double b) { return std::fmin(double(a), b); }
inline double min(double a, float b) { return std::fmin(a, double(b)); }

inline float __expf(float x) { return std::exp(x); }
inline float __exp10f(float x) { return std::pow(10.0f, x); }
inline float __logf(float x) { return std::log(x); }
inline float __log2f(float x) { return std::log2(x); }
inline float __powf(float x, float y) { return std::pow(x, y); }
inline float __sinf(float x) { return std::sin(x); }
inline float __cosf(float x) { return std::cos(x); }
inline float __tanhf(float x) { return std::tanh(x); }
inline float __fdividef(float x, float y) { return x / y; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return std::sqrt(x); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __saturatef(float x) { return std::isnan(x) ? 0.0f : std::fmin(std::fmax(x, 0.0f), 1.0f); }

// ---- float16: the cuda_fp16.h names TVM's preamble and kernels use --------------------------
// __half holds IEEE binary16 bits; conversions round to nearest even, as __float2half. Kernels
// of lutc only convert (half scales, offsets); arithmetic on halves would go through float here
// where a GPU computes in half.

struct __half {
  unsigned short bits;
  __half() = default;
  __half(float f) {
    const _Float16 h = static_cast<_Float16>(f);
    std::memcpy(&bits, &h, sizeof bits);
  }
  __half(double d) : __half(static_cast<float>(d)) {}
  __half(int i) : __half(static_cast<float>(i)) {}
  operator float() const {
    _Float16 h;
    std::memcpy(&h, &bits, sizeof bits);
    return static_cast<float>(h);
  }
};
static_assert(sizeof(__half) == 2, "half is 2 bytes");
using half = __half;
struct alignas(4) __half2 { __half x, y; };
using half2 = __half2;
inline float __half2float(__half h) { return float(h); }
inline __half __float2half(float f) { return __half(f); }
inline __half __float2half_rn(float f) { return __half(f); }
inline bool __hgt(__half a, __half b) { return float(a) > float(b); }
inline bool __hlt(__half a, __half b) { return float(a) < float(b); }

// ---- the block scheduler ------------------------------------------------------------------

namespace cuda_emu {

constexpr unsigned kWarpSize = 32;
constexpr unsigned kMaxThreads = 1024;
constexpr size_t kStackBytes = 128 << 10;
constexpr size_t kMaxDynamicShared = 232448;  // sm_90's opt-in maximum (227 KiB)

enum class State : unsigned char { Ready, Barrier, Shuffle, Exited };
enum class Shfl : unsigned char { Idx, Up, Down, Bfly, Sync };
const char* const kShflNames[] = {"__shfl_sync", "__shfl_up_sync", "__shfl_down_sync", "__shfl_xor_sync",
                                  "__syncwarp"};

struct Fiber {
  ucontext_t ctx;
  char* stack = nullptr;  // kStackBytes, above a guard page
  uint3 tid;
  State state = State::Ready;
  // shuffle in progress: the caller's arguments, its value, then its result
  Shfl mode = Shfl::Sync;
  unsigned mask = 0, b = 0, width = 0, size = 0;
  unsigned char value[16], result[16];
};

struct Runtime {
  ucontext_t scheduler;
  Fiber fibers[kMaxThreads];
  unsigned nthreads = 0, live = 0, at_barrier = 0;
  int current = -1;  // the running fiber, -1 in the scheduler
  dim3 grid, block;
  uint3 block_idx;
  void (*body)(void*) = nullptr;
  void* body_arg = nullptr;
  bool failed = false;
  char error[2048];
  unsigned char* dyn_region = nullptr;  // kMaxDynamicShared bytes (page-rounded), then a guard page
  size_t dyn_region_bytes = 0;
  unsigned char* dyn_shared = nullptr;  // this launch's dynamic shared memory, ending at the guard
};

static Runtime g_runtime;  // one per loaded kernel library (internal linkage)
inline Runtime& rt() { return g_runtime; }

// Stops the launch with a message; from a thread, control goes back to the scheduler for good.
[[gnu::format(printf, 1, 2)]] inline void fail(const char* fmt, ...) {
  Runtime& r = rt();
  if (!r.failed) {
    r.failed = true;
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(r.error, sizeof r.error, fmt, ap);
    va_end(ap);
  }
  if (r.current >= 0) {
    Fiber& f = r.fibers[r.current];
    swapcontext(&f.ctx, &r.scheduler);
  }
}

inline unsigned linear_id(const uint3& t) {
  const Runtime& r = rt();
  return t.x + r.block.x * (t.y + r.block.y * t.z);
}

inline Fiber& self() {
  Runtime& r = rt();
  if (r.current < 0) {
    std::fprintf(stderr, "cuda_emu: a device function was called outside a kernel launch\n");
    std::abort();
  }
  return r.fibers[r.current];
}

// Back to the scheduler until this thread is Ready again; a compiler barrier both ways, so no
// load of memory another thread may write is kept in a register across it.
inline void yield() {
  Runtime& r = rt();
  Fiber& f = r.fibers[r.current];
  __asm__ __volatile__("" ::: "memory");
  if (f.state != State::Ready) swapcontext(&f.ctx, &r.scheduler);
  __asm__ __volatile__("" ::: "memory");
}

inline void release_barrier_if_complete() {
  Runtime& r = rt();
  if (r.at_barrier == 0 || r.at_barrier < r.live) return;
  for (unsigned i = 0; i < r.nthreads; ++i)
    if (r.fibers[i].state == State::Barrier) r.fibers[i].state = State::Ready;
  r.at_barrier = 0;
}

inline void syncthreads() {
  Runtime& r = rt();
  Fiber& f = self();
  f.state = State::Barrier;
  ++r.at_barrier;
  release_barrier_if_complete();
  yield();
}

// The lanes of `warp` that exist and have not returned.
inline unsigned live_lanes(unsigned warp) {
  Runtime& r = rt();
  unsigned mask = 0;
  for (unsigned lane = 0; lane < kWarpSize; ++lane) {
    const unsigned i = warp * kWarpSize + lane;
    if (i < r.nthreads && r.fibers[i].state != State::Exited) mask |= 1u << lane;
  }
  return mask;
}

// PTX shfl.sync: the lane whose value `lane` receives, or `lane` itself when out of range.
inline unsigned shuffle_source(const Fiber& f, unsigned lane) {
  const unsigned seg = kWarpSize - f.width;  // c[12:8]: the segment mask
  const unsigned clamp = f.mode == Shfl::Up ? 0u : kWarpSize - 1;
  const int max_lane = int((lane & seg) | (clamp & ~seg)), min_lane = int(lane & seg);
  const unsigned bval = f.b & (kWarpSize - 1);
  int j = int(lane);
  bool in_range = true;
  switch (f.mode) {
    case Shfl::Up: j = int(lane) - int(bval); in_range = j >= max_lane; break;
    case Shfl::Down: j = int(lane + bval); in_range = j <= max_lane; break;
    case Shfl::Bfly: j = int(lane ^ bval); in_range = j <= max_lane; break;
    case Shfl::Idx: j = min_lane | int(bval & ~seg); in_range = j <= max_lane; break;
    case Shfl::Sync: break;
  }
  return in_range ? unsigned(j) : lane;
}

// All lanes of `mask` in `warp` are at a shuffle with that mask: compute every result.
inline void complete_shuffle(unsigned warp, unsigned mask) {
  Runtime& r = rt();
  Fiber* lanes = &r.fibers[warp * kWarpSize];
  for (unsigned lane = 0; lane < kWarpSize; ++lane) {
    if (!(mask >> lane & 1u)) continue;
    Fiber& f = lanes[lane];
    const unsigned src = shuffle_source(f, lane);
    if (mask >> src & 1u)
      std::memcpy(f.result, lanes[src].value, sizeof f.result);
    else  // the source lane did not take part: CUDA leaves the value undefined
      std::memset(f.result, 0xff, sizeof f.result);
  }
  for (unsigned lane = 0; lane < kWarpSize; ++lane)
    if (mask >> lane & 1u) lanes[lane].state = State::Ready;
}

// Lane `lane` of `warp` waits at a shuffle: if every lane of its mask is there too, with the
// same mask, completes the exchange. A mask lane that has returned (or does not exist) fails.
inline void try_complete_shuffle(unsigned warp, unsigned lane) {
  Runtime& r = rt();
  Fiber* lanes = &r.fibers[warp * kWarpSize];
  const unsigned n = std::min(kWarpSize, r.nthreads - warp * kWarpSize);
  const Fiber& f = lanes[lane];
  for (unsigned other = 0; other < kWarpSize; ++other) {
    if (!(f.mask >> other & 1u)) continue;
    const Fiber& g = lanes[other];
    if (other >= n || g.state == State::Exited) {
      fail("%s in block (%u,%u,%u), warp %u: lane %u waits with mask 0x%08x, but lane %u %s", kShflNames[int(f.mode)],
           r.block_idx.x, r.block_idx.y, r.block_idx.z, warp, lane, f.mask, other,
           other >= n ? "does not exist" : "has returned");
      return;
    }
    if (g.state != State::Shuffle) return;  // not there yet
    if (g.mask != f.mask || g.mode != f.mode || g.width != f.width) {
      fail("warp %u of block (%u,%u,%u): lane %u is at %s (mask 0x%08x, width %u), lane %u at %s (mask 0x%08x, "
           "width %u)", warp, r.block_idx.x, r.block_idx.y, r.block_idx.z, lane, kShflNames[int(f.mode)], f.mask,
           f.width, other, kShflNames[int(g.mode)], g.mask, g.width);
      return;
    }
  }
  complete_shuffle(warp, f.mask);
}

// A lane of `warp` has returned: the lanes waiting at a shuffle may now be complete, or fail.
inline void recheck_shuffles(unsigned warp) {
  Runtime& r = rt();
  const unsigned n = std::min(kWarpSize, r.nthreads - warp * kWarpSize);
  for (unsigned lane = 0; lane < n && !r.failed; ++lane)
    if (r.fibers[warp * kWarpSize + lane].state == State::Shuffle) try_complete_shuffle(warp, lane);
}

inline void warp_exchange(Shfl mode, unsigned mask, const void* value, unsigned size, unsigned b, int width) {
  Runtime& r = rt();
  Fiber& f = self();
  const unsigned id = unsigned(r.current), warp = id / kWarpSize, lane = id % kWarpSize;
  if (width < 1 || width > int(kWarpSize) || (width & (width - 1)) != 0)
    fail("%s: width %d is not a power of two in [1, 32]", kShflNames[int(mode)], width);
  if (!(mask >> lane & 1u))
    fail("%s: thread (%u,%u,%u) (lane %u) is not in its mask 0x%08x", kShflNames[int(mode)], f.tid.x, f.tid.y,
         f.tid.z, lane, mask);
  f.mode = mode;
  f.mask = mask;
  f.b = b;
  f.width = unsigned(width);
  f.size = size;
  std::memset(f.value, 0, sizeof f.value);
  if (size) std::memcpy(f.value, value, size);
  f.state = State::Shuffle;
  try_complete_shuffle(warp, lane);
  yield();
}

template <class T>
inline T shuffle(Shfl mode, unsigned mask, T var, unsigned b, int width) {
  static_assert(std::is_trivially_copyable<T>::value && sizeof(T) <= 16, "a shuffled value of at most 16 bytes");
  warp_exchange(mode, mask, &var, sizeof(T), b, width);
  T out;
  std::memcpy(&out, self().result, sizeof(T));
  return out;
}

inline void fiber_main() {
  Runtime& r = rt();
  r.body(r.body_arg);
  Fiber& f = r.fibers[r.current];
  f.state = State::Exited;
  --r.live;
  release_barrier_if_complete();
  recheck_shuffles(unsigned(r.current) / kWarpSize);
  swapcontext(&f.ctx, &r.scheduler);  // never resumed
}

inline bool allocate() {
  Runtime& r = rt();
  const size_t page = size_t(sysconf(_SC_PAGESIZE));
  if (r.fibers[0].stack == nullptr) {
    for (unsigned i = 0; i < kMaxThreads; ++i) {
      void* p = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                     -1, 0);
      if (p == MAP_FAILED) return false;
      mprotect(p, page, PROT_NONE);  // stacks grow down into this page: an overflow faults
      r.fibers[i].stack = static_cast<char*>(p) + page;
    }
  }
  if (r.dyn_region == nullptr) {
    r.dyn_region_bytes = (kMaxDynamicShared + page - 1) / page * page;
    void* p = mmap(nullptr, r.dyn_region_bytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return false;
    r.dyn_region = static_cast<unsigned char*>(p);
    mprotect(r.dyn_region + r.dyn_region_bytes, page, PROT_NONE);
  }
  return true;
}

extern "C" char __start_cuda_emu_shared[] __attribute__((weak, visibility("hidden")));
extern "C" char __stop_cuda_emu_shared[] __attribute__((weak, visibility("hidden")));

inline void fill_shared(size_t dynamic_bytes) {
  if (__start_cuda_emu_shared != nullptr)
    std::memset(__start_cuda_emu_shared, 0xff, size_t(__stop_cuda_emu_shared - __start_cuda_emu_shared));
  std::memset(rt().dyn_shared, 0xff, dynamic_bytes);
}

const char* const kStateNames[] = {"ready", "at __syncthreads", "at a warp shuffle", "returned"};

inline void describe_deadlock() {
  Runtime& r = rt();
  unsigned count[4] = {0, 0, 0, 0};
  int first[4] = {-1, -1, -1, -1};
  for (unsigned i = 0; i < r.nthreads; ++i) {
    const int s = int(r.fibers[i].state);
    if (count[s]++ == 0) first[s] = int(i);
  }
  char detail[512] = "";
  size_t used = 0;
  for (int s = 1; s < 4; ++s)
    if (count[s]) {
      const uint3& t = r.fibers[first[s]].tid;
      used += size_t(std::snprintf(detail + used, sizeof detail - used, "; %u %s (first: thread (%u,%u,%u))",
                                   count[s], kStateNames[s], t.x, t.y, t.z));
      if (used >= sizeof detail) break;
    }
  fail("deadlock in block (%u,%u,%u) of %u threads: no thread can run%s", r.block_idx.x, r.block_idx.y,
       r.block_idx.z, r.nthreads, detail);
}

// Runs one block to completion; false if the launch failed.
inline bool run_block() {
  Runtime& r = rt();
  r.live = r.nthreads;
  r.at_barrier = 0;
  for (unsigned i = 0; i < r.nthreads; ++i) {
    Fiber& f = r.fibers[i];
    f.tid = uint3{i % r.block.x, i / r.block.x % r.block.y, i / (r.block.x * r.block.y)};
    f.state = State::Ready;
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack;
    f.ctx.uc_stack.ss_size = kStackBytes;
    f.ctx.uc_link = &r.scheduler;
    makecontext(&f.ctx, fiber_main, 0);
  }
  while (r.live > 0) {
    bool ran = false;
    for (unsigned i = 0; i < r.nthreads; ++i) {
      if (r.fibers[i].state != State::Ready) continue;
      r.current = int(i);
      swapcontext(&r.scheduler, &r.fibers[i].ctx);
      r.current = -1;
      if (r.failed) return false;
      ran = true;
    }
    if (!ran) {
      describe_deadlock();
      return false;
    }
  }
  return true;
}

template <class... P>
struct Call {
  void (*kernel)(P...);
  void** args;

  template <size_t... I>
  void invoke(std::index_sequence<I...>) {
    kernel(*static_cast<std::remove_cv_t<std::remove_reference_t<P>>*>(args[I])...);
  }
  static void run(void* self) { static_cast<Call*>(self)->invoke(std::index_sequence_for<P...>{}); }
};

// cuLaunchKernel's contract: args[i] points at the value of parameter i. Returns 0, or 1 with
// a message in `error`.
template <class... P>
int launch(void (*kernel)(P...), const unsigned* grid, const unsigned* block, size_t dynamic_shared, void** args,
           int nargs, char* error, size_t error_bytes) {
  Runtime& r = rt();
  r.failed = false;
  r.error[0] = '\0';
  r.current = -1;
  const unsigned long long threads = 1ull * block[0] * block[1] * block[2];
  if (nargs != int(sizeof...(P)))
    fail("the kernel takes %d parameters, the launch passes %d", int(sizeof...(P)), nargs);
  else if (std::min({grid[0], grid[1], grid[2], block[0], block[1], block[2]}) == 0 || threads > kMaxThreads ||
           block[2] > 64 || grid[1] > 65535 || grid[2] > 65535)
    fail("invalid launch: grid (%u,%u,%u), block (%u,%u,%u)", grid[0], grid[1], grid[2], block[0], block[1],
         block[2]);
  else if (dynamic_shared > kMaxDynamicShared)
    fail("%zu bytes of dynamic shared memory, at most %zu", dynamic_shared, kMaxDynamicShared);
  else if (!allocate())
    fail("cannot map the thread stacks");
  if (!r.failed) {
    Call<P...> call{kernel, args};
    r.body = &Call<P...>::run;
    r.body_arg = &call;
    r.grid = dim3(grid[0], grid[1], grid[2]);
    r.block = dim3(block[0], block[1], block[2]);
    r.nthreads = unsigned(threads);
    r.dyn_shared = r.dyn_region + r.dyn_region_bytes - (dynamic_shared + 15) / 16 * 16;
    for (unsigned z = 0; z < grid[2] && !r.failed; ++z)
      for (unsigned y = 0; y < grid[1] && !r.failed; ++y)
        for (unsigned x = 0; x < grid[0] && !r.failed; ++x) {
          r.block_idx = uint3{x, y, z};
          fill_shared(dynamic_shared);
          run_block();
        }
  }
  if (r.failed && error_bytes) std::snprintf(error, error_bytes, "%s", r.error);
  return r.failed ? 1 : 0;
}

inline unsigned char* dynamic_shared() { return rt().dyn_shared; }

}  // namespace cuda_emu

// ---- CUDA's names ---------------------------------------------------------------------------

#define threadIdx (::cuda_emu::self().tid)
#define blockIdx (::cuda_emu::rt().block_idx)
#define blockDim (static_cast<const dim3&>(::cuda_emu::rt().block))
#define gridDim (static_cast<const dim3&>(::cuda_emu::rt().grid))
constexpr int warpSize = 32;

inline void __syncthreads() { cuda_emu::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  cuda_emu::warp_exchange(cuda_emu::Shfl::Sync, mask, nullptr, 0, 0, 32);
}
// The lanes of the caller's warp that have not returned (the emulator does not model
// divergence within a warp).
inline unsigned __activemask() { return cuda_emu::live_lanes(unsigned(cuda_emu::rt().current) / 32); }
template <class T>
inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = 32) {
  return cuda_emu::shuffle(cuda_emu::Shfl::Idx, mask, var, unsigned(src_lane), width);
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32) {
  return cuda_emu::shuffle(cuda_emu::Shfl::Up, mask, var, delta, width);
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32) {
  return cuda_emu::shuffle(cuda_emu::Shfl::Down, mask, var, delta, width);
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32) {
  return cuda_emu::shuffle(cuda_emu::Shfl::Bfly, mask, var, unsigned(lane_mask), width);
}

// One exported launcher per kernel: emulate.py appends CUDA_EMU_EXPORT(name) to the module.
#define CUDA_EMU_EXPORT(name)                                                                        \
  extern "C" __attribute__((visibility("default"))) int cuda_emu_launch_##name(                      \
      const unsigned* grid, const unsigned* block, unsigned long dynamic_shared, void** args, int nargs, \
      char* error, unsigned long error_bytes) {                                                      \
    return ::cuda_emu::launch(name, grid, block, dynamic_shared, args, nargs, error, error_bytes);    \
  }

// Dynamic shared memory: emulate.py rewrites `extern __shared__ T name[];` to this.
#define CUDA_EMU_DYNAMIC_SHARED(T, name) T* const name = reinterpret_cast<T*>(::cuda_emu::dynamic_shared())

// Qualifiers. `__shared__` makes a function-local static in the section that is refilled with
// 0xFF before each block. `alignas` becomes the GNU attribute because TVM writes
// `__shared__ alignas(64) float x[..]`, standard attributes that g++ refuses after `static`.
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __restrict__
#define __shared__ static __attribute__((section("cuda_emu_shared")))
#define __constant__ static
#define __align__(n) __attribute__((aligned(n)))
#define alignas(n) __attribute__((aligned(n)))

// The preprocessor branches NVRTC takes (check.py compiles with NVRTC first).
#define __CUDACC__ 1
#define __CUDACC_RTC__ 1
#ifndef CUDA_EMU_ARCH
#define CUDA_EMU_ARCH 900
#endif
#define __CUDA_ARCH__ CUDA_EMU_ARCH

namespace cuda {
namespace std = ::std;  // TVM's preamble: `using cuda::std::uint8_t;` etc.
}
