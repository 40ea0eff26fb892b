// The int8 tensor-core GEMM behind every W8A8 / W4A8 layer, as one template:
//
//   out[m, n] = epilogue( sum_k A[m, k] * B[n, k] )       A int8, B int8 or packed int4
//
// - A is either a row-major [M, K] int8 matrix (linear layers) or, for convolutions, gathered on
//   the fly from an NHWC int8 image (implicit GEMM; K runs over (kh, kw, c) with c fastest).
//   Out-of-image taps read 0; the epilogue then subtracts zero_point times the weight sum of the
//   in-bounds taps only, which is exactly the float convolution of the dequantized input with
//   zero padding.
// - B is [N, K] with K contiguous ("col-major" for mma .col): plain int8, or int4 in the kernel
//   layout of quant/kernels/layout.py (16 bytes per 32 k; byte j: k = j low nibble, k = 16 + j
//   high nibble), unpacked to int8 in registers: no int8 copy of the weight exists anywhere.
// - Epilogue, per output element (int32 exact, then float32 with no FMA contraction):
//     v = acc - zero_point * wsum(m, n)
//     out = v                                   (OutT = int32: the exact accumulator)
//     out = float(v) * (x_scale * wscale[n]) [+ bias[n]]   (OutT = float / half)
//
// Structure: a CTA computes a BM x BN tile with WM x WN warps; each warp a (BM/WM) x (BN/WN)
// tile of mma.m16n8k32 instructions. K is walked in BK steps through a STAGES-deep cp.async
// pipeline (16-byte copies, zero-filled out of bounds). Shared-memory rows are padded by 16 bytes
// so that ldmatrix (8 rows x 16 bytes) and the 32-bit int4 loads hit 8 distinct 16-byte bank
// groups: conflict-free without swizzling.
//
// Requirements (checked by the host launchers): K % 16 == 0 (conv: C % 16 == 0); the int4 weight
// row holds round_up(K, 32) / 2 bytes; all pointers 16-byte aligned; M, N arbitrary.
#pragma once

#include "common.cuh"
#include "params.h"

namespace mixdq {

template <int BM_, int BN_, int BK_, int WM_, int WN_, int STAGES_>
struct TileShape {
  static constexpr int BM = BM_, BN = BN_, BK = BK_, WM = WM_, WN = WN_, STAGES = STAGES_;
};

// The tile shapes compiled into the extension; `config` arguments index this list.
using Tile128x128 = TileShape<128, 128, 64, 2, 2, 4>;  // warp tile 64 x 64
using Tile64x128 = TileShape<64, 128, 64, 2, 2, 4>;    // warp tile 32 x 64
using Tile64x64 = TileShape<64, 64, 64, 2, 2, 4>;      // warp tile 32 x 32
using Tile64x32 = TileShape<64, 32, 64, 2, 2, 4>;      // warp tile 32 x 16: most CTAs
constexpr int kNumTileConfigs = 4;

template <class T, bool CONV, bool B4, class OutT, class Arch>
struct Gemm {
  static constexpr int BM = T::BM, BN = T::BN, BK = T::BK, STAGES = T::STAGES;
  static constexpr int WM = T::WM, WN = T::WN;
  static constexpr int NT = WM * WN * 32;  // threads per CTA
  static constexpr int WTM = BM / WM, WTN = BN / WN;
  static constexpr int MI = WTM / 16, NI = WTN / 8;
  static constexpr int SA = BK + 16;                    // A smem row stride (bytes)
  static constexpr int SB = B4 ? BK / 2 + 16 : BK + 16;  // B smem row stride (bytes)
  static constexpr int A_BYTES = BM * SA, B_BYTES = BN * SB;
  static constexpr int STAGE_BYTES = A_BYTES + B_BYTES;
  static constexpr int SMEM_BYTES = STAGES * STAGE_BYTES;
  // Loader: each thread copies fixed 16-byte columns of fixed rows, a pass of NT threads at a time.
  // When a block has fewer chunks than threads (small BN with int4), the last pass is partial.
  static constexpr int A_CPR = BK / 16;               // 16-byte chunks per A row
  static constexpr int A_RPP = NT / A_CPR;            // rows per pass
  static constexpr int A_PASSES = (BM + A_RPP - 1) / A_RPP;
  static constexpr int B_CPR = B4 ? BK / 32 : BK / 16;  // 16-byte chunks per B row
  static constexpr int B_RPP = NT / B_CPR;
  static constexpr int B_PASSES = (BN + B_RPP - 1) / B_RPP;

  static_assert(BK % 32 == 0, "BK must be a multiple of the mma k (32)");
  static_assert(WTM % 16 == 0 && WTN % 16 == 0, "warp tile must be multiples of 16 x 16");
  static_assert(NT % A_CPR == 0 && (BM % A_RPP == 0 || BM < A_RPP), "A loader tiling");
  static_assert(NT % B_CPR == 0 && (BN % B_RPP == 0 || BN < B_RPP), "B loader tiling");
  static_assert(SA % 16 == 0 && SB % 16 == 0 && STAGE_BYTES % 16 == 0, "16-byte alignment");

  static MIXDQ_HD void run(const GemmParams& p, char* smem, int tid, int bm, int bn) {
    const int lane = tid & 31, warp = tid >> 5;
    const int wm = warp / WN, wn = warp % WN;
    const int m0 = bm * BM, n0 = bn * BN;
    const int KT = (p.K + BK - 1) / BK;

    // ---- A loader state: this thread's rows are fixed for the whole K loop.
    const int a_col = tid % A_CPR, a_row0 = tid / A_CPR;
    bool a_ok[A_PASSES];
    const int8_t* a_ptr[A_PASSES];  // linear: row start; conv: image start (batch index)
    int a_ih0[A_PASSES], a_iw0[A_PASSES];
#pragma unroll
    for (int i = 0; i < A_PASSES; ++i) {
      const int m = m0 + a_row0 + i * A_RPP;
      a_ok[i] = m < p.M && a_row0 + i * A_RPP < BM;
      const int mm = a_ok[i] ? m : 0;
      if constexpr (CONV) {
        const int per_img = p.OH * p.OW;
        const int img = mm / per_img, rem = mm - img * per_img;
        const int oh = rem / p.OW, ow = rem - oh * p.OW;
        a_ih0[i] = oh * p.SH - p.PH;
        a_iw0[i] = ow * p.SW - p.PW;
        a_ptr[i] = p.a + static_cast<size_t>(img) * p.H * p.W * p.C;
      } else {
        a_ih0[i] = a_iw0[i] = 0;
        a_ptr[i] = p.a + static_cast<size_t>(mm) * p.K;
      }
    }
    const int b_col = tid % B_CPR, b_row0 = tid / B_CPR;

    auto load_tile = [&](int kt, int stage) {
      char* As = smem + stage * STAGE_BYTES;
      char* Bs = As + A_BYTES;
      const int k = kt * BK + a_col * 16;
      const bool k_ok = k < p.K;
      if constexpr (CONV) {
        // k -> (tap row r, tap column s, channel c); a 16-byte chunk never straddles taps
        // because C % 16 == 0.
        const int tap = k_ok ? k / p.C : 0;
        const int c = k - tap * p.C;
        const int r = tap / p.KW, s = tap - r * p.KW;
#pragma unroll
        for (int i = 0; i < A_PASSES; ++i) {
          const int ih = a_ih0[i] + r * p.DH, iw = a_iw0[i] + s * p.DW;
          if (BM < A_RPP && a_row0 + i * A_RPP >= BM) continue;  // partial pass
          const bool ok = a_ok[i] && k_ok && ih >= 0 && ih < p.H && iw >= 0 && iw < p.W;
          const int8_t* src =
              ok ? a_ptr[i] + (static_cast<size_t>(ih) * p.W + iw) * p.C + c : p.a;
          Arch::cp_async16(As + (a_row0 + i * A_RPP) * SA + a_col * 16, src, ok);
        }
      } else {
#pragma unroll
        for (int i = 0; i < A_PASSES; ++i) {
          if (BM < A_RPP && a_row0 + i * A_RPP >= BM) continue;  // partial pass
          const bool ok = a_ok[i] && k_ok;
          const int8_t* src = ok ? a_ptr[i] + k : p.a;
          Arch::cp_async16(As + (a_row0 + i * A_RPP) * SA + a_col * 16, src, ok);
        }
      }
#pragma unroll
      for (int i = 0; i < B_PASSES; ++i) {
        const int row = b_row0 + i * B_RPP;
        if (BN < B_RPP && row >= BN) continue;  // partial pass
        const int n = n0 + row;
        const uint8_t* src;
        bool ok;
        if constexpr (B4) {
          ok = n < p.N && kt * BK + b_col * 32 < p.K;
          src = p.b + static_cast<size_t>(n) * p.ldb + kt * (BK / 2) + b_col * 16;
        } else {
          ok = n < p.N && kt * BK + b_col * 16 < p.K;
          src = p.b + static_cast<size_t>(n) * p.ldb + kt * BK + b_col * 16;
        }
        Arch::cp_async16(Bs + row * SB + b_col * 16, ok ? src : p.b, ok);
      }
    };

    int acc[MI][NI][4];
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
      for (int ni = 0; ni < NI; ++ni)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[mi][ni][j] = 0;

    // ---- Pipeline. Exactly one commit per step keeps the group count uniform, so that
    // wait<STAGES-2> at step kt guarantees tile kt has landed (this thread's copies); the barrier
    // after it publishes every thread's copies and also guarantees that all warps are done with
    // step kt-1, whose stage the prefetch below overwrites.
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
      if (s < KT) load_tile(s, s);
      Arch::cp_async_commit();
    }
    for (int kt = 0; kt < KT; ++kt) {
      Arch::template cp_async_wait<STAGES - 2>();
      Arch::sync();
      const int next = kt + STAGES - 1;
      if (next < KT) load_tile(next, next % STAGES);
      Arch::cp_async_commit();

      const char* As = smem + (kt % STAGES) * STAGE_BYTES;
      const char* Bs = As + A_BYTES;
#pragma unroll
      for (int ks = 0; ks < BK / 32; ++ks) {
        // A fragments: ldmatrix.x4 matrices = (rows 0-7 | 8-15) x (k 0-15 | 16-31), in the
        // register order a0..a3 of mma.m16n8k32; lanes 8j..8j+7 address matrix j.
        uint32_t af[MI][4];
#pragma unroll
        for (int mi = 0; mi < MI; ++mi) {
          const int row = wm * WTM + mi * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
          const int col = ks * 32 + (lane >> 4) * 16;
          Arch::ldmatrix_x4(af[mi], As + row * SA + col);
        }
        uint32_t bf[NI][2];
        if constexpr (B4) {
          // One 32-bit load per n8 tile: lane (g, t) needs n = g and k = 4t..4t+3, 16+4t..16+4t+3,
          // which the layout puts in bytes 4t..4t+3 of the 16-byte group.
#pragma unroll
          for (int ni = 0; ni < NI; ++ni) {
            const int n = wn * WTN + ni * 8 + (lane >> 2);
            const uint32_t w = Arch::lds32(Bs + n * SB + ks * 16 + (lane & 3) * 4);
            unpack_int4_word(w, bf[ni][0], bf[ni][1]);
          }
        } else {
          // ldmatrix.x4 over two n8 tiles: matrices = (n 0-7, k 0-15), (n 0-7, k 16-31),
          // (n 8-15, k 0-15), (n 8-15, k 16-31) = b0, b1 of tile 2p and of tile 2p+1.
#pragma unroll
          for (int pi = 0; pi < NI / 2; ++pi) {
            const int n = wn * WTN + pi * 16 + (lane & 7) + (lane >> 4) * 8;
            const int col = ks * 32 + ((lane >> 3) & 1) * 16;
            uint32_t r[4];
            Arch::ldmatrix_x4(r, Bs + n * SB + col);
            bf[2 * pi][0] = r[0];
            bf[2 * pi][1] = r[1];
            bf[2 * pi + 1][0] = r[2];
            bf[2 * pi + 1][1] = r[3];
          }
        }
#pragma unroll
        for (int mi = 0; mi < MI; ++mi)
#pragma unroll
          for (int ni = 0; ni < NI; ++ni) Arch::mma(acc[mi][ni], af[mi], bf[ni]);
      }
    }

    epilogue(p, acc, lane, m0 + wm * WTM, n0 + wn * WTN);
  }

  // Bit i set when tap i = r * KW + s of output row m reads inside the image. Its loops stay
  // rolled: unrolled into every site of the unrolled epilogue they bloat the code (and the build).
  static MIXDQ_HD uint32_t valid_taps(const GemmParams& p, int m) {
    const int per_img = p.OH * p.OW;
    const int rem = m % per_img;
    const int oh = rem / p.OW, ow = rem - (rem / p.OW) * p.OW;
    uint32_t mask = 0;
#pragma unroll 1
    for (int r = 0; r < p.KH; ++r) {
      const int ih = oh * p.SH - p.PH + r * p.DH;
      if (ih < 0 || ih >= p.H) continue;
#pragma unroll 1
      for (int s = 0; s < p.KW; ++s) {
        const int iw = ow * p.SW - p.PW + s * p.DW;
        if (iw >= 0 && iw < p.W) mask |= 1u << (r * p.KW + s);
      }
    }
    return mask;
  }

  static MIXDQ_HD int weight_sum(const GemmParams& p, int n, uint32_t mask, uint32_t full) {
    if (!CONV || mask == full) return p.wsum[n];
    return border_sum(p, n, mask);
  }

  // The weight sum over the in-bounds taps of a border pixel (the rare path).
  static MIXDQ_HD int border_sum(const GemmParams& p, int n, uint32_t mask) {
    int s = 0;
    const int taps = p.KH * p.KW;
#pragma unroll 1
    for (int i = 0; i < taps; ++i)
      if (mask >> i & 1u) s += p.tap_sum[static_cast<size_t>(n) * taps + i];
    return s;
  }

  static MIXDQ_HD OutT finish(const GemmParams& p, int v, int n) {
    return dequant_value<OutT, Arch>(v, p.x_scale, p.wscale[n],
                                     p.bias != nullptr ? p.bias + n : nullptr);
  }

  // Accumulator layout of mma.m16n8k32 (lane = 4g + t): c0, c1 at (row g, cols 2t, 2t+1),
  // c2, c3 at (row g + 8, same cols).
  static MIXDQ_HD void epilogue(const GemmParams& p, int (&acc)[MI][NI][4], int lane, int wm0,
                                int wn0) {
    const int g = lane >> 2, t = lane & 3;
    const uint32_t full = CONV ? (p.KH * p.KW >= 32 ? 0xFFFFFFFFu
                                                     : (1u << (p.KH * p.KW)) - 1u)
                               : 0u;
    OutT* out = static_cast<OutT*>(p.out);
#pragma unroll
    for (int mi = 0; mi < MI; ++mi) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int m = wm0 + mi * 16 + g + 8 * h;
        if (m >= p.M) continue;
        const uint32_t mask = CONV ? valid_taps(p, m) : 0u;
        OutT* row = out + static_cast<size_t>(m) * p.ldo;
#pragma unroll
        for (int ni = 0; ni < NI; ++ni) {
          const int n = wn0 + ni * 8 + 2 * t;
          if (n >= p.N) continue;
          const OutT y0 = finish(p, acc[mi][ni][2 * h] - p.zp * weight_sum(p, n, mask, full), n);
          if (n + 1 < p.N) {
            const OutT y1 =
                finish(p, acc[mi][ni][2 * h + 1] - p.zp * weight_sum(p, n + 1, mask, full), n + 1);
            Arch::template store2<OutT>(row + n, y0, y1, (p.ldo & 1) == 0);
          } else {
            Arch::template store1<OutT>(row + n, y0);
          }
        }
      }
    }
  }
};

}  // namespace mixdq
