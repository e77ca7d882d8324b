"""Per-node sensitivity: how far quantizing one encoder MatMul alone moves the encoder output.
The nodes that move it most are the candidates for `--exclude`."""
from __future__ import annotations

import tempfile
from pathlib import Path

from npu_ep.quantize import folder as folders
from npu_ep.quantize.clips import both_inputs, split_clips
from npu_ep.whisper.spec import ENCODER_FILE, INPUT_FEATURES


def measure_sensitivity(model: str, mode: str, calibration: list[str] | None = None, evaluation: list[str] | None = None,
                        method: str = "minmax", form: str = "matmul-integer", per_channel: bool = True,
                        progress: bool = True) -> list[dict]:
    """One row per constant-weight encoder MatMul: cosine and max |Δ| of the encoder output, worst over the
    evaluation clips, with only that node quantized, on calibration's input ("cosine") and as transcription
    feeds it ("cosine_as_transcribed", zeros past the audio). Sorted most sensitive first, by the lower one."""
    import onnx
    from tqdm import tqdm

    from npu_ep.session import create_session
    from npu_ep.quantize.accuracy import encoder_agreement
    from npu_ep.quantize.build import quantize_file, quiet_quantizer_logs
    from npu_ep.quantize.calibration import FloatModel, collect_feeds
    from npu_ep.quantize.static import activation_matmuls
    from npu_ep.whisper.pipeline import Pipeline

    source, _ = folders.source_model(model)
    calib_clips, eval_clips = split_clips(calibration, evaluation, static=mode == "static")
    float_model = FloatModel(Pipeline(source))
    features, fed = zip(*(both_inputs(clip, float_model.n_mels) for clip in eval_clips))
    expected, expected_fed = [float_model.encode(f) for f in features], [float_model.encode(f) for f in fed]
    encoder = source / ENCODER_FILE
    graph = onnx.load(encoder, load_external_data=False).graph
    activations = set(activation_matmuls(graph))  # never quantized
    nodes = [n.name for n in graph.node if n.op_type == "MatMul" and n.name not in activations]
    feeds = None
    if mode == "static":
        feeds = collect_feeds(float_model, calib_clips, {ENCODER_FILE}, progress).by_file[ENCODER_FILE]
    rows = []
    with tempfile.TemporaryDirectory(prefix="npu-ep-sensitivity-") as scratch, quiet_quantizer_logs():
        target = Path(scratch) / ENCODER_FILE
        for node in tqdm(nodes, desc="sensitivity", unit="node", disable=not progress):
            others = [n for n in nodes if n != node]
            quantize_file(encoder, target, mode, others, feeds=feeds, method=method, form=form, per_channel=per_channel)
            session = create_session(target, exact_int8=mode == "static")
            scores = [encoder_agreement(want, session.run(None, {INPUT_FEATURES: f})[0])
                      for f, want in zip(features, expected)]
            scores_fed = [encoder_agreement(want, session.run(None, {INPUT_FEATURES: f})[0])
                          for f, want in zip(fed, expected_fed)]
            rows.append({"node": node, "cosine": min(s[0] for s in scores), "max_abs_diff": max(s[1] for s in scores),
                         "cosine_as_transcribed": min(s[0] for s in scores_fed)})
    return sorted(rows, key=lambda row: min(row["cosine"], row["cosine_as_transcribed"]))


def format_sensitivity(rows: list[dict]) -> str:
    lines = ["encoder output with one MatMul quantized (most sensitive first):",
             f"  {'node':<48} {'1 - cosine':>11} {'max |Δ|':>9} {'as transcribed':>15}"]
    lines += [f"  {row['node']:<48} {1 - row['cosine']:>11.2e} {row['max_abs_diff']:>9.4f} "
              f"{1 - row['cosine_as_transcribed']:>15.2e}" for row in rows]
    return "\n".join(lines)
