"""The merged decoder: a real exported model's two decoder graphs as one ONNX Runtime session, against the two."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import npu_ep.session
from npu_ep.decoder_merge import merge_decoders
from npu_ep.session import MERGED_DECODER_FILE, create_merged_decoder
from npu_ep.whisper.pipeline import Pipeline
from npu_ep.whisper.spec import (ALIGNMENT_OUTPUT, DECODER_FILE, DECODER_WITH_PAST_FILE, ENCODER_HIDDEN_STATES, INPUT_IDS, LOGITS,
                                 LOGITS_START, USE_CACHE_BRANCH)


@pytest.fixture()
def folder(random_model_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(random_model_dir, copy)
    for derived in copy.glob("*.cpu.*"):
        derived.unlink()
    return copy


def _weight_bytes(model: onnx.ModelProto) -> int:
    return sum(len(tensor.raw_data) for tensor in model.graph.initializer)


def test_each_weight_of_the_two_decoders_is_stored_once(folder: Path) -> None:
    first, past = (onnx.load(str(folder / name)) for name in (DECODER_FILE, DECODER_WITH_PAST_FILE))
    merged = merge_decoders(first, past)
    onnx.checker.check_model(merged, full_check=True)
    # The with-past graph's weights are all the first pass's too (it lacks only the cross-attention projections).
    assert _weight_bytes(merged) == _weight_bytes(first) > 0.9 * _weight_bytes(past)
    contents = [(t.data_type, tuple(t.dims), t.raw_data) for t in merged.graph.initializer if len(t.raw_data) > 1024]
    assert len(contents) == len(set(contents))


def test_merged_decoder_runs_each_graph_as_it_ran_alone(folder: Path) -> None:
    session = create_merged_decoder(folder / DECODER_FILE, folder / DECODER_WITH_PAST_FILE, "cpu", 1)
    assert session is not None and (folder / MERGED_DECODER_FILE).is_file()
    first, past = (ort.InferenceSession(str(folder / name), providers=["CPUExecutionProvider"])
                   for name in (DECODER_FILE, DECODER_WITH_PAST_FILE))
    d_model = first.get_inputs()[1].shape[-1]
    states = np.random.default_rng(0).standard_normal((2, 1500, d_model)).astype(np.float32)
    feeds = {INPUT_IDS: np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int64), ENCODER_HIDDEN_STATES: states}
    names = [o.name for o in first.get_outputs()]
    assert [o.name for o in session.get_outputs()] == names and ALIGNMENT_OUTPUT in names

    want = first.run(names, feeds)
    got = session.run(names, {**feeds, USE_CACHE_BRANCH: np.array([False])})
    for name, a, b in zip(names, got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=name)
    # LOGITS_START still reaches the first pass inside the merged graph.
    tail = session.run([LOGITS], {**feeds, USE_CACHE_BRANCH: np.array([False]), LOGITS_START: np.array([2])})[0]
    np.testing.assert_allclose(tail, want[0][:, 2:], rtol=1e-5, atol=1e-5)

    # A step fed as the with-past graph is fed (no encoder states) gives that graph's logits and self caches.
    step = {INPUT_IDS: np.array([[7], [8]], dtype=np.int64)}
    step.update({"past_key_values" + n[len("present"):]: v for n, v in zip(names, want) if n.startswith("present")})
    past_names = [o.name for o in past.get_outputs()]
    want_step = past.run(past_names, step)
    got_step = session.run(past_names, {**step, USE_CACHE_BRANCH: np.array([True])})
    for name, a, b in zip(past_names, got_step, want_step):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=name)


def test_pipeline_transcribes_with_one_decoder_session_as_with_two(folder: Path, jfk_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    merged = Pipeline(folder, threads=1)
    assert merged.model.decoder is merged.model.decoder_with_past
    with monkeypatch.context() as patch:
        patch.setattr(npu_ep.session, "create_merged_decoder", lambda *args, **kwargs: None)
        two = Pipeline(folder, threads=1)
    assert two.model.decoder is not two.model.decoder_with_past
    for options in ({"temperature": 0.0}, {"temperature": 0.0, "beam_size": 2, "word_timestamps": True}):
        results = [pipeline.transcribe(jfk_path, progress=False, **options)[0] for pipeline in (merged, two)]
        assert [s.tokens for s in results[0]] == [s.tokens for s in results[1]] and results[0]
        if options.get("word_timestamps"):
            assert [w.start for s in results[0] for w in s.words] == [w.start for s in results[1] for w in s.words]


def test_decoders_open_as_two_sessions_off_the_cpu_or_in_a_folder_that_cannot_hold_the_merged_one(folder: Path) -> None:
    paths = folder / DECODER_FILE, folder / DECODER_WITH_PAST_FILE
    assert create_merged_decoder(*paths, "emulator", 1) is None  # the NPU's partition is made per graph
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("this file system has no immutable attribute")
    try:
        assert create_merged_decoder(*paths, "cpu", 1) is None
        model = Pipeline(folder, threads=1).model
        assert model.decoder is not model.decoder_with_past and not model.step_feeds
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
