// launch_gemm: argument checks shared by every variant, the tile-shape heuristic, and dispatch.
#include "gemm_launch.cuh"

namespace mixdq {

int num_gemm_configs() { return kNumTileConfigs; }

// The largest tile that still fills the machine: big tiles reuse each loaded byte more, but a
// grid with fewer CTAs than multiprocessors leaves tensor cores idle (SDXL's 16x16-latent
// layers at batch 1 have M = 256).
int choose_gemm_config(int M, int N, int num_sms) {
  auto ctas = [&](int bm, int bn) {
    return static_cast<long long>((M + bm - 1) / bm) * ((N + bn - 1) / bn);
  };
  if (ctas(128, 128) >= num_sms) return 0;
  if (ctas(64, 128) >= num_sms) return 1;
  if (ctas(64, 64) >= num_sms) return 2;
  return 3;
}

cudaError_t launch_gemm(const GemmParams& p, bool conv, bool int4, DType out_dtype, int config,
                        cudaStream_t stream) {
  if (p.M < 0 || p.N < 0 || p.K <= 0 || p.K % 16 != 0) return cudaErrorInvalidValue;
  if (p.ldb % 16 != 0 || (int4 ? p.ldb * 2 < (p.K + 31) / 32 * 32 : p.ldb < p.K))
    return cudaErrorInvalidValue;
  if (conv && (p.C % 16 != 0 || p.KH * p.KW > 32 || p.KH * p.KW * p.C != p.K))
    return cudaErrorInvalidValue;
  if (p.M == 0 || p.N == 0) return cudaSuccess;
  if (config < 0) {
    int device = 0, sms = 0;
    cudaError_t err = cudaGetDevice(&device);
    if (err == cudaSuccess)
      err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    if (err != cudaSuccess) return err;
    config = choose_gemm_config(p.M, p.N, sms);
  }
  return conv ? launch_gemm_conv(p, int4, out_dtype, config, stream)
              : launch_gemm_linear(p, int4, out_dtype, config, stream);
}

}  // namespace mixdq
