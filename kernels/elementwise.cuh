// Bodies of the memory-bound kernels (activation quantization, the separate dequantize of the
// torch._int_mm path), templated on Arch like the GEMM so that the host emulator runs them too.
// Every body is a grid-stride loop over `nthreads` threads, this one being `tid`.
#pragma once

#include "common.cuh"

namespace mixdq {

struct QuantArgs {
  float scale, zp, qmin, qmax;
};

template <class InT, class Arch>
struct QuantizeBody {
  // y[i] = q(x[i]) for i < n. With `vec`, groups of 8 are loaded as one 16-byte vector (fp16,
  // bf16; two for fp32) and stored as one 8-byte vector; the n % 8 tail is done one by one.
  static MIXDQ_HD void flat(const InT* x, int8_t* y, int64_t n, QuantArgs q, bool vec,
                            int64_t tid, int64_t nthreads) {
    const int64_t groups = vec ? n / 8 : 0;
    for (int64_t gi = tid; gi < groups; gi += nthreads) {
      float v[8];
      Arch::load8(x + gi * 8, v);
      uint32_t lo = 0, hi = 0;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        lo |= static_cast<uint32_t>(static_cast<uint8_t>(
                  quantize_value<Arch>(v[j], q.scale, q.zp, q.qmin, q.qmax)))
              << (8 * j);
        hi |= static_cast<uint32_t>(static_cast<uint8_t>(
                  quantize_value<Arch>(v[j + 4], q.scale, q.zp, q.qmin, q.qmax)))
              << (8 * j);
      }
      Arch::store8(y + gi * 8, lo, hi);
    }
    for (int64_t i = groups * 8 + tid; i < n; i += nthreads)
      Arch::template store1<int8_t>(
          y + i, quantize_value<Arch>(Arch::to_float(x[i]), q.scale, q.zp, q.qmin, q.qmax));
  }

  // Rows of K values into rows of Kp >= K bytes, zero-filled: the padded K of a layer whose
  // input width is not a multiple of 16 (its padded weight columns are zero).
  static MIXDQ_HD void padded(const InT* x, int8_t* y, int64_t rows, int K, int Kp, QuantArgs q,
                              int64_t tid, int64_t nthreads) {
    const int64_t n = rows * Kp;
    for (int64_t i = tid; i < n; i += nthreads) {
      const int64_t r = i / Kp;
      const int c = static_cast<int>(i - r * Kp);
      const int8_t v = c < K ? quantize_value<Arch>(Arch::to_float(x[r * K + c]), q.scale, q.zp,
                                                    q.qmin, q.qmax)
                             : static_cast<int8_t>(0);
      Arch::template store1<int8_t>(y + i, v);
    }
  }
};

template <class OutT, class Arch>
struct DequantBody {
  static MIXDQ_HD void run(const int32_t* acc, OutT* out, int64_t M, int N, const int32_t* wsum,
                           const float* wscale, const float* bias, float x_scale, int zp,
                           int64_t tid, int64_t nthreads) {
    const int64_t n_all = M * N;
    for (int64_t i = tid; i < n_all; i += nthreads) {
      const int n = static_cast<int>(i % N);
      Arch::template store1<OutT>(out + i, dequant_value<OutT, Arch>(
                                               acc[i] - zp * wsum[n], x_scale, wscale[n],
                                               bias != nullptr ? bias + n : nullptr));
    }
  }
};

}  // namespace mixdq
