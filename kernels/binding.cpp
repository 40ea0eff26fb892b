// The torch side of the CUDA kernels: argument checks, output allocation, the current stream, and
// the CUDA implementations of the mixdq:: ops. The op schemas and their pure-torch reference
// implementations are declared in Python (quant/kernels/ops.py); this file only adds CUDA kernels
// to them when the extension is imported, so nothing registers unless the build exists.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>
#include <torch/library.h>

#include <optional>
#include <vector>

#include "mixdq_kernels.h"

namespace {

using mixdq::DType;

cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

void check_launch(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, "mixdq::", op, ": kernel launch failed: ",
              cudaGetErrorString(err));
}

DType input_dtype(at::ScalarType t) {
  switch (t) {
    case at::kHalf:
      return DType::kHalf;
    case at::kBFloat16:
      return DType::kBFloat16;
    case at::kFloat:
      return DType::kFloat;
    default:
      TORCH_CHECK(false, "mixdq::quantize_act: input must be float16, bfloat16 or float32, got ",
                  t);
  }
}

DType output_dtype(at::ScalarType t, bool allow_float, const char* op) {
  if (t == at::kHalf) return DType::kHalf;
  if (t == at::kInt) return DType::kInt32;
  if (allow_float && t == at::kFloat) return DType::kFloat;
  TORCH_CHECK(false, "mixdq::", op, ": the CUDA kernel writes float16",
              allow_float ? ", float32" : "", " or int32 (the exact accumulator), not ", t);
}

void check_vector(const at::Tensor& t, int64_t n, at::ScalarType dtype, const at::Tensor& like,
                  const char* name, const char* op) {
  TORCH_CHECK(t.device() == like.device(), "mixdq::", op, ": ", name, " is on ", t.device(),
              ", expected ", like.device());
  TORCH_CHECK(t.scalar_type() == dtype && t.is_contiguous() && t.numel() == n, "mixdq::", op,
              ": ", name, " must be a contiguous ", dtype, " tensor of ", n, " elements, got ",
              t.scalar_type(), " ", t.sizes());
}

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

at::Tensor quantize_act(const at::Tensor& x, double scale, int64_t zero_point, int64_t bits,
                        int64_t pad_to) {
  TORCH_CHECK(x.is_cuda() && x.dim() >= 1, "mixdq::quantize_act: expected a CUDA tensor of rank "
              ">= 1");
  TORCH_CHECK(bits >= 2 && bits <= 8, "mixdq::quantize_act: bits must be in 2..8, got ", bits);
  TORCH_CHECK(pad_to >= 1, "mixdq::quantize_act: pad_to must be >= 1");
  const int64_t qmin = -(int64_t{1} << (bits - 1)), qmax = (int64_t{1} << (bits - 1)) - 1;
  TORCH_CHECK(zero_point >= qmin && zero_point <= qmax, "mixdq::quantize_act: zero point ",
              zero_point, " outside [", qmin, ", ", qmax, "]");
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor xc = x.contiguous();
  const int64_t K = x.size(-1);
  const int64_t Kp = round_up(K, pad_to);
  const int64_t rows = K == 0 ? 0 : x.numel() / K;
  std::vector<int64_t> sizes = x.sizes().vec();
  sizes.back() = Kp;
  at::Tensor y = at::empty(sizes, x.options().dtype(at::kChar));
  check_launch(mixdq::launch_quantize(xc.data_ptr(), input_dtype(x.scalar_type()),
                                      y.data_ptr<int8_t>(), rows, static_cast<int>(K),
                                      static_cast<int>(Kp), static_cast<float>(scale),
                                      static_cast<int>(zero_point), static_cast<int>(qmin),
                                      static_cast<int>(qmax), current_stream()),
               "quantize_act");
  return y;
}

// Fills the epilogue part of the parameters after checking the per-channel tensors.
void set_epilogue(mixdq::GemmParams& p, const at::Tensor& weight_sum,
                  const at::Tensor& weight_scale, double x_scale, int64_t x_zero_point,
                  const std::optional<at::Tensor>& bias, const at::Tensor& like, const char* op) {
  check_vector(weight_sum, p.N, at::kInt, like, "weight_sum", op);
  check_vector(weight_scale, p.N, at::kFloat, like, "weight_scale", op);
  TORCH_CHECK(x_zero_point >= -128 && x_zero_point <= 127, "mixdq::", op,
              ": x_zero_point must fit int8");
  p.wsum = weight_sum.data_ptr<int32_t>();
  p.wscale = weight_scale.data_ptr<float>();
  p.bias = nullptr;
  if (bias.has_value()) {
    check_vector(*bias, p.N, at::kFloat, like, "bias", op);
    p.bias = bias->data_ptr<float>();
  }
  p.x_scale = static_cast<float>(x_scale);
  p.zp = static_cast<int>(x_zero_point);
}

at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& weight_sum,
                  const at::Tensor& weight_scale, double x_scale, int64_t x_zero_point,
                  const std::optional<at::Tensor>& bias, at::ScalarType out_dtype,
                  int64_t config, bool int4) {
  const char* op = int4 ? "w4a8_linear" : "w8a8_linear";
  TORCH_CHECK(x.is_cuda() && x.scalar_type() == at::kChar && x.dim() >= 1, "mixdq::", op,
              ": x must be a CUDA int8 tensor of rank >= 1");
  TORCH_CHECK(weight.device() == x.device() && weight.dim() == 2 && weight.is_contiguous() &&
                  weight.scalar_type() == (int4 ? at::kByte : at::kChar),
              "mixdq::", op, ": weight must be a contiguous 2-D ", int4 ? "uint8" : "int8",
              " tensor on ", x.device());
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor xc = x.contiguous();
  const int64_t K = x.size(-1), N = weight.size(0);
  TORCH_CHECK(K % 16 == 0 && K > 0, "mixdq::", op, ": K = ", K,
              " must be a positive multiple of 16 (pad with quantize_act(pad_to=16))");
  const int64_t row_bytes = int4 ? round_up(K, 32) / 2 : K;
  TORCH_CHECK(weight.size(1) == row_bytes, "mixdq::", op, ": weight has ", weight.size(1),
              " bytes per row, expected ", row_bytes, " for K = ", K);
  const int64_t M = x.numel() / K;
  TORCH_CHECK(M < (int64_t{1} << 31) && N < 65535 * 64, "mixdq::", op, ": problem too large");
  std::vector<int64_t> sizes = x.sizes().vec();
  sizes.back() = N;
  at::Tensor out = at::empty(sizes, x.options().dtype(out_dtype));
  mixdq::GemmParams p{};
  p.a = xc.data_ptr<int8_t>();
  p.b = static_cast<const uint8_t*>(weight.data_ptr());
  p.M = static_cast<int>(M);
  p.N = static_cast<int>(N);
  p.K = static_cast<int>(K);
  p.ldb = static_cast<int>(weight.size(1));
  set_epilogue(p, weight_sum, weight_scale, x_scale, x_zero_point, bias, x, op);
  p.out = out.data_ptr();
  p.ldo = static_cast<int>(N);
  check_launch(mixdq::launch_gemm(p, false, int4, output_dtype(out_dtype, false, op),
                                  static_cast<int>(config), current_stream()),
               op);
  return out;
}

at::Tensor conv2d(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& weight_sum,
                  const at::Tensor& tap_sum, const at::Tensor& weight_scale, double x_scale,
                  int64_t x_zero_point, const std::optional<at::Tensor>& bias,
                  at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                  at::IntArrayRef dilation, at::ScalarType out_dtype, int64_t config, bool int4) {
  const char* op = int4 ? "w4a8_conv2d" : "w8a8_conv2d";
  TORCH_CHECK(x.is_cuda() && x.scalar_type() == at::kChar && x.dim() == 4, "mixdq::", op,
              ": x must be a CUDA int8 NHWC tensor [batch, H, W, C]");
  TORCH_CHECK(kernel_size.size() == 2 && stride.size() == 2 && padding.size() == 2 &&
                  dilation.size() == 2,
              "mixdq::", op, ": kernel_size, stride, padding and dilation take two values");
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor xc = x.contiguous();
  const int64_t B = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3);
  const int64_t KH = kernel_size[0], KW = kernel_size[1];
  const int64_t OH = (H + 2 * padding[0] - dilation[0] * (KH - 1) - 1) / stride[0] + 1;
  const int64_t OW = (W + 2 * padding[1] - dilation[1] * (KW - 1) - 1) / stride[1] + 1;
  const int64_t K = KH * KW * C, N = weight.size(0);
  TORCH_CHECK(C % 16 == 0 && C > 0, "mixdq::", op, ": C = ", C,
              " must be a positive multiple of 16 (pad with quantize_act(pad_to=16))");
  TORCH_CHECK(KH * KW <= 32, "mixdq::", op, ": at most 32 kernel taps");
  TORCH_CHECK(OH > 0 && OW > 0, "mixdq::", op, ": empty output");
  TORCH_CHECK(weight.device() == x.device() && weight.is_contiguous() &&
                  weight.scalar_type() == (int4 ? at::kByte : at::kChar) &&
                  weight.numel() == N * (int4 ? round_up(K, 32) / 2 : K),
              "mixdq::", op, ": weight must be a contiguous ",
              int4 ? "uint8 [N, round_up(KH*KW*C, 32) / 2]" : "int8 [N, KH, KW, C]",
              " tensor on ", x.device());
  check_vector(tap_sum, N * KH * KW, at::kInt, x, "tap_sum", op);
  const int64_t M = B * OH * OW;
  TORCH_CHECK(M < (int64_t{1} << 31) && xc.numel() < (int64_t{1} << 31), "mixdq::", op,
              ": problem too large");
  at::Tensor out = at::empty({B, OH, OW, N}, x.options().dtype(out_dtype));
  mixdq::GemmParams p{};
  p.a = xc.data_ptr<int8_t>();
  p.b = static_cast<const uint8_t*>(weight.data_ptr());
  p.M = static_cast<int>(M);
  p.N = static_cast<int>(N);
  p.K = static_cast<int>(K);
  p.ldb = static_cast<int>(int4 ? round_up(K, 32) / 2 : K);
  p.batch = static_cast<int>(B);
  p.H = static_cast<int>(H);
  p.W = static_cast<int>(W);
  p.C = static_cast<int>(C);
  p.OH = static_cast<int>(OH);
  p.OW = static_cast<int>(OW);
  p.KH = static_cast<int>(KH);
  p.KW = static_cast<int>(KW);
  p.SH = static_cast<int>(stride[0]);
  p.SW = static_cast<int>(stride[1]);
  p.PH = static_cast<int>(padding[0]);
  p.PW = static_cast<int>(padding[1]);
  p.DH = static_cast<int>(dilation[0]);
  p.DW = static_cast<int>(dilation[1]);
  p.tap_sum = tap_sum.data_ptr<int32_t>();
  set_epilogue(p, weight_sum, weight_scale, x_scale, x_zero_point, bias, x, op);
  p.out = out.data_ptr();
  p.ldo = static_cast<int>(N);
  check_launch(mixdq::launch_gemm(p, true, int4, output_dtype(out_dtype, false, op),
                                  static_cast<int>(config), current_stream()),
               op);
  return out;
}

at::Tensor w8a8_linear(const at::Tensor& x, const at::Tensor& weight,
                       const at::Tensor& weight_sum, const at::Tensor& weight_scale,
                       double x_scale, int64_t x_zero_point,
                       const std::optional<at::Tensor>& bias, at::ScalarType out_dtype,
                       int64_t config) {
  return linear(x, weight, weight_sum, weight_scale, x_scale, x_zero_point, bias, out_dtype,
                config, false);
}

at::Tensor w4a8_linear(const at::Tensor& x, const at::Tensor& weight,
                       const at::Tensor& weight_sum, const at::Tensor& weight_scale,
                       double x_scale, int64_t x_zero_point,
                       const std::optional<at::Tensor>& bias, at::ScalarType out_dtype,
                       int64_t config) {
  return linear(x, weight, weight_sum, weight_scale, x_scale, x_zero_point, bias, out_dtype,
                config, true);
}

at::Tensor w8a8_conv2d(const at::Tensor& x, const at::Tensor& weight,
                       const at::Tensor& weight_sum, const at::Tensor& tap_sum,
                       const at::Tensor& weight_scale, double x_scale, int64_t x_zero_point,
                       const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                       at::IntArrayRef padding, at::IntArrayRef dilation,
                       at::ScalarType out_dtype, int64_t config) {
  TORCH_CHECK(weight.dim() == 4 && weight.size(3) == x.size(-1),
              "mixdq::w8a8_conv2d: weight must be [N, KH, KW, C] with the input's C");
  const int64_t ks[2] = {weight.size(1), weight.size(2)};
  return conv2d(x, weight, weight_sum, tap_sum, weight_scale, x_scale, x_zero_point, bias, ks,
                stride, padding, dilation, out_dtype, config, false);
}

at::Tensor w4a8_conv2d(const at::Tensor& x, const at::Tensor& weight,
                       const at::Tensor& weight_sum, const at::Tensor& tap_sum,
                       const at::Tensor& weight_scale, double x_scale, int64_t x_zero_point,
                       const std::optional<at::Tensor>& bias, at::IntArrayRef kernel_size,
                       at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                       at::ScalarType out_dtype, int64_t config) {
  return conv2d(x, weight, weight_sum, tap_sum, weight_scale, x_scale, x_zero_point, bias,
                kernel_size, stride, padding, dilation, out_dtype, config, true);
}

at::Tensor dequantize_acc(const at::Tensor& acc, const at::Tensor& weight_sum,
                          const at::Tensor& weight_scale, double x_scale, int64_t x_zero_point,
                          const std::optional<at::Tensor>& bias, at::ScalarType out_dtype) {
  const char* op = "dequantize_acc";
  TORCH_CHECK(acc.is_cuda() && acc.scalar_type() == at::kInt && acc.dim() >= 1, "mixdq::", op,
              ": acc must be a CUDA int32 tensor of rank >= 1");
  const c10::cuda::CUDAGuard guard(acc.device());
  const at::Tensor ac = acc.contiguous();
  mixdq::GemmParams p{};
  p.N = static_cast<int>(acc.size(-1));
  TORCH_CHECK(p.N > 0, "mixdq::", op, ": empty last dimension");
  set_epilogue(p, weight_sum, weight_scale, x_scale, x_zero_point, bias, acc, op);
  at::Tensor out = at::empty(acc.sizes(), acc.options().dtype(out_dtype));
  check_launch(mixdq::launch_dequantize(ac.data_ptr<int32_t>(), acc.numel() / p.N, p.N, p.wsum,
                                        p.wscale, p.bias, p.x_scale, p.zp,
                                        output_dtype(out_dtype, true, op), out.data_ptr(),
                                        current_stream()),
               op);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(mixdq, CUDA, m) {
  m.impl("quantize_act", &quantize_act);
  m.impl("w8a8_linear", &w8a8_linear);
  m.impl("w4a8_linear", &w4a8_linear);
  m.impl("w8a8_conv2d", &w8a8_conv2d);
  m.impl("w4a8_conv2d", &w4a8_conv2d);
  m.impl("dequantize_acc", &dequantize_acc);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "mixdq CUDA kernels (registered as CUDA implementations of the mixdq:: ops)";
  m.def("num_gemm_configs", &mixdq::num_gemm_configs, "Number of compiled GEMM tile shapes");
  m.def("choose_gemm_config", &mixdq::choose_gemm_config,
        "The tile shape used for config=-1, given M, N and the multiprocessor count");
}
