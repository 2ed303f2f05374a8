"""Compile the Triton TV-L1 kernels ahead of time for a CUDA architecture, without a GPU; run as a script, it
prints each variant's cubin size as JSON.

Triton's interpreter runs the kernels' arithmetic but never compiles them: a construct that Triton's compiler
or ptxas refuses passes in the interpreter and fails only on the GPU. This builds every variant that
`triton_iteration` launches (measuring or not, with or without `live` flags, in place or not) through Triton's own compiler,
down to a cubin, for the architectures given (90: H100/H200, 80: A100).
"""

from __future__ import annotations

import inspect
import json
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from tsnpipe.stages.flow.triton_tvl1 import BLOCK, _dual_kernel, _primal_kernel

# The keyword that carries the constexpr values: `constexprs` since Triton 3.3, `constants` before.
CONSTANTS = "constexprs" if "constexprs" in inspect.signature(ASTSource).parameters else "constants"
SIZES = ("height", "width", "blocks")  # int32 arguments; the other non-pointer arguments are float32
VARIANTS = ({"MEASURE": False, "HAS_LIVE": False, "SKIP_FROZEN": False},
            {"MEASURE": True, "HAS_LIVE": False, "SKIP_FROZEN": False},
            {"MEASURE": True, "HAS_LIVE": True, "SKIP_FROZEN": False},
            {"MEASURE": True, "HAS_LIVE": True, "SKIP_FROZEN": True})  # `live` implies measuring; in place skips


def signature(kernel) -> dict[str, str]:
    def kind(param) -> str:
        if param.is_constexpr:
            return "constexpr"
        if param.name.endswith("_ptr"):
            return "*fp32"
        return "i32" if param.name in SIZES else "fp32"
    return {param.name: kind(param) for param in kernel.params}


def build(capability: int, blocks: int = 85) -> dict[str, int]:
    """Cubin bytes per kernel variant; `blocks` as at 340x256 (85 blocks of 1024 pixels)."""
    sizes = {}
    for variant in VARIANTS:
        for kernel, constants in ((_primal_kernel, {**variant, "BLOCK": BLOCK}),
                                  (_dual_kernel, {**variant, "BLOCK": BLOCK,
                                                  "BLOCKS": triton.next_power_of_2(blocks)})):
            source = ASTSource(fn=kernel, signature=signature(kernel), **{CONSTANTS: constants})
            compiled = triton.compile(source, target=GPUTarget("cuda", capability, 32))
            name = f"{kernel.__name__.strip('_')}[{','.join(k for k, v in variant.items() if v) or 'plain'}]"
            sizes[f"sm_{capability} {name}"] = len(compiled.asm["cubin"])
    return sizes


if __name__ == "__main__":
    print(json.dumps({key: value for capability in sys.argv[1:] or ["90"] for key, value in build(int(capability)).items()}))
