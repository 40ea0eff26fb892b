// Shared definitions for the mixdq kernels.
//
// The kernel bodies (gemm.cuh, quantize.cuh) are templates over an "Arch" policy that supplies
// the few instructions that differ between the GPU and the host emulator used by the CPU tests:
// asynchronous copies, barriers, ldmatrix, mma.sync and IEEE arithmetic. DeviceArch below emits
// the PTX; kernels/emu/host_arch.h implements the same instructions on the CPU from the PTX ISA's
// fragment tables, so the CPU tests run the very same kernel source.
//
// No torch headers here: these files compile with plain nvcc (scripts/compile_kernels.sh).
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#if defined(__CUDACC__)
#include <cuda_fp16.h>
#define MIXDQ_HD __host__ __device__ __forceinline__
#define MIXDQ_HD_NOINLINE __host__ __device__ __noinline__
#else
#define MIXDQ_HD inline
#define MIXDQ_HD_NOINLINE __attribute__((noinline))
#endif

namespace mixdq {

// Sign-extends four packed 4-bit values held in the low nibble of each byte of `v` (high
// nibbles zero) into four int8 lanes: a byte 8..15 becomes 0xF8..0xFF. (v & 0x08) * 0x1E is
// 0xF0 or 0 per byte and cannot carry into the next byte (8 * 0x1E = 0xF0 < 0x100).
MIXDQ_HD uint32_t sext_nibbles(uint32_t v) { return v | ((v & 0x08080808u) * 0x1Eu); }

// Unpacks one 32-bit word of the kernel's int4 layout into the two int8x4 registers of an
// mma.m16n8k32 B fragment: the low nibbles hold k = 4t..4t+3, the high nibbles k = 16+4t..16+4t+3
// (see quant/kernels/layout.py, pack_int4).
MIXDQ_HD void unpack_int4_word(uint32_t w, uint32_t& lo, uint32_t& hi) {
  lo = sext_nibbles(w & 0x0F0F0F0Fu);
  hi = sext_nibbles((w >> 4) & 0x0F0F0F0Fu);
}

// OutStore<T>::cvt(float) -> T: the final rounding of a float result into the output type.
template <class OutT>
struct OutStore;

template <>
struct OutStore<float> {
  static MIXDQ_HD float cvt(float v) { return v; }
};

// The epilogue of one output element, shared by the GEMM and the separate dequantize kernel:
// v is the exact int32 (acc - zero_point * weight_sum); float32 math with one rounding per
// operation, in the order of the torch reference: float(v) * (x_scale * w_scale) + bias.
template <class OutT, class Arch>
MIXDQ_HD OutT dequant_value(int v, float x_scale, float w_scale, const float* bias) {
  if constexpr (std::is_same<OutT, int32_t>::value) {
    return static_cast<OutT>(v);
  } else {
    float y = Arch::mul_rn(Arch::i2f(v), Arch::mul_rn(x_scale, w_scale));
    if (bias != nullptr) y = Arch::add_rn(y, *bias);
    return OutStore<OutT>::cvt(y);
  }
}

// Activation quantization of one value (docs/DESIGN.md): clamp(rint(x / scale) + zp, qmin, qmax)
// with a correctly rounded float32 division and round-half-to-even. NaN maps to qmin.
template <class Arch>
MIXDQ_HD int8_t quantize_value(float x, float scale, float zp, float qmin, float qmax) {
  float q = Arch::add_rn(Arch::rint(Arch::div_rn(x, scale)), zp);
  if (!(q >= qmin)) q = qmin;
  if (q > qmax) q = qmax;
  return static_cast<int8_t>(static_cast<int>(q));
}

#if defined(__CUDACC__)
// The instructions of the real GPU. Everything here is sm_80+ (cp.async, ldmatrix, s8 mma).
struct DeviceArch {
  static __device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
    const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
    const int src_bytes = valid ? 16 : 0;  // 0 source bytes: the 16 destination bytes are zeroed
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem),
                 "r"(src_bytes)
                 : "memory");
  }
  static __device__ __forceinline__ void cp_async_commit() {
    asm volatile("cp.async.commit_group;\n" ::: "memory");
  }
  template <int N>
  static __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
  }
  static __device__ __forceinline__ void sync() { __syncthreads(); }
  static __device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* smem) {
    const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s)
                 : "memory");
  }
  static __device__ __forceinline__ uint32_t lds32(const void* smem) {
    const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
    uint32_t v;
    asm volatile("ld.shared.b32 %0, [%1];\n" : "=r"(v) : "r"(s) : "memory");
    return v;
  }
  // d += a * b for one m16n8k32 tile, int8 x int8 -> int32.
  static __device__ __forceinline__ void mma(int (&d)[4], const uint32_t (&a)[4],
                                             const uint32_t (&b)[2]) {
    asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
  // Correctly rounded IEEE operations: the epilogue and the quantizer must not be contracted into
  // FMAs or replaced by reciprocal multiplies, so that they agree bit for bit with torch.
  static __device__ __forceinline__ float div_rn(float a, float b) { return __fdiv_rn(a, b); }
  static __device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
  static __device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
  static __device__ __forceinline__ float rint(float a) { return rintf(a); }
  static __device__ __forceinline__ float i2f(int v) { return __int2float_rn(v); }
  // Two adjacent outputs; one paired store when the pair is aligned to its combined size.
  template <class T>
  static __device__ __forceinline__ void store2(T* p, T a, T b, bool paired) {
    if (paired) {
      store_pair(p, a, b);
    } else {
      p[0] = a;
      p[1] = b;
    }
  }
  template <class T>
  static __device__ __forceinline__ void store1(T* p, T a) {
    *p = a;
  }
  static __device__ __forceinline__ void store_pair(__half* p, __half a, __half b) {
    *reinterpret_cast<__half2*>(p) = __halves2half2(a, b);
  }
  static __device__ __forceinline__ void store_pair(float* p, float a, float b) {
    *reinterpret_cast<float2*>(p) = make_float2(a, b);
  }
  static __device__ __forceinline__ void store_pair(int32_t* p, int32_t a, int32_t b) {
    *reinterpret_cast<int2*>(p) = make_int2(a, b);
  }
};

template <>
struct OutStore<__half> {
  static __device__ __forceinline__ __half cvt(float v) { return __float2half_rn(v); }
};
#endif

}  // namespace mixdq
