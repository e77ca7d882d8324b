"""What every op form shares: the candidate it makes of a node, the work it gives the device, and
the contract a form fulfils (match, eligibility, shapes, work, rewrite, NPU call, CPU reference).

A form knows ONNX and numpy only. The partition pass (which prices `Work` and decides) and the
provider (which owns the device and ORT's CPU kernels) hand a form what it needs: the provider
passes its Backend and its one-op CPU runner into `npu` and `cpu`, so neither layer imports the other.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable, ClassVar

import numpy as np
import onnx
from onnx import helper, numpy_helper

DOMAIN = "ai.onnx.contrib"
ZERO_INT8 = "npu_ep_zero_int8"  # a shared int8 zero for weight zero points the source graph omits
# Custom-op tensor types, named as numpy names them (the provider maps them to onnxruntime-extensions').
F32, I8, U8, I32 = "float32", "int8", "uint8", "int32"

CpuRunner = Callable[..., np.ndarray]  # run(op_type, inputs, out_type=TensorProto.FLOAT, **attrs)


@dataclass(frozen=True)
class Gemm:
    """One (batched) matrix product: batch x ([M, K] @ [K, N]); `int8` None: its Work's type."""
    batch: int
    M: int
    K: int
    N: int
    int8: bool | None = None

    @property
    def flops(self) -> int:
        return 2 * self.batch * self.M * self.K * self.N


@dataclass(frozen=True)
class Work:
    """What one call of an offloaded node asks of the device and of the host.

    `to_device`/`from_device` count the activation bytes synced each way per call (resident weights
    excluded); `host_bytes` the bytes the provider's host path touches (bridge copies, packing,
    layout changes); `softmax` the elements exponentiated and normalised, on whichever side runs it.
    Every kind's device work grows with the product of its dims, which is how padding is priced.
    """
    gemms: tuple[Gemm, ...]
    int8: bool
    dims: tuple[int, ...]   # the problem in the kernel kind's dims (gemm: M, K, N; attention: B, S, T, D)
    to_device: int
    from_device: int
    host_bytes: int
    weight_bytes: int = 0   # of a constant weight, streamed by the CPU's GEMM
    resident_bytes: int = 0  # of the weight as the device holds it, read by the run's DMAs each call
    softmax: int = 0
    dispatches: int = 1
    vector: int = 0            # other elements the device's vector units compute (norms, GELU, residuals)
    reconfigurations: int = 0  # array reconfigurations inside the run (a fused layer's phases)

    @property
    def flops(self) -> int:
        return sum(g.flops for g in self.gemms)


@dataclass
class Candidate:
    """A node (or a block of nodes) one form could turn into one custom node."""
    form: "Form"
    node: onnx.NodeProto                    # the node whose outputs the custom node produces
    inputs: list[str]                       # the custom node's inputs, in its op's order
    weight: str | None = None               # a constant weight, resident on the device
    weight_dims: tuple[int, ...] = ()
    members: tuple[onnx.NodeProto, ...] = ()  # every node replaced (node included); () is (node,)
    unsupported: str = ""                   # why no NPU kernel can take it, if none can
    shapes: dict[str, list[int]] = field(default_factory=dict)   # shapes of `form.shaped(self)`
    types: dict[str, int] = field(default_factory=dict)          # their ONNX element types

    @property
    def name(self) -> str:
        return self.node.name or self.node.output[0]

    @property
    def replaced(self) -> tuple[onnx.NodeProto, ...]:
        return self.members or (self.node,)

    @property
    def work(self) -> Work:
        return self.form.work(self)

    @property
    def gemm(self) -> Gemm:
        return self.work.gemms[0]


class GraphIndex:
    """Lookups a form's `match` needs: constants, producers and consumers of each tensor."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.constants = {i.name: i for i in graph.initializer}
        self.producers = {out: node for node in graph.node for out in node.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.outputs = {o.name for o in graph.output}

    def only_consumer(self, tensor: str) -> onnx.NodeProto | None:
        users = self.consumers.get(tensor, [])
        return users[0] if len(users) == 1 and tensor not in self.outputs else None

    def scalar(self, name: str | None) -> np.ndarray | None:
        return numpy_helper.to_array(self.constants[name]) if name and name in self.constants else None


def attributes(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def float_2d(weight: onnx.TensorProto) -> str:
    return "" if weight.data_type == onnx.TensorProto.FLOAT and len(weight.dims) == 2 else \
        "weight is not a 2-D float32 tensor"


def rows(shape: list[int]) -> int:
    return int(np.prod(shape[:-1])) if len(shape) > 1 else 1


def weight_digest(candidate: Candidate, constants: dict[str, onnx.TensorProto]) -> str:
    """Node name + digest of its weight (or of its name, for weightless forms): stable across runs,
    distinct across models."""
    payload = numpy_helper.to_array(constants[candidate.weight]).tobytes() if candidate.weight else \
        candidate.name.encode()
    return f"{candidate.name}#{hashlib.sha1(payload).hexdigest()[:12]}"


def zero_int8(graph: onnx.GraphProto) -> str:
    if not any(i.name == ZERO_INT8 for i in graph.initializer):
        graph.initializer.append(numpy_helper.from_array(np.array(0, dtype=np.int8), ZERO_INT8))
    return ZERO_INT8


@dataclass(frozen=True)
class Signature:
    """One custom op a form registers: its type, input and output tensor types, int attributes."""
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...] = (F32,)
    int_attrs: tuple[str, ...] = ()


class Form:
    """One way a node (or block) becomes an offloaded custom node. Subclasses set the class
    attributes and implement the methods; `FORMS` in npu_ep.forms lists them in match order."""

    name: ClassVar[str]             # short, stable: used in reports and placement records
    op_types: ClassVar[tuple[str, ...]]   # source op types `match` looks at
    kernel_kind: ClassVar[str]      # the manifest's kernel kind it runs on
    signatures: ClassVar[tuple[Signature, ...]]
    block: ClassVar[bool] = False   # matches a block whose parts other forms also match
    opt_in: ClassVar[bool] = False  # placed only when the caller names it among the forms

    def match(self, node: onnx.NodeProto, index: GraphIndex) -> Candidate | None:
        raise NotImplementedError

    def shaped(self, candidate: Candidate) -> list[str]:
        """Tensors whose real-use shapes `work` needs (activations; weights come from the graph)."""
        return [candidate.inputs[0]]

    def check_shapes(self, candidate: Candidate) -> str:
        """A reason no kernel takes it once shapes and types are known ("" if one can)."""
        return ""

    def dtype(self, candidate: Candidate) -> str:
        return "bf16"

    def work(self, candidate: Candidate) -> Work:
        raise NotImplementedError

    def rewrite(self, candidate: Candidate, kernel: str, key: str, graph: onnx.GraphProto) -> onnx.NodeProto:
        raise NotImplementedError

    def npu(self, backend, key: str, kernel: str, cpu: Callable[[], np.ndarray], *inputs: np.ndarray,
            **attrs) -> np.ndarray:
        """The node on the device through the provider's Backend; `cpu` is its CPU result on a fault."""
        raise NotImplementedError

    def cpu(self, run: CpuRunner, *inputs: np.ndarray, **attrs) -> np.ndarray:
        """What the replaced nodes compute, through ONNX Runtime's own CPU kernels (`run`)."""
        raise NotImplementedError

    def _node(self, candidate: Candidate, op_type: str, inputs: list[str], kernel: str, key: str,
              **attrs) -> onnx.NodeProto:
        return helper.make_node(op_type, inputs, list(candidate.node.output), name=candidate.name, domain=DOMAIN,
                                node_key=key, kernel=kernel, **attrs)
