"""The placement report: markdown and json per node and per model, and a plot of predicted time per
layer (CPU only vs hybrid). All NPU times in it are projections of the cost model."""
from __future__ import annotations

import json
import re
from pathlib import Path

from npu_ep.partition import cost, profiles
from npu_ep.partition.planner import MARGIN, Plan

LABEL = "projected by the cost model"


def flips(placement, plan: Plan, calibration) -> list[str]:
    """The device figures that, made 2x worse one at a time, would change this node's place."""
    c = placement.candidate
    if placement.kernel is None or c.unsupported:
        return []
    from npu_ep import kernels

    design = kernels.design(placement.kernel)
    changed = []
    for figure in profiles.FIGURES:
        worse = cost.estimate(c.work, design, profiles.worse(plan.profile, figure), calibration)
        if (worse.npu_ms < MARGIN * worse.cpu_ms) != (placement.device == "npu"):
            changed.append(figure)
    return changed


def _row(placement, plan: Plan, calibration) -> dict:
    c, e, work = placement.candidate, placement.estimate, placement.candidate.work
    shape = " + ".join(f"{g.batch}x " * (g.batch > 1) + f"{g.M} x {g.K} x {g.N}" for g in work.gemms) or \
        f"softmax of {work.softmax:,}"
    row = {"name": c.name, "form": c.form.name, "shape": shape, "gemms": [vars(g) for g in work.gemms],
           "flops": work.flops, "bytes_in": work.to_device, "bytes_out": work.from_device,
           "decision": placement.device, "reason": placement.reason,
           "kernel": placement.kernel if placement.device == "npu" else None, "cpu_ms": round(e.cpu_ms, 4),
           "flips_if_2x_worse": flips(placement, plan, calibration)}
    if e.npu_ms != float("inf"):
        row.update(npu_ms=round(e.npu_ms, 4), npu_dispatch_ms=round(e.dispatch_ms, 4),
                   npu_transfer_ms=round(e.transfer_ms, 4), npu_compute_ms=round(e.compute_ms, 4),
                   npu_host_ms=round(e.host_ms, 4))
    return row


def as_json(plans: list[Plan], calibration) -> dict:
    return {
        "label": f"NPU times are {LABEL}; CPU times come from this machine's calibration",
        "calibration": calibration.__dict__,
        "models": [{
            "model": plan.model_name, "device": plan.profile.name, "device_label": plan.profile.label,
            "offloaded": len(plan.offloaded), "candidates": len(plan.placements),
            "predicted_cpu_ms": round(plan.cpu_ms, 3), "predicted_hybrid_ms": round(plan.hybrid_ms, 3),
            "cold_first_run_ms": plan.profile.cold_run_ms if plan.offloaded else 0.0,
            "nodes": [_row(p, plan, calibration) for p in plan.placements],
            "alternatives": [_row(p, plan, calibration) for p in plan.alternatives],
        } for plan in plans],
    }


def markdown(plans: list[Plan], calibration) -> str:
    lines = ["# NPU placement report", "",
             f"NPU times are **{LABEL}** (device profile, not measured on an NPU); CPU times are predicted "
             f"from this machine's calibration ({calibration.cpu_gflops:.0f} GFLOP/s float32 MatMul, "
             f"{calibration.cpu_int8_gops:.0f} GOP/s int8). NPU time = dispatch + transfers + compute + host work "
             "of the provider, on a warm device (the provider warms it up when a session opens). The last column "
             "names each device figure that, made 2x worse alone, would move the node.", ""]
    for plan in plans:
        lines += [f"## {plan.model_name} on {plan.profile.label}", "",
                  f"{len(plan.offloaded)} of {len(plan.placements)} GEMM nodes offloaded; predicted GEMM time "
                  f"{plan.cpu_ms:.2f} ms CPU only -> {plan.hybrid_ms:.2f} ms partitioned."]
        if plan.offloaded:
            lines.append(f"A cold device (idle for seconds, clock at its lowest level) adds {plan.profile.cold_run_ms:.0f} ms "
                         f"to the first run, and reaches full speed in {plan.profile.clock_ramp_s:.1f} s.")
        lines += ["", "| node | form: [batch x] M x K x N | MFLOP | KB to / from device | CPU ms | NPU ms (disp + xfer + comp + host) | place | reason "
                  "| 2x worse moves it |", "|---|---|---:|---:|---:|---|---|---|---|"]
        for p in plan.placements:
            r = _row(p, plan, calibration)
            npu = (f"{r['npu_ms']:.3f} ({r['npu_dispatch_ms']:.2f} + {r['npu_transfer_ms']:.2f} + "
                   f"{r['npu_compute_ms']:.2f} + {r['npu_host_ms']:.2f})") if "npu_ms" in r else "-"
            cpu = f"{r['cpu_ms']:.3f}"
            lines.append(f"| {r['name']} | {r['form']}: {r['shape']} | {r['flops'] / 1e6:.1f} | "
                         f"{r['bytes_in'] / 1024:.0f} / {r['bytes_out'] / 1024:.0f} | {cpu} | {npu} | "
                         f"{r['decision'].upper()} | {r['reason']} | {_moves(r)} |")
        lines.append("")
    return "\n".join(lines)


def _moves(row: dict) -> str:
    if row["flips_if_2x_worse"]:
        return ", ".join(row["flips_if_2x_worse"])
    return "none" if "npu_ms" in row else "-"


def _layer(name: str) -> str:
    match = re.search(r"layers\.(\d+)", name)
    return f"layer {match.group(1)}" if match else "other"


def plot(plans: list[Plan], path: Path) -> None:
    """Bars per layer: predicted GEMM time CPU only vs hybrid, one panel per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(plans), 1, figsize=(9, 3.2 * len(plans)), squeeze=False)
    for axis, plan in zip(axes[:, 0], plans):
        layers: dict[str, list[float]] = {}
        for p in plan.placements:
            if p.estimate is not None:
                cpu_hybrid = layers.setdefault(_layer(p.candidate.name), [0.0, 0.0])
                cpu_hybrid[0] += p.estimate.cpu_ms
                cpu_hybrid[1] += p.chosen_ms
        names = sorted(layers, key=lambda n: (n == "other", int(n.split()[-1]) if n != "other" else 0))
        xs = range(len(names))
        axis.bar([x - 0.2 for x in xs], [layers[n][0] for n in names], width=0.4, label="CPU only")
        axis.bar([x + 0.2 for x in xs], [layers[n][1] for n in names], width=0.4, label="hybrid (CPU + NPU)")
        axis.set_xticks(list(xs), names)
        axis.set_ylabel("ms (projected)")
        axis.set_title(f"{plan.model_name} on {plan.profile.label}: {plan.cpu_ms:.1f} -> {plan.hybrid_ms:.1f} ms")
        axis.legend()
    figure.suptitle(f"Predicted GEMM time per layer, {LABEL}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write(plans: list[Plan], calibration, path: Path) -> list[Path]:
    """The report as `path` (markdown) plus .json and .png beside it; returns the files written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown(plans, calibration))
    data = path.with_suffix(".json")
    data.write_text(json.dumps(as_json(plans, calibration), indent=2))
    image = path.with_suffix(".png")
    plot(plans, image)
    return [path, data, image]
