// W8A8 / W4A8 GEMM, linear layers: A is a row-major [M, K] int8 matrix.
#include "gemm_launch.cuh"

namespace mixdq {

cudaError_t launch_gemm_linear(const GemmParams& p, bool int4, DType out, int config,
                               cudaStream_t stream) {
  return launch_gemm_kind<false>(p, int4, out, config, stream);
}

}  // namespace mixdq
