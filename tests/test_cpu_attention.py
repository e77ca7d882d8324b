"""The CPU path's fused attention: a real exported encoder, rewritten, run by ONNX Runtime against the original."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from npu_ep.session import cpu_graph, create_session
from npu_ep.whisper.spec import ENCODER_FILE, ModelDims
from npu_ep.model_folder import read_manifest


def _encode(path: Path, features: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input_features": features})[0]


def test_encoder_attention_runs_fused_with_the_same_output(random_model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(random_model_dir, folder)
    dims = ModelDims.from_manifest(read_manifest(folder))
    source = folder / ENCODER_FILE
    fused = cpu_graph(source, dims.n_audio_head)

    assert fused != source and fused.parent == folder
    ops = [node.op_type for node in onnx.load(fused, load_external_data=False).graph.node]
    assert ops.count("MultiHeadAttention") == dims.n_audio_layer and "Softmax" not in ops
    features = np.random.default_rng(0).standard_normal((1, dims.n_mels, 3000)).astype(np.float32)
    want, got = _encode(source, features), _encode(fused, features)
    np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max())

    # Reused while the source is unchanged, made again when it changes.
    made = fused.stat().st_mtime_ns
    assert cpu_graph(source, dims.n_audio_head) == fused and fused.stat().st_mtime_ns == made
    source.touch()
    assert cpu_graph(source, dims.n_audio_head) == fused
    assert json.loads(fused.with_suffix(".json").read_text())["source"].startswith(str(source.stat().st_size))

    # The session the pipeline opens on the CPU runs the fused copy; the NPU path partitions the original.
    session = create_session(source, "cpu", 1, attention_heads=dims.n_audio_head)
    np.testing.assert_allclose(session.run(None, {"input_features": features})[0], want, atol=1e-4 * np.abs(want).max())


def test_a_graph_without_attention_blocks_is_run_as_it_is(random_model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(random_model_dir, folder)
    # The decoder-with-past's attention reads cached keys/values, not a split of its own projections.
    source = folder / "decoder_with_past_model.onnx"
    assert cpu_graph(source, 4) == source
    assert not source.with_name("decoder_with_past_model.cpu.onnx").exists()
