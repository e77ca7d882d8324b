"""A whole pre-norm transformer encoder layer as one node (Whisper's encoder layers as transformers
exports them): LayerNorm -> q/k/v -> attention -> out projection -> residual -> LayerNorm -> fc1 ->
GELU -> fc2 -> residual, one device run with every intermediate kept on the device.

The match walks the layer from its first LayerNorm along the exact op sequence of the export and
collects its constants: six weights, their biases (a zero bias where the export has none, as for
Whisper's k), both norms, the scalars that scale q and k, and the shape nodes the reshapes read.
The custom node takes x, the six weights, and two vectors built at rewrite (`vd` [VD_ROWS, D], `vf`
[VF_ROWS, F]: biases, norms, constants; the int8 weights' column scales are filled in on upload).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from npu_ep.forms.base import F32, Candidate, Form, Gemm, GraphIndex, Signature, Work, attributes

# The layer's vectors: vd [VD_ROWS, D] and vf [VF_ROWS, F], one value per column in each row. The
# device reads them in groups, each the parameters of one of its rows phases (VD_GROUPS: first row,
# count), so every group is whole rows in multiples of 4 (a phase's blocks of 1, 2 or 4 rows take a
# group whole) and the rows past the last group are spare (a phase that reads its parameters as rows
# of D plus its trailer reads that far). `*_scale`: the int8 weights' column scales (1 in bf16);
# `*_post`: the factor after the bias (the export's q and k scale, 1 for v); `*_eps`: the norm's epsilon
# in every column. The emulated device and kernels/designs/encoder_layer.py read the same layout.
VD_ROWS, VF_ROWS = 32, 4
VD = {"norm1_gamma": 0, "norm1_beta": 1, "norm1_eps": 2,
      "q_bias": 4, "q_scale": 5, "q_post": 6, "k_bias": 8, "k_scale": 9, "k_post": 10,
      "v_bias": 12, "v_scale": 13, "v_post": 14,
      "o_bias": 16, "o_scale": 17, "norm2_gamma": 18, "norm2_beta": 19, "norm2_eps": 20,
      "fc2_bias": 24, "fc2_scale": 25}
VF = {"fc1_bias": 0, "fc1_scale": 1}
VD_GROUPS = {"norm1": (0, 4), "q": (4, 4), "k": (8, 4), "v": (12, 4), "residual1": (16, 8), "residual2": (24, 4)}
VF_GROUPS = {"gelu": (0, 4)}
# Which vd/vf row holds each weight's int8 column scales.
WEIGHT_SCALES = {"wq": ("vd", "q_scale"), "wk": ("vd", "k_scale"), "wv": ("vd", "v_scale"), "wo": ("vd", "o_scale"),
                 "w1": ("vf", "fc1_scale"), "w2": ("vd", "fc2_scale")}
WEIGHTS = ("q", "k", "v", "o", "fc1", "fc2")
# Configurations of the array in one run of the design (kernels/designs/encoder_layer.py): each of
# its phase programs in turn (the q/k/v GEMMs, and their bias phases, run back to back on one), every
# one a PDI load; int8 adds the quantization of GELU's rows.
CONFIGURATIONS = {"bf16": 11, "i8": 12}
WIDTH_MULTIPLE = 128    # both arrays' GEMM phases take D and F in whole 128s (no padding of a norm's row)
# Host path per call: the bridge copies x in (4 B per element) and y out (4), the provider copies x
# into its buffer (read + write) and the bridge copies every weight (4 B per value) on every call.
_PASS_THROUGH = {"Reshape", "Transpose"}
_SHAPE_OPS = {"Shape", "Gather", "Unsqueeze", "Concat", "Constant"}


@dataclass
class LayerCandidate(Candidate):
    weights: dict[str, str] = field(default_factory=dict)      # q k v o fc1 fc2 -> initializer
    biases: dict[str, str | None] = field(default_factory=dict)
    norms: tuple[str, ...] = ()                                # gamma 1, beta 1, gamma 2, beta 2
    epsilons: tuple[float, float] = (1e-5, 1e-5)
    q_scale: float = 1.0
    k_scale: float = 1.0
    qk_input: str = ""                                         # the scores' queries, for the head count
    ffn: int = 0                                               # F, fc1's output width


class _Walk:
    """Following one path of single-consumer nodes, recording what it passes."""

    def __init__(self, index: GraphIndex) -> None:
        self.index, self.members, self.scale = index, [], 1.0

    def initializer(self, name: str) -> str | None:
        """The initializer `name` is, also through an Identity (the export shares equal initializers
        that way: a random-weight model's zero biases, its unit norms); the Identity joins the layer."""
        if name in self.index.constants:
            return name
        producer = self.index.producers.get(name)
        if producer is not None and producer.op_type == "Identity" and producer.input[0] in self.index.constants:
            self.members.append(producer)
            return producer.input[0]
        return None

    def const(self, node: onnx.NodeProto) -> tuple[np.ndarray | None, str | None]:
        for name in node.input:
            source = self.initializer(name)
            if source is not None:
                return numpy_helper.to_array(self.index.constants[source]), source
            producer = self.index.producers.get(name)
            if producer is not None and producer.op_type == "Constant":
                self.members.append(producer)
                return numpy_helper.to_array(producer.attribute[0].t), None
        return None, None

    def next(self, tensor: str) -> onnx.NodeProto | None:
        return self.index.only_consumer(tensor)

    def through(self, node: onnx.NodeProto, allow_bias: bool) -> tuple[onnx.NodeProto | None, str | None, str]:
        """From a projection MatMul on: its bias Add, scalar Muls and reshapes, up to the next node of
        another kind. Returns (that node, the bias initializer, the tensor that node reads)."""
        bias, tensor = None, node.output[0]
        while True:
            consumer = self.next(tensor)
            if consumer is None:
                return None, bias, tensor
            value, name = self.const(consumer) if consumer.op_type in ("Add", "Mul") else (None, None)
            if consumer.op_type == "Add" and allow_bias and bias is None and name and value.ndim == 1:
                bias = name
            elif consumer.op_type == "Mul" and value is not None and value.size == 1:
                self.scale *= float(value)
            elif consumer.op_type not in _PASS_THROUGH:
                return consumer, bias, tensor
            self.members.append(consumer)
            tensor = consumer.output[0]


def _is(node: onnx.NodeProto | None, op_type: str) -> bool:
    return node is not None and node.op_type == op_type


class EncoderLayerForm(Form):
    """x -> the whole encoder layer -> y, with its six weights and two vectors resident on the device."""
    name = "encoder_layer"
    op_types = ("LayerNormalization",)
    kernel_kind = "encoder_layer"
    block = True
    signatures = (Signature("NpuEncoderLayer", (F32,) * 9, int_attrs=("heads",)),)

    def match(self, node, index):
        found = self._walk(node, index)
        if found is None:
            return None
        candidate, members = found
        # The shape arithmetic the reshapes read (Shape of a norm's output ...) goes with the layer.
        taken = {id(n) for n in members}
        frontier = [name for n in members if n.op_type == "Reshape" for name in n.input[1:]]
        while frontier:
            producer = index.producers.get(frontier.pop())
            if producer is None or id(producer) in taken or producer.op_type not in _SHAPE_OPS:
                continue
            members.append(producer)
            taken.add(id(producer))
            frontier.extend(producer.input)
        inside = {out for n in members for out in n.output}
        y = candidate.node.output[0]
        for n in members:  # nothing outside may read what the layer no longer computes
            for out in n.output:
                if out != y and (out in index.outputs or any(id(c) not in taken for c in index.consumers.get(out, []))):
                    return None
        if any(name not in inside and name not in index.constants and name != candidate.inputs[0]
               for n in members for name in n.input if name):
            return None
        candidate.members = tuple(members)
        return candidate

    def _walk(self, ln1: onnx.NodeProto, index: GraphIndex):
        walk = _Walk(index)
        x, h = ln1.input[0], ln1.output[0]
        projections = [c for c in index.consumers.get(h, []) if c.op_type == "MatMul" and c.input[1] in index.constants]
        if len(projections) != 3 or len(ln1.input) < 3:
            return None
        ends = {}
        for mm in projections:
            walk.scale = 1.0
            end, bias, tensor = walk.through(mm, allow_bias=True)
            ends[mm.output[0]] = (end, bias, tensor, walk.scale, mm)
        walk.scale = 1.0
        qk = next((e for e, *_ in ends.values() if _is(e, "MatMul") and _is(walk.next(e.output[0]), "Softmax")), None)
        if qk is None:
            return None
        softmax = walk.next(qk.output[0])
        av = walk.next(softmax.output[0])
        if not _is(av, "MatMul") or attributes(softmax).get("axis", -1) != -1:
            return None
        roles = {}
        for end, bias, tensor, scale, mm in ends.values():
            role = "q" if (end is qk and qk.input[0] == tensor) else "k" if (end is qk and qk.input[1] == tensor) \
                else "v" if (end is av and av.input[1] == tensor) else None
            if role is None or role in roles:
                return None
            roles[role] = (mm, bias, scale)
        out_mm, bias_o, tensor = walk.through(av, allow_bias=False)
        if not _is(out_mm, "MatMul") or out_mm.input[0] != tensor or out_mm.input[1] not in index.constants:
            return None
        residual1, bias_o, _ = walk.through(out_mm, allow_bias=True)
        if not _is(residual1, "Add") or x not in residual1.input:
            return None
        x1 = residual1.output[0]
        x1_users = index.consumers.get(x1, [])
        ln2 = next((c for c in x1_users if c.op_type == "LayerNormalization"), None)
        if ln2 is None or len(x1_users) != 2 or len(ln2.input) < 3:
            return None
        fc1 = walk.next(ln2.output[0])
        if not _is(fc1, "MatMul") or fc1.input[1] not in index.constants:
            return None
        _, bias_1, tensor = walk.through(fc1, allow_bias=True)
        gelu = self._gelu(tensor, walk)
        fc2 = walk.next(gelu.output[0]) if gelu is not None else None
        if not _is(fc2, "MatMul") or fc2.input[1] not in index.constants:
            return None
        residual2, bias_2, _ = walk.through(fc2, allow_bias=True)
        if not _is(residual2, "Add") or x1 not in residual2.input or residual2 not in x1_users:
            return None
        if walk.scale != 1.0:  # a scale after fc1 or fc2 is not a layer this form knows
            return None
        weights = {"q": roles["q"][0].input[1], "k": roles["k"][0].input[1], "v": roles["v"][0].input[1],
                   "o": out_mm.input[1], "fc1": fc1.input[1], "fc2": fc2.input[1]}
        biases = {"q": roles["q"][1], "k": roles["k"][1], "v": roles["v"][1], "o": bias_o, "fc1": bias_1, "fc2": bias_2}
        norms = tuple(walk.initializer(name) for name in (ln1.input[1], ln1.input[2], ln2.input[1], ln2.input[2]))
        if None in norms:
            return None
        members = [ln1, *projections, qk, softmax, av, out_mm, residual1, ln2, fc1, fc2, residual2, *walk.members]
        candidate = LayerCandidate(
            self, residual2, [x, *weights.values()], weight=weights["q"], weight_dims=tuple(index.constants[weights["q"]].dims),
            weights=weights, biases=biases, norms=norms,
            epsilons=(attributes(ln1).get("epsilon", 1e-5), attributes(ln2).get("epsilon", 1e-5)),
            q_scale=roles["q"][2], k_scale=roles["k"][2], qk_input=qk.input[0],
            ffn=int(index.constants[fc1.input[1]].dims[-1]))
        if any(index.constants[w].data_type != TensorProto.FLOAT or len(index.constants[w].dims) != 2
               for w in weights.values()):
            candidate.unsupported = "encoder layer weights are not 2-D float32"
        return candidate, list({id(n): n for n in members}.values())

    @staticmethod
    def _gelu(tensor: str, walk: _Walk) -> onnx.NodeProto | None:
        """x * (erf(x / sqrt 2) + 1) * 0.5 of `tensor`, as transformers exports the exact GELU; its last node."""
        users = walk.index.consumers.get(tensor, [])
        div = next((u for u in users if u.op_type == "Div"), None)
        if div is None:
            return None
        erf = walk.next(div.output[0])
        add = walk.next(erf.output[0]) if _is(erf, "Erf") else None
        mul = walk.next(add.output[0]) if _is(add, "Add") else None
        half = walk.next(mul.output[0]) if _is(mul, "Mul") else None
        if not _is(half, "Mul") or len(users) != 2 or mul not in users or div.input[0] != tensor:
            return None
        constants = [walk.const(n)[0] for n in (div, add, half)]
        if any(c is None or c.size != 1 for c in constants) or not np.allclose(
                [float(c) for c in constants], [np.sqrt(2), 1.0, 0.5], rtol=1e-6):
            return None
        walk.members += [div, erf, add, mul, half]
        return half

    def shaped(self, candidate):
        return [candidate.inputs[0], candidate.qk_input]

    def check_shapes(self, candidate):
        x, q = (candidate.shapes[n] for n in self.shaped(candidate))
        D, F = candidate.weight_dims[0], candidate.ffn
        if len(x) != 3 or x[0] != 1 or x[2] != D or len(q) != 4:
            return "encoder layer input is not [1, S, D] or its queries not [1, H, S, D/H]"
        if D % WIDTH_MULTIPLE or F % WIDTH_MULTIPLE:
            return f"encoder layer widths {D}, {F} are not multiples of {WIDTH_MULTIPLE}"
        if (D // q[1]) % 16:
            return f"encoder layer head width {D // q[1]} is not a multiple of 16"
        return "" if candidate.types.get(candidate.inputs[0]) == TensorProto.FLOAT else "encoder layer is not float32"

    def dims(self, candidate) -> tuple[int, int, int, int]:
        """(S, D, F, H)."""
        _, S, D = candidate.shapes[candidate.inputs[0]]
        return S, D, candidate.ffn, candidate.shapes[candidate.qk_input][1]

    def work(self, candidate):
        S, D, F, H = self.dims(candidate)
        int8 = self.dtype(candidate) == "i8"
        dh = D // H
        gemms = (Gemm(1, S, D, D, int8),) * 4 + (Gemm(1, S, D, F, int8), Gemm(1, S, F, D, int8),
                                                  Gemm(H, S, dh, S, False), Gemm(H, S, S, dh, False))
        weights = 4 * D * D + 2 * D * F
        size = 1 if int8 else 2
        # The design's schedule (kernels/designs/encoder_layer.py): every intermediate goes through the
        # scratch in device memory, written once and read once: the norms', the attention's and GELU's
        # outputs in the GEMMs' operand type, the GEMMs' results, q/k/v (bf16) and the attention (f32)
        # and x1 in 4-byte values.
        # int8 keeps GELU's output in f32 until its rows are quantized.
        scratch = 2 * S * (D * (34 + 3 * size) + F * (4 + size + (4 if int8 else 0)))
        # Its rows phases on the vector units: the first norm, the bias of q, k and v, the attention's
        # rounding, the first residual with the second norm, bias + GELU, the second residual (int8
        # quantizes rows in the same passes, and GELU's in one more).
        vector = S * (7 * D + F + (F if int8 else 0))
        return Work(gemms, int8, (S, D, F, H, S), to_device=4 * S * D, from_device=4 * S * D,
                    host_bytes=4 * S * D * 4 + 4 * weights, weight_bytes=4 * weights,
                    resident_bytes=size * weights + scratch, softmax=H * S * S, vector=vector,
                    reconfigurations=CONFIGURATIONS[self.dtype(candidate)])

    def rewrite(self, candidate, kernel, key, graph):
        constants = {i.name: i for i in graph.initializer}
        array = lambda name: numpy_helper.to_array(constants[name]).astype(np.float32)  # noqa: E731
        D = candidate.weight_dims[0]
        F = candidate.ffn
        vd = np.zeros((VD_ROWS, D), np.float32)
        vf = np.zeros((VF_ROWS, F), np.float32)
        biases = {"q": "q_bias", "k": "k_bias", "v": "v_bias", "o": "o_bias", "fc2": "fc2_bias"}
        for role, row in biases.items():
            if candidate.biases[role]:
                vd[VD[row]] = array(candidate.biases[role])
        for name, row in zip(candidate.norms, ("norm1_gamma", "norm1_beta", "norm2_gamma", "norm2_beta")):
            vd[VD[row]] = array(name)
        for row in ("q_scale", "k_scale", "v_scale", "o_scale", "fc2_scale", "v_post"):
            vd[VD[row]] = 1
        vd[VD["q_post"]], vd[VD["k_post"]] = candidate.q_scale, candidate.k_scale
        vd[VD["norm1_eps"]], vd[VD["norm2_eps"]] = candidate.epsilons
        if candidate.biases["fc1"]:
            vf[VF["fc1_bias"]] = array(candidate.biases["fc1"])
        vf[VF["fc1_scale"]] = 1
        names = [f"{candidate.name}/npu_vd", f"{candidate.name}/npu_vf"]
        graph.initializer.extend([numpy_helper.from_array(vd, names[0]), numpy_helper.from_array(vf, names[1])])
        H = self.dims(candidate)[3]
        return self._node(candidate, "NpuEncoderLayer", [*candidate.inputs, *names], kernel, key, heads=H)

    def npu(self, backend, key, kernel, cpu, x, wq, wk, wv, wo, w1, w2, vd, vf, heads):
        _, S, D = x.shape

        def resident(dtype: str) -> dict[str, np.ndarray]:
            weights = {"wq": wq, "wk": wk, "wv": wv, "wo": wo, "w1": w1, "w2": w2}
            if dtype != "i8":
                return {**weights, "vd": vd, "vf": vf}
            vd_, vf_ = vd.copy(), vf.copy()
            vectors = {"vd": vd_, "vf": vf_}
            out = {}
            for name, w in weights.items():
                out[name], scale = quantize_columns(w)
                buffer, row = WEIGHT_SCALES[name]
                vectors[buffer][(VD if buffer == "vd" else VF)[row]] = scale
            return {**out, "vd": vd_, "vf": vf_}

        w_id = backend.fingerprint(wq) + backend.fingerprint(w2) + backend.fingerprint(vd)
        y = backend.run_resident(key, kernel, (S, D, w1.shape[1], heads, S), {"x": x[0]}, resident, w_id, cpu)
        return y.reshape(1, S, D)

    def cpu(self, run, x, wq, wk, wv, wo, w1, w2, vd, vf, heads):
        """The layer through ONNX Runtime's own kernels, op by op as the graph has it."""
        _, S, D = x.shape
        q_scale, k_scale = float(vd[VD["q_post"], 0]), float(vd[VD["k_post"], 0])
        eps1, eps2 = float(vd[VD["norm1_eps"], 0]), float(vd[VD["norm2_eps"], 0])
        g1, b1, g2, b2 = (vd[VD[row]] for row in ("norm1_gamma", "norm1_beta", "norm2_gamma", "norm2_beta"))
        bias = {role: vd[VD[f"{role}_bias"]] for role in ("q", "k", "v", "o", "fc2")}

        def heads_of(t: np.ndarray) -> np.ndarray:
            return run("Transpose", [run("Reshape", [t, np.array([1, S, heads, D // heads], np.int64)])], perm=[0, 2, 1, 3])

        h = run("LayerNormalization", [x, g1, b1], epsilon=eps1, axis=-1)
        q = run("Mul", [run("Add", [run("MatMul", [h, wq]), bias["q"]]), np.array(q_scale, np.float32)])
        k = run("Mul", [run("Add", [run("MatMul", [h, wk]), bias["k"]]), np.array(k_scale, np.float32)])
        v = run("Add", [run("MatMul", [h, wv]), bias["v"]])
        kt = run("Transpose", [heads_of(k)], perm=[0, 1, 3, 2])
        p = run("Softmax", [run("MatMul", [heads_of(q), kt])], axis=-1)
        a = run("Reshape", [run("Transpose", [run("MatMul", [p, heads_of(v)])], perm=[0, 2, 1, 3]),
                            np.array([1, S, D], np.int64)])
        x1 = run("Add", [x, run("Add", [run("MatMul", [a, wo]), bias["o"]])])
        f = run("Add", [run("MatMul", [run("LayerNormalization", [x1, g2, b2], epsilon=eps2, axis=-1), w1]), vf[VF["fc1_bias"]]])
        gelu = run("Mul", [run("Mul", [f, run("Add", [run("Erf", [run("Div", [f, np.array(np.sqrt(2), np.float32)])]),
                                                       np.array(1, np.float32)])]), np.array(0.5, np.float32)])
        return run("Add", [x1, run("Add", [run("MatMul", [gelu, w2]), bias["fc2"]])])


class EncoderLayerInt8Form(EncoderLayerForm):
    """The same layer on the int8 design: weights int8 per column, activations int8 per row on the
    device. Not chosen unless asked for (`opt_in`): it computes in another number format than the
    float model, so its accuracy is the caller's decision."""
    name = "encoder_layer_int8"
    opt_in = True
    signatures = (Signature("NpuEncoderLayerInt8", (F32,) * 9, int_attrs=("heads",)),)

    def dtype(self, candidate):
        return "i8"

    def rewrite(self, candidate, kernel, key, graph):
        node = super().rewrite(candidate, kernel, key, graph)
        node.op_type = "NpuEncoderLayerInt8"
        return node


def quantize_columns(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output column of a [K, N] weight: (int8 weight, N scales)."""
    scale = np.abs(w).max(axis=0) / np.float32(127)
    scale[scale == 0] = 1
    return np.clip(np.rint(w / scale), -127, 127).astype(np.int8), scale.astype(np.float32)
