// A CPU emulator of the few GPU instructions the mixdq kernels use, so that the CPU test suite
// runs the very kernel source of gemm.cuh / elementwise.cuh (index math, pipeline, fragment
// layouts, int4 unpacking, epilogue) and compares it bit for bit with the torch reference.
//
// Model: one std::thread per GPU thread of a CTA; __syncthreads is a barrier over the CTA's
// threads, and the warp-collective instructions (ldmatrix, mma.sync) exchange operands through a
// per-warp scratch area and a barrier over the warp's 32 threads. The fragment layouts are taken
// from the PTX ISA tables (mma.m16n8k32 .s8, ldmatrix .m8n8.x4 .b16), independently of the
// addressing in gemm.cuh that they check.
//
// cp.async is emulated at its weakest: the source is read at issue time but the shared-memory
// destination is written only when a cp.async.wait_group retires its group, so a kernel that
// reads a stage before waiting for it sees stale bytes and fails its test. Shared memory starts
// filled with garbage. Alignment and bounds that the hardware requires are checked (16-byte
// cp.async and ldmatrix rows, paired stores, global reads and writes inside their buffers).
#pragma once

#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "../common.cuh"

namespace mixdq {
namespace emu {

class Barrier {
 public:
  explicit Barrier(int n) : n_(n) {}
  void wait() {
    std::unique_lock<std::mutex> lock(m_);
    const unsigned gen = gen_;
    if (++count_ == n_) {
      count_ = 0;
      ++gen_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return gen_ != gen; });
    }
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  int n_, count_ = 0;
  unsigned gen_ = 0;
};

// Memory regions a launch may touch; anything else is an emulated fault.
struct Region {
  const char* begin;
  const char* end;
  bool contains(const void* p, size_t bytes) const {
    const char* c = static_cast<const char*>(p);
    return c >= begin && c + bytes <= end;
  }
};

struct Launch {
  std::vector<Region> reads, writes;
  Region smem{nullptr, nullptr};
  std::mutex err_m;
  std::string error;
  void fail(const std::string& what) {
    std::lock_guard<std::mutex> lock(err_m);
    if (error.empty()) error = what;
  }
  bool readable(const void* p, size_t n) const {
    for (const Region& r : reads)
      if (r.contains(p, n)) return true;
    return false;
  }
  bool writable(const void* p, size_t n) const {
    for (const Region& r : writes)
      if (r.contains(p, n)) return true;
    return false;
  }
};

struct WarpShared {
  Barrier bar{32};
  const char* addr[2][32];
  uint32_t a[2][32][4];
  uint32_t b[2][32][2];
};

struct PendingCopy {
  char* dst;
  unsigned char data[16];
};

struct ThreadCtx {
  Launch* launch;
  Barrier* cta;
  WarpShared* warp;
  int lane;
  int phase = 0;  // alternates the warp scratch buffer between consecutive collectives
  std::vector<std::vector<PendingCopy>> groups;  // committed, oldest first
  std::vector<PendingCopy> open;                 // issued, not yet committed
};

inline thread_local ThreadCtx* tls = nullptr;

inline bool aligned(const void* p, size_t a) { return reinterpret_cast<uintptr_t>(p) % a == 0; }

struct HostArch {
  static void cp_async16(void* smem, const void* gmem, bool valid) {
    ThreadCtx& t = *tls;
    if (!aligned(smem, 16) || !t.launch->smem.contains(smem, 16))
      t.launch->fail("cp.async: shared destination misaligned or out of bounds");
    PendingCopy c;
    c.dst = static_cast<char*>(smem);
    if (valid) {
      if (!aligned(gmem, 16) || !t.launch->readable(gmem, 16)) {
        t.launch->fail("cp.async: global source misaligned or out of bounds");
        std::memset(c.data, 0, 16);
      } else {
        std::memcpy(c.data, gmem, 16);
      }
    } else {
      std::memset(c.data, 0, 16);
    }
    t.open.push_back(c);
  }
  static void cp_async_commit() {
    tls->groups.push_back(std::move(tls->open));
    tls->open.clear();
  }
  template <int N>
  static void cp_async_wait() {
    ThreadCtx& t = *tls;
    while (static_cast<int>(t.groups.size()) > N) {
      for (const PendingCopy& c : t.groups.front()) std::memcpy(c.dst, c.data, 16);
      t.groups.erase(t.groups.begin());
    }
  }
  static void sync() { tls->cta->wait(); }

  // ldmatrix.sync.aligned.m8n8.x4.shared.b16: lanes 8j..8j+7 give the row addresses of matrix j
  // (16 bytes each); lane l receives, from every matrix j, row l/4, bytes 4(l%4)..4(l%4)+3.
  static void ldmatrix_x4(uint32_t (&r)[4], const void* smem) {
    ThreadCtx& t = *tls;
    WarpShared& w = *t.warp;
    const int ph = t.phase;
    t.phase ^= 1;
    if (!aligned(smem, 16) || !t.launch->smem.contains(smem, 16))
      t.launch->fail("ldmatrix: row address misaligned or out of shared memory");
    w.addr[ph][t.lane] = static_cast<const char*>(smem);
    w.bar.wait();
    for (int j = 0; j < 4; ++j) {
      const char* row = w.addr[ph][8 * j + t.lane / 4];
      if (t.launch->smem.contains(row, 16))
        std::memcpy(&r[j], row + 4 * (t.lane % 4), 4);
      else
        r[j] = 0;
    }
  }

  static uint32_t lds32(const void* smem) {
    if (!aligned(smem, 4) || !tls->launch->smem.contains(smem, 4)) {
      tls->launch->fail("ld.shared.b32: misaligned or out of shared memory");
      return 0;
    }
    uint32_t v;
    std::memcpy(&v, smem, 4);
    return v;
  }

  // mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32, lane = 4 * groupID + threadID_in_group:
  //   A: reg 0 (row g, k 4t+i), 1 (row g+8, k 4t+i), 2 (row g, k 16+4t+i), 3 (row g+8, k 16+4t+i)
  //   B: reg 0 (k 4t+i, col g), 1 (k 16+4t+i, col g)
  //   C/D: 0, 1 (row g, cols 2t, 2t+1), 2, 3 (row g+8, cols 2t, 2t+1)
  static void mma(int (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    ThreadCtx& t = *tls;
    WarpShared& w = *t.warp;
    const int ph = t.phase;
    t.phase ^= 1;
    std::memcpy(w.a[ph][t.lane], a, sizeof(a));
    std::memcpy(w.b[ph][t.lane], b, sizeof(b));
    w.bar.wait();
    const int g = t.lane / 4, tq = t.lane % 4;
    for (int i = 0; i < 4; ++i) {
      const int row = g + 8 * (i / 2), col = 2 * tq + i % 2;
      uint32_t s = static_cast<uint32_t>(d[i]);  // s32 accumulation wraps
      for (int k = 0; k < 32; ++k) {
        const int a_lane = (row % 8) * 4 + (k % 16) / 4;
        const int a_reg = (row >= 8 ? 1 : 0) + (k >= 16 ? 2 : 0);
        const int b_lane = col * 4 + (k % 16) / 4;
        const int b_reg = k / 16;
        const int8_t av = static_cast<int8_t>(w.a[ph][a_lane][a_reg] >> (8 * (k % 4)));
        const int8_t bv = static_cast<int8_t>(w.b[ph][b_lane][b_reg] >> (8 * (k % 4)));
        s += static_cast<uint32_t>(static_cast<int32_t>(av) * static_cast<int32_t>(bv));
      }
      d[i] = static_cast<int>(s);
    }
  }

  // IEEE single precision, one rounding per operation (built with -ffp-contract=off).
  static float div_rn(float a, float b) { return a / b; }
  static float mul_rn(float a, float b) { return a * b; }
  static float add_rn(float a, float b) { return a + b; }
  static float rint(float a) { return std::nearbyint(a); }
  static float i2f(int v) { return static_cast<float>(v); }

  template <class T>
  static void store2(T* p, T a, T b, bool paired) {
    if (paired && !aligned(p, 2 * sizeof(T))) tls->launch->fail("paired store misaligned");
    if (!tls->launch->writable(p, 2 * sizeof(T))) {
      tls->launch->fail("store out of the output buffer");
      return;
    }
    p[0] = a;
    p[1] = b;
  }
  template <class T>
  static void store1(T* p, T a) {
    if (!tls->launch->writable(p, sizeof(T))) {
      tls->launch->fail("store out of the output buffer");
      return;
    }
    p[0] = a;
  }

  // Elementwise kernels (float input only in the emulator).
  static float to_float(float v) { return v; }
  static void load8(const float* p, float (&v)[8]) {
    if (!aligned(p, 16) || !tls->launch->readable(p, 32)) tls->launch->fail("load8 misaligned");
    std::memcpy(v, p, sizeof(v));
  }
  static void store8(int8_t* p, uint32_t lo, uint32_t hi) {
    if (!aligned(p, 8) || !tls->launch->writable(p, 8)) tls->launch->fail("store8 misaligned");
    std::memcpy(p, &lo, 4);
    std::memcpy(p + 4, &hi, 4);
  }
};

}  // namespace emu
}  // namespace mixdq
