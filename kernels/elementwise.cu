// Activation quantization (fp16/bf16/fp32 -> int8) and the separate dequantize epilogue of the
// torch._int_mm path.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "elementwise.cuh"
#include "mixdq_kernels.h"

namespace mixdq {
namespace {

// DeviceArch plus the typed vector loads of the elementwise kernels.
struct ElemArch : DeviceArch {
  static __device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
  static __device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
  static __device__ __forceinline__ float to_float(float v) { return v; }

  static __device__ __forceinline__ void load8(const __half* p, float (&v)[8]) {
    const uint4 raw = *reinterpret_cast<const uint4*>(p);
    const __half2* h = reinterpret_cast<const __half2*>(&raw);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float2 f = __half22float2(h[j]);
      v[2 * j] = f.x;
      v[2 * j + 1] = f.y;
    }
  }
  static __device__ __forceinline__ void load8(const __nv_bfloat16* p, float (&v)[8]) {
    const uint4 raw = *reinterpret_cast<const uint4*>(p);
    const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float2 f = __bfloat1622float2(h[j]);
      v[2 * j] = f.x;
      v[2 * j + 1] = f.y;
    }
  }
  static __device__ __forceinline__ void load8(const float* p, float (&v)[8]) {
    const float4 a = reinterpret_cast<const float4*>(p)[0];
    const float4 b = reinterpret_cast<const float4*>(p)[1];
    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
    v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
  }
  static __device__ __forceinline__ void store8(int8_t* p, uint32_t lo, uint32_t hi) {
    *reinterpret_cast<uint2*>(p) = make_uint2(lo, hi);
  }
};

constexpr int kThreads = 256;

int grid_for(int64_t items) {
  const int64_t blocks = (items + kThreads - 1) / kThreads;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(blocks, 8192)));
}

template <class InT>
__global__ void __launch_bounds__(kThreads)
    quantize_flat_kernel(const InT* x, int8_t* y, int64_t n, QuantArgs q, bool vec) {
  const int64_t nthreads = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  QuantizeBody<InT, ElemArch>::flat(x, y, n, q, vec, tid, nthreads);
}

template <class InT>
__global__ void __launch_bounds__(kThreads)
    quantize_padded_kernel(const InT* x, int8_t* y, int64_t rows, int K, int Kp, QuantArgs q) {
  const int64_t nthreads = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  QuantizeBody<InT, ElemArch>::padded(x, y, rows, K, Kp, q, tid, nthreads);
}

template <class InT>
cudaError_t quantize_typed(const InT* x, int8_t* y, int64_t rows, int K, int Kp, QuantArgs q,
                           cudaStream_t stream) {
  if (Kp == K) {
    const int64_t n = rows * K;
    const bool vec = reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
                     reinterpret_cast<uintptr_t>(y) % 8 == 0;
    const int64_t items = vec ? n / 8 + n % 8 : n;
    quantize_flat_kernel<InT><<<grid_for(items), kThreads, 0, stream>>>(x, y, n, q, vec);
  } else {
    quantize_padded_kernel<InT><<<grid_for(rows * Kp), kThreads, 0, stream>>>(x, y, rows, K, Kp,
                                                                             q);
  }
  return cudaGetLastError();
}

template <class OutT>
__global__ void __launch_bounds__(kThreads)
    dequant_kernel(const int32_t* acc, OutT* out, int64_t M, int N, const int32_t* wsum,
                   const float* wscale, const float* bias, float x_scale, int zp) {
  const int64_t nthreads = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  DequantBody<OutT, ElemArch>::run(acc, out, M, N, wsum, wscale, bias, x_scale, zp, tid,
                                   nthreads);
}

}  // namespace

cudaError_t launch_quantize(const void* x, DType x_dtype, int8_t* y, int64_t rows, int K, int Kp,
                            float scale, int zero_point, int qmin, int qmax,
                            cudaStream_t stream) {
  if (rows < 0 || K < 0 || Kp < K) return cudaErrorInvalidValue;
  if (rows == 0 || Kp == 0) return cudaSuccess;
  const QuantArgs q{scale, static_cast<float>(zero_point), static_cast<float>(qmin),
                    static_cast<float>(qmax)};
  switch (x_dtype) {
    case DType::kHalf:
      return quantize_typed(static_cast<const __half*>(x), y, rows, K, Kp, q, stream);
    case DType::kBFloat16:
      return quantize_typed(static_cast<const __nv_bfloat16*>(x), y, rows, K, Kp, q, stream);
    case DType::kFloat:
      return quantize_typed(static_cast<const float*>(x), y, rows, K, Kp, q, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

cudaError_t launch_dequantize(const int32_t* acc, int64_t M, int N, const int32_t* wsum,
                              const float* wscale, const float* bias, float x_scale,
                              int zero_point, DType out_dtype, void* out, cudaStream_t stream) {
  if (M < 0 || N <= 0) return cudaErrorInvalidValue;
  if (M == 0) return cudaSuccess;
  const int grid = grid_for(M * N);
  switch (out_dtype) {
    case DType::kHalf:
      dequant_kernel<__half><<<grid, kThreads, 0, stream>>>(
          acc, static_cast<__half*>(out), M, N, wsum, wscale, bias, x_scale, zero_point);
      break;
    case DType::kFloat:
      dequant_kernel<float><<<grid, kThreads, 0, stream>>>(
          acc, static_cast<float*>(out), M, N, wsum, wscale, bias, x_scale, zero_point);
      break;
    case DType::kInt32:
      dequant_kernel<int32_t><<<grid, kThreads, 0, stream>>>(
          acc, static_cast<int32_t*>(out), M, N, wsum, wscale, bias, x_scale, zero_point);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace mixdq
