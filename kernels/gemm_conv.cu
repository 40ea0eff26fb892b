// W8A8 / W4A8 GEMM, convolutions: implicit GEMM over an NHWC int8 image.
#include "gemm_launch.cuh"

namespace mixdq {

cudaError_t launch_gemm_conv(const GemmParams& p, bool int4, DType out, int config,
                             cudaStream_t stream) {
  return launch_gemm_kind<true>(p, int4, out, config, stream);
}

}  // namespace mixdq
