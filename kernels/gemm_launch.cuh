// Instantiation and launch of the GEMM template for one loader kind (linear or conv); included by
// gemm_linear.cu and gemm_conv.cu so that the two halves compile in parallel.
#pragma once

#include <climits>

#include "gemm.cuh"
#include "mixdq_kernels.h"

namespace mixdq {

template <class T, bool CONV, bool B4, class OutT>
__global__ void __launch_bounds__(T::WM* T::WN * 32) gemm_kernel(GemmParams p) {
  extern __shared__ __align__(16) char smem[];
  Gemm<T, CONV, B4, OutT, DeviceArch>::run(p, smem, threadIdx.x, blockIdx.x, blockIdx.y);
}

template <class T, bool CONV, bool B4, class OutT>
cudaError_t launch_tile(const GemmParams& p, cudaStream_t stream) {
  using G = Gemm<T, CONV, B4, OutT, DeviceArch>;
  auto kernel = gemm_kernel<T, CONV, B4, OutT>;
  // Above 48 KB of dynamic shared memory a kernel must opt in; cheap enough to do per launch and
  // correct on every device of a multi-GPU process.
  cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, G::SMEM_BYTES);
  if (err != cudaSuccess) return err;
  const long long gx = (static_cast<long long>(p.M) + G::BM - 1) / G::BM;
  const long long gy = (static_cast<long long>(p.N) + G::BN - 1) / G::BN;
  if (gx > INT_MAX || gy > 65535) return cudaErrorInvalidValue;
  kernel<<<dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy)), G::NT, G::SMEM_BYTES,
           stream>>>(p);
  return cudaGetLastError();
}

template <class T, bool CONV>
cudaError_t launch_tile_variant(const GemmParams& p, bool int4, DType out, cudaStream_t stream) {
  if (out == DType::kHalf)
    return int4 ? launch_tile<T, CONV, true, __half>(p, stream)
                : launch_tile<T, CONV, false, __half>(p, stream);
  if (out == DType::kInt32)
    return int4 ? launch_tile<T, CONV, true, int32_t>(p, stream)
                : launch_tile<T, CONV, false, int32_t>(p, stream);
  return cudaErrorInvalidValue;
}

template <bool CONV>
cudaError_t launch_gemm_kind(const GemmParams& p, bool int4, DType out, int config,
                             cudaStream_t stream) {
  switch (config) {
    case 0:
      return launch_tile_variant<Tile128x128, CONV>(p, int4, out, stream);
    case 1:
      return launch_tile_variant<Tile64x128, CONV>(p, int4, out, stream);
    case 2:
      return launch_tile_variant<Tile64x64, CONV>(p, int4, out, stream);
    case 3:
      return launch_tile_variant<Tile64x32, CONV>(p, int4, out, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

cudaError_t launch_gemm_linear(const GemmParams& p, bool int4, DType out, int config,
                               cudaStream_t stream);
cudaError_t launch_gemm_conv(const GemmParams& p, bool int4, DType out, int config,
                             cudaStream_t stream);

}  // namespace mixdq
