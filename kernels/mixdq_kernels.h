// Host entry points of the mixdq CUDA kernels: raw pointers, shapes and a stream, so that the
// torch binding (binding.cpp) is the only file that needs torch. Each returns the launch status
// (cudaSuccess, or cudaErrorInvalidValue for arguments the kernels do not support).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "params.h"

namespace mixdq {

// y[r, c] = quantize(x[r, c]) for c < K, 0 for K <= c < Kp; x is [rows, K] contiguous fp16,
// bf16 or fp32; y is [rows, Kp] int8. Vectorised (8 values per thread) when Kp == K and the
// pointers are aligned, with a scalar tail.
cudaError_t launch_quantize(const void* x, DType x_dtype, int8_t* y, int64_t rows, int K, int Kp,
                            float scale, int zero_point, int qmin, int qmax, cudaStream_t stream);

// The int8 tensor-core GEMM with the fused epilogue (gemm.cuh). `conv` selects the implicit-GEMM
// loader over an NHWC image, `int4` the packed-int4 weight path. out_dtype: kHalf or kInt32.
// config: index into the tile shapes (0: 128x128, 1: 64x128, 2: 64x64, 3: 64x32) or -1 to choose
// by shape.
cudaError_t launch_gemm(const GemmParams& p, bool conv, bool int4, DType out_dtype, int config,
                        cudaStream_t stream);

// The epilogue alone, for the torch._int_mm path: out = dequant(acc - zp * wsum[n]) over a
// contiguous [M, N] int32 accumulator. out_dtype: kHalf, kFloat or kInt32.
cudaError_t launch_dequantize(const int32_t* acc, int64_t M, int N, const int32_t* wsum,
                              const float* wscale, const float* bias, float x_scale,
                              int zero_point, DType out_dtype, void* out, cudaStream_t stream);

// The tile shape launch_gemm picks for config = -1.
int choose_gemm_config(int M, int N, int num_sms);
int num_gemm_configs();

}  // namespace mixdq
