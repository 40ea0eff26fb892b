// Plain parameter structs shared by the kernels, their launchers, the torch binding and the host
// emulator. No CUDA or torch types here.
#pragma once

#include <cstdint>

namespace mixdq {

struct GemmParams {
  const int8_t* a;   // linear: [M, K] row-major; conv: NHWC image [batch, H, W, C]
  const uint8_t* b;  // [N, ldb] bytes: int8 [N, K] or kernel-layout int4 [N, round_up(K,32)/2]
  int M, N, K, ldb;
  // Convolution geometry (implicit GEMM only): M = batch * OH * OW, K = KH * KW * C.
  int batch, H, W, C, OH, OW, KH, KW, SH, SW, PH, PW, DH, DW;
  const int32_t* wsum;     // [N]: sum over all k of B[n, k]
  const int32_t* tap_sum;  // conv: [N, KH * KW], sum over c of B[n, (kh, kw, c)]
  const float* wscale;     // [N]
  const float* bias;       // [N] or nullptr
  float x_scale;
  int zp;
  void* out;  // [M, ldo] of the output type
  int ldo;
};

enum class DType : int { kHalf = 0, kBFloat16 = 1, kFloat = 2, kInt32 = 3 };

}  // namespace mixdq
