"""Placing each GEMM node on the NPU or the CPU with the cost model, and writing partitioned copies."""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import onnx

from npu_ep.errors import NpuEpError
from npu_ep.partition import cost, graph, profiles, rewrite
from npu_ep import kernels

# 2: no copy for files with nothing offloaded; a .json record per copy; 3: kernels named by design;
# 4: the artifacts to warm up in the summary; 5: op forms (convolutions, attention); 6: encoder layers;
# 7: the encoder layer's vectors laid out for its design's rows phases, blocks only when built (real NPU);
# 8: a block's members that no part covers are priced for the parts
PARTITION_VERSION = 8
# The NPU must win by this share of the CPU time: it absorbs the projection's error, so a node
# never moves for a predicted gain smaller than the model can resolve.
MARGIN = 0.8
PROTO_LIMIT = 1_900_000_000  # bytes of weights past which a model cannot be one protobuf message (2 GB)


@dataclass
class Placement:
    candidate: graph.Candidate
    kernel: str | None
    estimate: cost.Estimate       # npu_ms is infinite when no kernel exists for the form
    device: str          # "npu" or "cpu"
    reason: str

    @property
    def chosen_ms(self) -> float:
        return self.estimate.npu_ms if self.device == "npu" else self.estimate.cpu_ms


@dataclass
class Plan:
    model_name: str
    profile: profiles.DeviceProfile
    placements: list[Placement]
    alternatives: list[Placement] = field(default_factory=list)  # blocks not chosen over their parts

    @property
    def offloaded(self) -> list[Placement]:
        return [p for p in self.placements if p.device == "npu"]

    @property
    def cpu_ms(self) -> float:
        """Predicted time of the GEMM nodes on the CPU alone."""
        return sum(p.estimate.cpu_ms for p in self.placements)

    @property
    def hybrid_ms(self) -> float:
        """Predicted time of the same nodes as partitioned."""
        return sum(p.chosen_ms for p in self.placements)


def _load(model: str | Path | onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    if isinstance(model, onnx.ModelProto):
        return model, model.graph.name or "model"
    path = Path(model)
    if not path.is_file():
        raise NpuEpError(f"{path}: no such ONNX file (export a model first: npu-ep export --model tiny.en)")
    try:
        return onnx.load(str(path)), path.stem
    except Exception as error:
        raise NpuEpError(f"{path}: not a readable ONNX model ({error})") from None


def plan(model: str | Path | onnx.ModelProto, device: str, calibration: cost.Calibration,
         dims: dict[str, int] | None = None, name: str | None = None, forms: set[str] | None = None,
         built: Callable[[kernels.Artifact], bool] | None = None) -> Plan:
    """Decide every candidate's place for `device` (a profile name), priced with `calibration`
    (this machine's: `npu_ep.calibrate.calibration()`); `forms` limits the op forms considered
    (names from npu_ep.forms; by default every form but the opt-in ones, e.g. the int8 layer).
    `built` (a real NPU's session): a block (fused attention, a whole layer) whose artifact it says
    is not built stays unplaced, so its parts go, which may be built; without it every artifact
    counts as buildable (what `npu-ep kernels build` selects, and the emulated device)."""
    proto, default_name = _load(model)
    name = name or default_name
    profile = profiles.profile(device)
    candidates = [c for c in graph.find_candidates(proto)
                  if (not c.form.opt_in if forms is None else c.form.name in forms)]
    graph.resolve_shapes(proto, candidates, dims)
    placements, blocks = [], []
    for c in candidates:
        placed = _place(c, profile, calibration)
        if c.form.block and built is not None and placed.device == "npu" \
                and not built(kernels.placed_artifact(placed.kernel, c)):
            placed.device = "cpu"
            placed.reason = f"kernel {kernels.placed_artifact(placed.kernel, c).identity} not built: its parts go instead"
        (blocks if c.form.block else placements).append(placed)
    alternatives = []
    # Smaller blocks first: a layer is weighed against its attention block as placed, not its parts.
    for block in sorted(blocks, key=lambda b: len(b.candidate.replaced)):
        _choose_block(block, placements, alternatives)
    return Plan(name, profile, placements, alternatives)


def _place(c: graph.Candidate, profile: profiles.DeviceProfile, cal: cost.Calibration) -> Placement:
    kernel = kernels.find(profile.name, c.form.dtype(c), c.form.kernel_kind)
    if c.unsupported and c.form.block:  # a block that cannot run has no work worth pricing
        return Placement(c, kernel and kernel.name, cost.Estimate(math.inf, math.inf, 0.0, 0.0, 0.0, 0.0), "cpu",
                         c.unsupported)
    work = c.work
    if kernel is None:
        estimate = cost.Estimate(cost.cpu_ms(work, cal), math.inf, 0.0, 0.0, 0.0, 0.0)
        return Placement(c, None, estimate, "cpu", f"no {c.form.kernel_kind} kernel for {profile.name}")
    estimate = cost.estimate(work, kernel, profile, cal)
    if c.unsupported:
        return Placement(c, kernel.name, estimate, "cpu", c.unsupported)
    if estimate.npu_ms < MARGIN * estimate.cpu_ms:
        return Placement(c, kernel.name, estimate, "npu", f"NPU predicted {estimate.cpu_ms / estimate.npu_ms:.1f}x faster")
    rows = work.gemms[0].M if work.gemms else 0
    what = "dispatch + transfers dominate" if work.gemms and rows <= 16 else "no predicted gain"
    return Placement(c, kernel.name, estimate, "cpu", f"{what} (M = {rows})" if work.gemms else what)


def _choose_block(block: Placement, placements: list[Placement], alternatives: list[Placement]) -> None:
    """A block (fused attention, an encoder layer) replaces its parts' placements when it is predicted
    faster than they are, as placed; otherwise it is kept as an alternative the report shows. Its
    members that no part covers (norms, GELU, adds) stay on the CPU beside the parts: their CPU time
    (the block's CPU time beyond its parts') counts for the parts."""
    outputs = {n.output[0] for n in block.candidate.replaced}
    parts = [i for i, p in enumerate(placements) if p.candidate.node.output[0] in outputs]
    uncovered_ms = max(0.0, block.estimate.cpu_ms - sum(placements[i].estimate.cpu_ms for i in parts))
    parts_ms = sum(placements[i].chosen_ms for i in parts) + uncovered_ms
    if block.device == "npu" and parts and block.chosen_ms < parts_ms:
        first = parts[0]
        for i in reversed(parts):
            del placements[i]
        placements.insert(first, block)
        return
    if block.device == "npu":
        block.device = "cpu"
        block.reason = f"its parts as placed are predicted faster ({parts_ms:.3f} ms)"
    alternatives.append(block)


def apply(model: str | Path | onnx.ModelProto, chosen_plan: Plan) -> onnx.ModelProto:
    proto, _ = _load(model)
    partitioned = rewrite.rewrite(proto, [(p.candidate, p.kernel) for p in chosen_plan.offloaded])
    summary = {"version": PARTITION_VERSION, "device": chosen_plan.profile.name,
               "offloaded": len(chosen_plan.offloaded), "predicted_cpu_ms": round(chosen_plan.cpu_ms, 3),
               "predicted_hybrid_ms": round(chosen_plan.hybrid_ms, 3),
               # The kernel artifacts the offloaded nodes run: the session warms them up when it opens.
               "artifacts": sorted({kernels.placed_artifact(p.kernel, p.candidate).identity for p in chosen_plan.offloaded})}
    onnx.helper.set_model_props(partitioned, {**{p.key: p.value for p in proto.metadata_props},
                                              "npu_ep.partition": json.dumps(summary)})
    return partitioned


def partition(model: str | Path | onnx.ModelProto, device: str, calibration: cost.Calibration,
              forms: set[str] | None = None) -> onnx.ModelProto:
    """The model with its NPU-worthy nodes rewritten into the provider's custom ops."""
    proto, _ = _load(model)
    return apply(proto, plan(proto, device, calibration, forms=forms))


def partitioned_path(onnx_path: Path, device: str) -> Path:
    return onnx_path.with_name(f"{onnx_path.stem}.{device}.onnx")


def _source_stamp(onnx_path: Path, forms: set[str] | None, real_device: bool, calibration: cost.Calibration) -> str:
    stat = onnx_path.stat()
    chosen = ",".join(sorted(forms)) if forms is not None else "default"
    # A real device's placement depends on which artifacts are built: building one makes it again.
    built = hashlib.sha256(",".join(kernels.built_identities()).encode()).hexdigest()[:16] if real_device else "any"
    # The placement is the cost model's verdict on this machine's CPU figures (they name the machine too):
    # other figures place again.
    rates = hashlib.sha256(json.dumps(asdict(calibration), sort_keys=True).encode()).hexdigest()[:16]
    return f"{stat.st_size}:{stat.st_mtime_ns}:{PARTITION_VERSION}:{rates}:{chosen}:{built}"


def partition_file(onnx_path: str | Path, device: str, calibration: Callable[[], cost.Calibration],
                   force: bool = False, forms: set[str] | None = None,
                   real_device: bool = False) -> tuple[Path, Plan | None]:
    """Write (or reuse, if up to date) the partitioned copy beside `onnx_path`; returns the file to run
    and the plan when one was computed. `calibration` gives the CPU figures the plan is made with (a
    copy made with other figures is made again); `forms`
    as for `plan` (the copy is made again when they change); `real_device`: place for a real NPU,
    blocks only where their artifact is built (made again when the built artifacts change).

    A small record (`<stem>.<device>.json`) holds the source's stamp and the decision, so reuse costs
    no parse of the copy. A file with nothing worth the NPU (the one-token decoders) gets no copy,
    which would repeat all its weights on disk: the file to run is `onnx_path` itself.
    """
    onnx_path = Path(onnx_path)
    target = partitioned_path(onnx_path, device)
    record = target.with_suffix(".json")
    rates = calibration()
    stamp = _source_stamp(onnx_path, forms, real_device, rates)
    if not force and record.exists():
        try:
            known = json.loads(record.read_text())
        except ValueError:
            known = {}  # a damaged record: partition again
        if known.get("source") == stamp and (known.get("offloaded") == 0 or target.exists()):
            return (target if known["offloaded"] else onnx_path), None
    proto, _ = _load(onnx_path)
    chosen = plan(proto, device, rates, name=f"{onnx_path.parent.name}/{onnx_path.stem}", forms=forms,
                  built=(lambda artifact: kernels.built(artifact) is not None) if real_device else None)
    target.unlink(missing_ok=True)
    if chosen.offloaded:
        temporary = target.with_suffix(".tmp")
        partitioned = apply(proto, chosen)
        # Past protobuf's 2 GB (a large-v3-sized encoder) the weights go beside the copy, as the export's do.
        large = sum(len(t.raw_data) for t in partitioned.graph.initializer) > PROTO_LIMIT
        onnx.save(partitioned, str(temporary), save_as_external_data=large, location=f"{target.name}.data")
        temporary.replace(target)
    record.write_text(json.dumps({"source": stamp, "offloaded": len(chosen.offloaded)}))
    return (target if chosen.offloaded else onnx_path), chosen


def offloaded_count(model: onnx.ModelProto) -> int:
    return sum(1 for n in model.graph.node if n.domain == rewrite.DOMAIN and n.op_type.startswith("Npu"))
