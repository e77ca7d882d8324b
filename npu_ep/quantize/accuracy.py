"""What quantization cost: the quantized model against its float source on clips it was not calibrated on."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from npu_ep.metrics import REFERENCES_FILE, corpus_wer, word_errors
from npu_ep.quantize.calibration import FloatModel
from npu_ep.quantize.clips import both_inputs
from npu_ep.whisper.formats import transcript_text

if TYPE_CHECKING:
    from npu_ep.whisper.pipeline import Pipeline


def encoder_agreement(reference: np.ndarray, candidate: np.ndarray) -> tuple[float, float]:
    """(cosine similarity, max |Δ|) of two encoder outputs."""
    a, b = reference.ravel().astype(np.float64), candidate.ravel().astype(np.float64)
    cosine = float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))
    return cosine, float(np.abs(a - b).max())


def transcript(pipeline: Pipeline, clip: Path) -> str:
    # The pipeline's default decoding (greedy, seeded temperature fallback): the transcript users would get.
    segments, _ = pipeline.transcribe(clip, progress=False)
    return transcript_text(segments)


def accuracy_report(float_pipeline: Pipeline, quant_dir: Path, clips: list[Path], refs: dict[Path, str],
                    progress: bool = True) -> dict:
    """Encoder output, decoder top-1 and WER of `quant_dir` against the float model on `clips`, whose
    reference texts are `refs` (the float transcript stands in for a clip without one).

    Top-1 agreement is measured with teacher forcing: both decoders see the float model's greedy tokens,
    so one early disagreement does not count again at every later position.
    """
    from tqdm import tqdm

    from npu_ep.whisper.pipeline import Pipeline

    pipelines = float_pipeline, Pipeline(quant_dir)
    float_model, quant_model = (FloatModel(pipeline) for pipeline in pipelines)
    per_clip = []
    for clip in tqdm(clips, desc="accuracy", unit="clip", disable=not progress):
        # Calibration's log-floor padding is not what transcription feeds the encoder (zeros past the
        # audio); the agreement on that input (`fed`) is the one users get.
        features, fed = both_inputs(clip, float_model.n_mels)
        hidden_f, hidden_q = float_model.encode(features), quant_model.encode(features)
        cosine, max_delta = encoder_agreement(hidden_f, hidden_q)
        cosine_fed, _ = encoder_agreement(float_model.encode(fed), quant_model.encode(fed))
        tokens = float_model.greedy(hidden_f)
        start = len(float_model.prompt) - 1  # the position whose logits give the first text token
        logits_f = float_model.logits(hidden_f, tokens)[start:]
        logits_q = quant_model.logits(hidden_q, tokens)[start:]
        text_f, text_q = (transcript(pipeline, clip) for pipeline in pipelines)
        reference = refs.get(clip, text_f)
        per_clip.append({
            "clip": str(clip), "reference": reference if clip in refs else None,
            "encoder_cosine": cosine, "encoder_max_abs_diff": max_delta, "encoder_cosine_as_transcribed": cosine_fed,
            "first_step_top1_match": bool(logits_f[0].argmax() == logits_q[0].argmax()),
            "first_step_logits_max_abs_diff": float(np.abs(logits_f[0] - logits_q[0]).max()),
            "top1_match_rate": float((logits_f.argmax(-1) == logits_q.argmax(-1)).mean()),
            "float_text": text_f, "quantized_text": text_q,
            "float_errors": word_errors(reference, text_f), "quantized_errors": word_errors(reference, text_q),
        })
    wer_float = corpus_wer(c["float_errors"] for c in per_clip)
    wer_quant = corpus_wer(c["quantized_errors"] for c in per_clip)
    return {
        "clips": len(per_clip),
        "encoder_cosine_min": min(c["encoder_cosine"] for c in per_clip),
        "encoder_max_abs_diff": max(c["encoder_max_abs_diff"] for c in per_clip),
        "encoder_cosine_as_transcribed_min": min(c["encoder_cosine_as_transcribed"] for c in per_clip),
        "first_step_top1_agreement": float(np.mean([c["first_step_top1_match"] for c in per_clip])),
        "top1_match_rate": float(np.mean([c["top1_match_rate"] for c in per_clip])),
        "wer_float": wer_float, "wer_quantized": wer_quant, "wer_increase": wer_quant - wer_float,
        # Clips without a reference text are scored against the float transcript.
        "wer_reference": REFERENCES_FILE if len(refs) == len(per_clip) else f"{REFERENCES_FILE}, else the float transcript",
        "per_clip": per_clip,
    }


def format_report(report: dict) -> str:
    lines = [
        f"accuracy against the float model on {report['clips']} clip(s) not used for calibration:",
        f"  encoder output      cosine >= {report['encoder_cosine_min']:.5f}   max |Δ| {report['encoder_max_abs_diff']:.4f}"
        f"   (as transcription pads the window: cosine >= {report['encoder_cosine_as_transcribed_min']:.5f})",
        f"  decoder top-1       first step {100 * report['first_step_top1_agreement']:.0f}%   "
        f"all steps {100 * report['top1_match_rate']:.1f}% (teacher-forced)",
        f"  WER                 float {report['wer_float']:.2f}%   int8 {report['wer_quantized']:.2f}%   "
        f"increase {report['wer_increase']:+.2f} points",
    ]
    for clip in report["per_clip"]:
        if clip["float_text"] != clip["quantized_text"]:
            lines.append(f"  {Path(clip['clip']).name}: float {clip['float_text']!r} / int8 {clip['quantized_text']!r}")
    return "\n".join(lines)
