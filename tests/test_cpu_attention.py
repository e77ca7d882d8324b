"""The CPU path's fused attention: a real exported encoder, rewritten, run by ONNX Runtime against the original."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

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


def test_every_graph_opens_as_its_saved_optimized_copy(random_model_dir: Path, tmp_path: Path) -> None:
    from npu_ep.model_folder import WEIGHTS_ALIGNMENT, weights_file

    folder = tmp_path / "model"
    shutil.copytree(random_model_dir, folder)
    # The decoder-with-past's attention reads cached keys/values, not a split of its own projections: it is
    # optimized, not fused.
    source = folder / "decoder_with_past_model.onnx"
    saved = cpu_graph(source)
    assert saved == source.with_name("decoder_with_past_model.cpu.onnx")
    model = onnx.load(saved, load_external_data=False)
    assert "MultiHeadAttention" not in [node.op_type for node in model.graph.node]
    # ORT's optimizer fused nodes: the graph it saved is smaller than the source.
    assert len(model.graph.node) < len(onnx.load(source, load_external_data=False).graph.node)
    # Its weights are at offsets ONNX Runtime maps, in its own file.
    offsets = [int(entry.value) for tensor in model.graph.initializer for entry in tensor.external_data
               if entry.key == "offset"]
    assert offsets and all(offset % WEIGHTS_ALIGNMENT == 0 for offset in offsets)
    assert weights_file(saved).is_file()
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]  # no scratch files left

    feeds = {}
    session = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for value in session.get_inputs():
        shape = [1 if dim == "batch_size" else 5 if isinstance(dim, str) else dim for dim in value.shape]
        feeds[value.name] = (np.array([[3]], np.int64) if value.name == "input_ids"
                             else rng.standard_normal(shape).astype(np.float32))
    want = session.run(None, feeds)
    got = create_session(source, "cpu", 1).run(None, feeds)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, atol=1e-4 * max(np.abs(b).max(), 1.0))

    # Made again under another ONNX Runtime (or CPU): the record holds both.
    record = saved.with_suffix(".json")
    assert ort.__version__ in json.loads(record.read_text())["source"]
    record.write_text(json.dumps({"source": "1:2:2:0.0.0:"}))
    made = saved.stat().st_mtime_ns
    assert cpu_graph(source) == saved and saved.stat().st_mtime_ns != made


def test_a_folder_that_cannot_be_written_runs_its_graphs_as_they_are(random_model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(random_model_dir, folder)
    for stale in folder.glob("*.cpu.*"):
        stale.unlink()
    # Immutable: even root cannot create files in it (a read-only folder would not stop root).
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("this file system has no immutable attribute")
    try:
        source = folder / "decoder_with_past_model.onnx"
        assert cpu_graph(source) == source
        assert create_session(folder / ENCODER_FILE, "cpu", 1, attention_heads=4).get_inputs()
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
