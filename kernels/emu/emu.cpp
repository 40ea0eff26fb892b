// C entry points of the host emulator (see host_arch.h), loaded by the CPU tests with ctypes.
// Build: g++ -std=c++17 -O2 -shared -fPIC -pthread -ffp-contract=off kernels/emu/emu.cpp
//
// Every entry returns 0 on success or 1 with a message in `err` (an emulated fault: misaligned
// or out-of-bounds access, a copy left in flight).
#include <cstring>
#include <functional>
#include <string>
#include <thread>

#include "../elementwise.cuh"
#include "../gemm.cuh"
#include "host_arch.h"

namespace mixdq {
namespace emu {
namespace {

int report(Launch& launch, char* err, int err_len) {
  if (launch.error.empty()) return 0;
  std::snprintf(err, static_cast<size_t>(err_len), "%s", launch.error.c_str());
  return 1;
}

// Runs `body(tid)` for every thread of one CTA, each on its own std::thread.
void run_cta(Launch& launch, int nthreads, const std::function<void(int)>& body) {
  Barrier cta(nthreads);
  std::vector<WarpShared> warps((nthreads + 31) / 32);
  std::vector<std::thread> threads;
  threads.reserve(nthreads);
  for (int tid = 0; tid < nthreads; ++tid) {
    threads.emplace_back([&, tid] {
      ThreadCtx ctx;
      ctx.launch = &launch;
      ctx.cta = &cta;
      ctx.warp = &warps[tid / 32];
      ctx.lane = tid % 32;
      tls = &ctx;
      body(tid);
      for (const auto& group : ctx.groups)
        if (!group.empty()) launch.fail("kernel exited with cp.async copies still in flight");
      if (!ctx.open.empty()) launch.fail("kernel exited with uncommitted cp.async copies");
      tls = nullptr;
    });
  }
  for (std::thread& t : threads) t.join();
}

template <class T, bool CONV, bool B4, class OutT>
void run_gemm(Launch& launch, const GemmParams& p) {
  using G = Gemm<T, CONV, B4, OutT, HostArch>;
  const int gx = (p.M + G::BM - 1) / G::BM, gy = (p.N + G::BN - 1) / G::BN;
  std::vector<char> smem_buf(G::SMEM_BYTES + 16);
  char* smem = smem_buf.data() + (16 - reinterpret_cast<uintptr_t>(smem_buf.data()) % 16) % 16;
  launch.smem = Region{smem, smem + G::SMEM_BYTES};
  for (int by = 0; by < gy; ++by)
    for (int bx = 0; bx < gx; ++bx) {
      std::memset(smem, 0xA5, G::SMEM_BYTES);  // garbage: nothing may be read before written
      run_cta(launch, G::NT, [&](int tid) { G::run(p, smem, tid, bx, by); });
      if (!launch.error.empty()) return;
    }
}

template <class T, bool CONV, bool B4>
void run_gemm_out(Launch& launch, const GemmParams& p, int out_kind) {
  if (out_kind == 0)
    run_gemm<T, CONV, B4, float>(launch, p);
  else
    run_gemm<T, CONV, B4, int32_t>(launch, p);
}

template <class T>
void run_gemm_variant(Launch& launch, const GemmParams& p, bool conv, bool int4, int out_kind) {
  if (conv)
    int4 ? run_gemm_out<T, true, true>(launch, p, out_kind)
         : run_gemm_out<T, true, false>(launch, p, out_kind);
  else
    int4 ? run_gemm_out<T, false, true>(launch, p, out_kind)
         : run_gemm_out<T, false, false>(launch, p, out_kind);
}

}  // namespace
}  // namespace emu
}  // namespace mixdq

using mixdq::GemmParams;
using mixdq::emu::Launch;
using mixdq::emu::Region;

extern "C" {

// out_kind: 0 = float32 output, 1 = int32 (exact accumulator). config: the tile shape index of
// mixdq_kernels.h. a_bytes / b_bytes / out_bytes: the sizes of the buffers behind p->a, p->b and
// p->out (the per-channel vectors are trusted).
int mixdq_emu_gemm(int conv, int int4, int out_kind, int config, const GemmParams* p,
                   long long a_bytes, long long b_bytes, long long out_bytes, char* err,
                   int err_len) {
  Launch launch;
  const char* a = reinterpret_cast<const char*>(p->a);
  const char* b = reinterpret_cast<const char*>(p->b);
  const char* out = static_cast<const char*>(p->out);
  launch.reads = {Region{a, a + a_bytes}, Region{b, b + b_bytes}};
  launch.writes = {Region{out, out + out_bytes}};
  switch (config) {
    case 0:
      mixdq::emu::run_gemm_variant<mixdq::Tile128x128>(launch, *p, conv, int4, out_kind);
      break;
    case 1:
      mixdq::emu::run_gemm_variant<mixdq::Tile64x128>(launch, *p, conv, int4, out_kind);
      break;
    case 2:
      mixdq::emu::run_gemm_variant<mixdq::Tile64x64>(launch, *p, conv, int4, out_kind);
      break;
    case 3:
      mixdq::emu::run_gemm_variant<mixdq::Tile64x32>(launch, *p, conv, int4, out_kind);
      break;
    default:
      launch.fail("unknown tile config");
  }
  return mixdq::emu::report(launch, err, err_len);
}

// The quantize kernel body over `nthreads` emulated threads (float32 input).
int mixdq_emu_quantize(const float* x, int8_t* y, long long rows, int K, int Kp, float scale,
                       int zp, int qmin, int qmax, int vec, int nthreads, char* err,
                       int err_len) {
  using Body = mixdq::QuantizeBody<float, mixdq::emu::HostArch>;
  Launch launch;
  const char* xb = reinterpret_cast<const char*>(x);
  const char* yb = reinterpret_cast<const char*>(y);
  launch.reads = {Region{xb, xb + rows * K * sizeof(float)}};
  launch.writes = {Region{yb, yb + rows * Kp}};
  const mixdq::QuantArgs q{scale, static_cast<float>(zp), static_cast<float>(qmin),
                           static_cast<float>(qmax)};
  mixdq::emu::ThreadCtx ctx;
  ctx.launch = &launch;
  mixdq::emu::tls = &ctx;
  for (int tid = 0; tid < nthreads; ++tid) {
    if (Kp == K)
      Body::flat(x, y, rows * K, q, vec != 0, tid, nthreads);
    else
      Body::padded(x, y, rows, K, Kp, q, tid, nthreads);
  }
  mixdq::emu::tls = nullptr;
  return mixdq::emu::report(launch, err, err_len);
}

// The dequantize kernel body (out_kind 0: float32, 1: int32).
int mixdq_emu_dequantize(const int32_t* acc, long long M, int N, const int32_t* wsum,
                         const float* wscale, const float* bias, float x_scale, int zp,
                         int out_kind, void* out, int nthreads, char* err, int err_len) {
  Launch launch;
  const char* ob = static_cast<const char*>(out);
  launch.writes = {Region{ob, ob + M * N * 4}};
  mixdq::emu::ThreadCtx ctx;
  ctx.launch = &launch;
  mixdq::emu::tls = &ctx;
  for (int tid = 0; tid < nthreads; ++tid) {
    if (out_kind == 0)
      mixdq::DequantBody<float, mixdq::emu::HostArch>::run(acc, static_cast<float*>(out), M, N,
                                                           wsum, wscale, bias, x_scale, zp, tid,
                                                           nthreads);
    else
      mixdq::DequantBody<int32_t, mixdq::emu::HostArch>::run(
          acc, static_cast<int32_t*>(out), M, N, wsum, wscale, bias, x_scale, zp, tid, nthreads);
  }
  mixdq::emu::tls = nullptr;
  return mixdq::emu::report(launch, err, err_len);
}

}  // extern "C"
