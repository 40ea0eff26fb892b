#!/usr/bin/env python
"""Compile the Triton kernels for Hopper (sm_90) without a GPU and check the generated PTX.

    python scripts/triton_sm90_check.py [--arch 90]

For every GEMM variant (linear / 3x3 conv, int8 / packed-int4 weights, int8 / fused-quantize
float input), compiled as a real launch specialises it (unit strides, 16-divisible sizes and
pointers), the PTX must contain the int8 tensor-core instruction (``wgmma ... s32.s8.s8`` on
sm_90, ``mma.sync ... s8`` before), ``cp.async`` pipelining, IEEE division (``div.rn.f32``)
exactly where the input is quantized in the prologue, and no FMA (``enable_fp_fusion=False``
keeps the epilogue's two roundings); the same kernel compiled with FMA fusion on must contain an
FMA, which shows the check can fail. Prints one line per variant; exit status 1 on a failed
check, 2 when this Triton cannot compile ahead of time here.
"""

import argparse
import os
import re
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90)
    args = parser.parse_args()
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("triton_sm90_check: unset TRITON_INTERPRET (the kernels must be compiled)",
              file=sys.stderr)
        return 2
    try:
        import triton
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
    except ImportError as e:
        print(f"triton_sm90_check: triton unavailable: {e}", file=sys.stderr)
        return 2
    from quant.kernels import triton_ops

    fn = triton_ops._gemm_kernel
    names = fn.arg_names
    mma = r"wgmma\.mma_async\S*\.s32\.s8\.s8" if args.arch >= 90 else r"mma\.sync\S*\.s32\.s8\.s8"

    def compile_variant(a_float, int4, conv, fp_fusion=False):
        const = {"KH": 3 if conv else 1, "KW": 3 if conv else 1, "CONV": conv, "W_INT4": int4,
                 "A_FLOAT": a_float, "HAS_BIAS": True, "OUT_INT32": False, "BM": 128,
                 "BN": 128, "BK": 128, "GROUP_M": 8, ("sxc" if conv else "sxk"): 1}
        types = {"x_ptr": "*fp16" if a_float else "*i8", "w_ptr": "*u8" if int4 else "*i8",
                 "wsum_ptr": "*i32", "tap_ptr": "*i32", "ws_ptr": "*fp32", "bias_ptr": "*fp32",
                 "out_ptr": "*fp16", "x_scale": "fp32"}
        sig = {n: "constexpr" if n in const else types.get(n, "i32") for n in names}
        div16 = ["x_ptr", "w_ptr", "wsum_ptr", "tap_ptr", "ws_ptr", "bias_ptr", "out_ptr", "N",
                 "K", "KX", "swn", "som"] + (["CW", "CX", "sxb", "sxh", "sxw"] if conv else
                                             ["sxm"])
        src = ASTSource(fn=fn, signature=sig,
                        constexprs={(names.index(k),): v for k, v in const.items()},
                        attrs={(names.index(n),): [["tt.divisibility", 16]] for n in div16})
        kernel = triton.compile(src, target=GPUTarget("cuda", args.arch, 32),
                                options={"num_warps": 8, "num_stages": 3,
                                         "enable_fp_fusion": fp_fusion})
        return kernel.asm["ptx"]

    ok = True
    try:
        variants = [(a, w, c) for c in (False, True) for w in (False, True) for a in (False, True)]
        for a_float, int4, conv in variants:
            ptx = compile_variant(a_float, int4, conv)
            counts = {"mma": len(re.findall(mma, ptx)), "cp.async": ptx.count("cp.async"),
                      "div.rn.f32": ptx.count("div.rn.f32"), "div.full": ptx.count("div.full"),
                      "fma": len(re.findall(r"\bfma\.\S*f32", ptx))}
            good = (counts["mma"] > 0 and counts["cp.async"] > 0 and counts["fma"] == 0
                    and counts["div.full"] == 0 and (counts["div.rn.f32"] > 0) == a_float)
            ok &= good
            name = (f"{'conv3x3' if conv else 'linear'} {'w4' if int4 else 'w8'} "
                    f"{'fused-quantize' if a_float else 'int8-input'}")
            print(f"{'ok  ' if good else 'FAIL'} sm_{args.arch} {name:<30} {counts}")
        fused = compile_variant(True, False, False, fp_fusion=True)
        contracted = len(re.findall(r"\bfma\.\S*f32", fused))
        print(f"{'ok  ' if contracted else 'FAIL'} with enable_fp_fusion=True the same kernel "
              f"has {contracted} FMAs (the check discriminates)")
        ok &= contracted > 0
    except Exception as e:  # noqa: BLE001 - an API this script does not know: say so
        print(f"triton_sm90_check: cannot compile ahead of time with triton "
              f"{triton.__version__}: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    print("all checks passed" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
