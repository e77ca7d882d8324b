"""Our NPU kernel designs, one module per kernel kind, written with mlir-aie's IRON Python API.

Each module splits in two. `plan(artifact)` is plain Python, importable anywhere: the tiling of the
artifact's padded shape over the core array, the memory each tile uses (with its arithmetic) and the
design's constraints, asserted with reasons against the AIE-ML limits in `limits`. `program(artifact)`
builds the IRON program (it imports mlir-aie's `aie` package only when called) and returns the MLIR
module that `aiecc` compiles into the artifact's xclbin and instruction sequence.
None of these programs was ever compiled or run on the machines this project was developed on.
"""
from __future__ import annotations

from . import attention, encoder_layer, gemm, softmax

# Kernel kind (kernels/manifest.json "kinds") -> the module holding its design.
DESIGNS = {"gemm": gemm, "batched_gemm": gemm, "softmax": softmax, "attention": attention,
           "encoder_layer": encoder_layer}


def plan(artifact):
    """The artifact's tiling and memory budget (raises DesignError when it cannot be built)."""
    return DESIGNS[artifact.design.kind].plan(artifact)


def program(artifact):
    """The artifact's IRON program as an MLIR module (needs mlir-aie)."""
    return DESIGNS[artifact.design.kind].program(artifact)
