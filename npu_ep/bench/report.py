"""Bench output: a markdown table, bench.json and bench.png, from the runner's summaries."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from npu_ep.bench.engines import STAGES
from npu_ep.metrics import normalize_text, wer_difference_interval

BASELINE = "faster-whisper-int8"
# Same-run comparisons (ours, theirs, the ratio to reach or None): our fp32 pipeline against faster-whisper's
# float32, and batched long-form decoding against faster-whisper's BatchedInferencePipeline.
TARGETS = (
    ("ours-fp32", "faster-whisper-fp32", None),
    ("ours-int8-batched", "faster-whisper-int8-batched", 1.2),
    ("ours-fp32-batched", "faster-whisper-fp32-batched", 1.2),
)
# The CPU path's targets against faster-whisper int8, same model, beam and run: (name, what is compared, goal).
INT8_PAIR = ("ours-int8", "faster-whisper-int8")
SPEED_TARGET = 1.5  # × faster-whisper's ×realtime, on the whole run and on its longest file
WER_MARGIN_POINTS = 0.5  # our WER at most faster-whisper's + this
RSS_MARGIN_MB = 50.0  # our peak RSS at most faster-whisper's + this
LOAD_TARGET = 1.0  # our model load time at most faster-whisper's × this


def _key(summary: dict[str, Any]) -> tuple[str, int]:
    return summary["model"], summary["beam_size"]


def _speed(results: list[dict[str, Any]], engine: str, key: tuple[str, int]) -> float | None:
    for summary in results:
        if summary["engine"] == engine and _key(summary) == key and summary["status"] == "ok":
            return summary["x_realtime"]
    return None


def _summary(results: list[dict[str, Any]], engine: str, key: tuple[str, int]) -> dict[str, Any] | None:
    return next((s for s in results if s["engine"] == engine and _key(s) == key and s["status"] == "ok"), None)


def _longest_file_speeds(ours: dict[str, Any], theirs: dict[str, Any]) -> tuple[str, float, float] | None:
    """(file, our ×realtime, theirs) on the longest file both transcribed."""
    theirs_files = {entry["file"]: entry for entry in theirs["files"]}
    shared = [entry for entry in ours["files"] if entry["file"] in theirs_files]
    if not shared:
        return None
    longest = max(shared, key=lambda entry: entry["audio_seconds"])
    other = theirs_files[longest["file"]]
    return longest["file"], longest["audio_seconds"] / longest["median_seconds"], other["audio_seconds"] / other["median_seconds"]


def _wer_difference(ours: dict[str, Any], theirs: dict[str, Any], references: dict[str, str]) -> tuple[float, float, float] | None:
    """Our WER minus theirs in points, with its 95 % paired bootstrap interval, over the files both transcribed."""
    theirs_texts = {entry["file"]: entry["text"] for entry in theirs["files"]}
    return wer_difference_interval([(references[entry["file"]], entry["text"], theirs_texts[entry["file"]])
                                    for entry in ours["files"] if entry["file"] in references and entry["file"] in theirs_texts])


def _interval(difference: tuple[float, float, float] | None) -> str:
    return "" if difference is None else f"; 95 % interval of the difference {difference[1]:+.1f} to {difference[2]:+.1f}"


def int8_targets(results: list[dict[str, Any]], references: dict[str, str]) -> list[dict[str, Any]]:
    """Each target of ours-int8 against faster-whisper-int8 (same model and beam), measured and whether it is met."""
    checks = []
    for key in dict.fromkeys(_key(summary) for summary in results):
        ours, theirs = (_summary(results, engine, key) for engine in INT8_PAIR)
        if not (ours and theirs):
            continue

        def check(target: str, value: float, goal: float, met: bool, detail: str, interval: tuple | None = None) -> None:
            checks.append({"model": key[0], "beam_size": key[1], "target": target, "value": value, "goal": goal,
                           "met": met, "detail": detail + _interval(interval), "interval": interval})

        speed = ours["x_realtime"] / theirs["x_realtime"]
        check("speed", speed, SPEED_TARGET, speed >= SPEED_TARGET,
              f"{ours['x_realtime']:.1f}× vs {theirs['x_realtime']:.1f}× realtime")
        longest = _longest_file_speeds(ours, theirs)
        if longest:
            name, mine, other = longest
            check("speed, longest file", mine / other, SPEED_TARGET, mine / other >= SPEED_TARGET,
                  f"{name}: {mine:.1f}× vs {other:.1f}× realtime")
        if ours["wer"] is not None and theirs["wer"] is not None:
            excess = ours["wer"] - theirs["wer"]
            check("WER excess (points)", excess, WER_MARGIN_POINTS, excess <= WER_MARGIN_POINTS,
                  f"{ours['wer']:.1f} % vs {theirs['wer']:.1f} %", _wer_difference(ours, theirs, references))
        if ours["peak_rss_mb"] is not None and theirs["peak_rss_mb"] is not None:
            excess = ours["peak_rss_mb"] - theirs["peak_rss_mb"]
            check("peak RSS excess (MB)", excess, RSS_MARGIN_MB, excess <= RSS_MARGIN_MB,
                  f"{ours['peak_rss_mb']:.0f} MB vs {theirs['peak_rss_mb']:.0f} MB")
        load = ours["load_seconds"] / theirs["load_seconds"]
        check("load time", load, LOAD_TARGET, load <= LOAD_TARGET,
              f"{ours['load_seconds']:.2f} s vs {theirs['load_seconds']:.2f} s")
    return checks


def add_ratios(results: list[dict[str, Any]], references: dict[str, str]) -> list[dict[str, Any]]:
    """Give each measured summary `vs_baseline`, and return the same-run target ratios per model and beam, each
    with the WER difference of the pair (and its interval) where there are references."""
    targets = []
    for summary in results:
        if summary["status"] == "ok":
            baseline = _speed(results, BASELINE, _key(summary))
            summary["vs_baseline"] = summary["x_realtime"] / baseline if baseline else None
    for key in dict.fromkeys(_key(summary) for summary in results):
        for ours_engine, theirs_engine, target in TARGETS:
            ours, theirs = _speed(results, ours_engine, key), _speed(results, theirs_engine, key)
            if ours and theirs:
                mine, other = _summary(results, ours_engine, key), _summary(results, theirs_engine, key)
                difference = _wer_difference(mine, other, references)
                targets.append({"model": key[0], "beam_size": key[1], "ours": ours_engine, "theirs": theirs_engine,
                                "ratio": ours / theirs, "target": target, "met": None if target is None else ours / theirs >= target,
                                "ours_x_realtime": ours, "theirs_x_realtime": theirs,
                                "ours_wer": mine["wer"], "theirs_wer": other["wer"], "wer_difference": difference,
                                "wer_met": None if target is None or difference is None else difference[0] <= WER_MARGIN_POINTS})
    return targets


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "—" if value is None else f"{value:{spec}}{suffix}"


def markdown(report: dict[str, Any]) -> str:
    """The human-readable report: table, target ratio, skipped engines, run conditions, NPU section."""
    settings, machine = report["settings"], report["machine"]
    lines = [
        "| model | engine | beam | × realtime | vs faster-whisper-int8 | WER % | CPU s | peak RSS MB | load s "
        "| features / encoder / decoder s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    notes = []
    for summary in report["results"]:
        if summary["status"] != "ok":
            if summary["beam_size"] == settings["beam_sizes"][0]:
                notes.append(f"- {summary['engine']} on {summary['model']}: {summary['status']}: {summary['note']}")
            continue
        stages = summary["stages"]
        split = " / ".join(f"{stages[s]:.2f}" for s in STAGES) if stages else "—"
        lines.append(
            f"| {summary['model']} | {summary['engine']} | {summary['beam_size']} "
            f"| {_fmt(summary['x_realtime'], '.1f', '×')} | {_fmt(summary.get('vs_baseline'), '.2f', '×')} "
            f"| {_fmt(summary['wer'], '.1f')} | {_fmt(summary['cpu_seconds'], '.2f')} | {_fmt(summary['peak_rss_mb'], '.0f')} "
            f"| {_fmt(summary['load_seconds'], '.2f')} | {split} |"
        )
    if report["target_ratios"]:
        lines.append("")
    for target in report["target_ratios"]:
        verdict = "" if target["target"] is None else (
            f", target ≥ {target['target']:.2f}×: {'met' if target['met'] else 'NOT met'}")
        difference = target.get("wer_difference")
        wer = "" if difference is None else (
            f"; WER {target['ours_wer']:.1f} % vs {target['theirs_wer']:.1f} %, **{difference[0]:+.1f}** points"
            f"{_interval(difference)}"
            + ("" if target["wer_met"] is None else f", target ≤ +{WER_MARGIN_POINTS:g}: {'met' if target['wer_met'] else 'NOT met'}"))
        lines.append(
            f"Same-run ratio {target['ours']} / {target['theirs']} ({target['model']}, beam {target['beam_size']}): "
            f"**{target['ratio']:.2f}×** ({target['ours_x_realtime']:.1f}× vs {target['theirs_x_realtime']:.1f}× "
            f"realtime{verdict}){wer}"
        )
    if report.get("int8_targets"):
        lines += ["", f"Targets, {INT8_PAIR[0]} against {INT8_PAIR[1]} (same run):", "",
                  "| model | beam | target | measured | goal | met | figures |", "|---|---:|---|---:|---|---|---|"]
    for target in report.get("int8_targets", []):
        ratio = target["target"] in ("speed", "speed, longest file", "load time")
        value = f"{target['value']:.2f}×" if ratio else f"{target['value']:+.1f}"
        goal = (("≥ " if target["target"].startswith("speed") else "≤ ") + f"{target['goal']:g}×") if ratio else f"≤ +{target['goal']:g}"
        lines.append(f"| {target['model']} | {target['beam_size']} | {target['target']} | {value} | {goal} "
                     f"| {'yes' if target['met'] else '**no**'} | {target['detail']} |")
    if any(t.get("wer_difference") for t in report["target_ratios"]) or any(t.get("interval") for t in report.get("int8_targets", [])):
        words = sum(len(normalize_text(f["reference"] or "")) for f in report["files"])
        lines += ["", f"95 % interval: paired bootstrap over the reference sentences ({words} words), each drawn again "
                  "with the errors both engines made on it; an interval that spans 0 is a difference these words "
                  "cannot tell from chance."]
    if any(s["engine"].endswith("-batched") for s in report["results"]):
        lines += ["", f"The *-batched engines decode {settings.get('batch_size', 1)} windows per batch: VAD chunks joined up "
                  "to 30 s, text without timestamps (faster-whisper's BatchedInferencePipeline with its defaults; ours "
                  "with the temperature fallback per window, which faster-whisper's batched mode skips)."]
    if any(s["engine"] == "ours-emulator" and s["status"] == "ok" for s in report["results"]):
        lines += ["", "ours-emulator is run on the emulated device (numpy stands in for the NPU): its speed is the "
                  "host-side cost of offloading, not an NPU speed."]
    if notes:
        lines += ["", "Not measured:", *notes]
    share = machine.get("other_processes_cpu_share")
    lines += [
        "",
        f"{len(report['files'])} file{'s' if len(report['files']) != 1 else ''}, {sum(f['audio_seconds'] for f in report['files']):.1f} s of audio; "
        f"threads={settings['threads']}, median of {settings['repeat']} timed round(s) after one untimed warm-up; "
        f"each engine in its own process, requests interleaved. CPU s: the engine process's CPU time per round "
        f"(all threads, spinning included). Load average "
        f"{machine['load_average_before'][0]:.2f} before, {machine['load_average_after'][0]:.2f} after"
        + (f"; other processes used {100 * share:.0f}% of the {machine['cpus']} CPUs during the run" if share is not None else "")
        + ".",
    ]
    if machine.get("cpu"):
        lines.append(f"CPU: {machine['cpu']['model']} ({', '.join(machine['cpu']['features']) or 'no AVX2'}).")
    if share is not None and share > 0.1:
        lines.append("**The machine was busy during this run: the figures are noisier and slower than on an idle machine.**")
    if report.get("npu_markdown"):
        lines += ["", report["npu_markdown"].strip()]
    return "\n".join(lines) + "\n"


def write_json(report: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps({k: v for k, v in report.items() if k != "npu_markdown"}, indent=1, default=str))


def write_png(report: dict[str, Any], path: Path) -> None:
    """Horizontal bars of × realtime per engine, grouped by model and beam, annotated with WER."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [s for s in report["results"] if s["status"] == "ok" and s["x_realtime"]]
    labels, speeds, annotations, colors = [], [], [], []
    palette = plt.get_cmap("tab10")
    engines = list(dict.fromkeys(s["engine"] for s in report["results"]))
    for summary in measured:
        # The chart travels without the markdown's footnote: the emulator bar carries its own label.
        emulated = " (run on the emulated device)" if summary["engine"] == "ours-emulator" else ""
        labels.append(f"{summary['model']} b{summary['beam_size']} · {summary['engine']}{emulated}")
        speeds.append(summary["x_realtime"])
        wer = f" · WER {summary['wer']:.1f}%" if summary["wer"] is not None else ""
        annotations.append(f"{summary['x_realtime']:.1f}×{wer}")
        colors.append(palette(engines.index(summary["engine"]) % 10))
    figure, axes = plt.subplots(figsize=(9, 1.2 + 0.45 * max(len(labels), 1)))
    positions = range(len(labels))
    axes.barh(list(positions), speeds, color=colors)
    axes.set_yticks(list(positions), labels)
    axes.invert_yaxis()
    for position, speed, text in zip(positions, speeds, annotations):
        axes.text(speed, position, " " + text, va="center", fontsize=8)
    axes.set_xlim(0, max(speeds, default=1.0) * 1.35)
    axes.set_xlabel("× realtime (audio seconds / wall seconds, median; higher is faster)")
    share = report["machine"].get("other_processes_cpu_share")
    busy = f"; other processes used {100 * share:.0f}% of the CPUs" if share is not None and share > 0.1 else ""
    axes.set_title(f"npu-ep bench: threads={report['settings']['threads']}, {len(report['files'])} files{busy}")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
