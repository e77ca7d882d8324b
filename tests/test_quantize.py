"""`npu-ep quantize`: real quantized models, real sessions, real audio."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import soundfile as sf

from npu_ep.cli import main
from npu_ep.metrics import wer
from npu_ep.quantize import quantize_model
from npu_ep.quantize.build import matching_nodes
from npu_ep.quantize.folder import ACCURACY, ONNX_FILES
from npu_ep.session import MERGED_DECODER_FILE
from npu_ep.whisper.audio import load_audio
from npu_ep.whisper.pipeline import Pipeline

JFK_TEXT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
# Random weights transcribe noise: their WER says nothing, so these tests never refuse on it.
NO_WER_LIMIT = float("inf")


@pytest.fixture(scope="module")
def second_clip(jfk_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second calibration clip: jfk, quieter, with noise, as 16 kHz mono wav."""
    samples, rate = sf.read(jfk_path, dtype="float32", always_2d=True)
    noisy = 0.5 * samples.mean(axis=1) + 0.01 * np.random.default_rng(0).standard_normal(len(samples)).astype(np.float32)
    path = tmp_path_factory.mktemp("clips") / "jfk-noisy.wav"
    sf.write(path, noisy, rate)
    return path


@pytest.fixture(scope="module")
def held_out_clip(jfk_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An evaluation clip apart from the calibration ones: jfk's first 6 seconds."""
    samples, rate = sf.read(jfk_path, dtype="float32")
    path = tmp_path_factory.mktemp("held-out") / "jfk-start.flac"
    sf.write(path, samples[: 6 * rate], rate)
    return path


@pytest.fixture(scope="module")
def dynamic_random(random_model_dir: Path, jfk_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("quantized") / "random-int8-dynamic"
    quantize_model(random_model_dir, "dynamic", out, evaluation=[jfk_path], max_wer_increase=NO_WER_LIMIT, progress=False)
    return out


def constant_matmuls(path: Path) -> list[onnx.NodeProto]:
    graph = onnx.load(path).graph
    weights = {init.name for init in graph.initializer}
    return [node for node in graph.node if node.op_type == "MatMul" and any(name in weights for name in node.input)]


def test_dynamic_folder_is_complete_and_says_how_it_was_made(dynamic_random: Path, random_model_dir: Path) -> None:
    for name in ONNX_FILES + ("config.json", "tokenizer.json", "generation_config.json", "manifest.json", "accuracy.json"):
        assert (dynamic_random / name).is_file(), name
    manifest = json.loads((dynamic_random / "manifest.json").read_text())
    assert manifest["name"] == "random-int8-dynamic"
    assert manifest["quantization"]["mode"] == "dynamic"
    assert manifest["quantization"]["source"] == str(random_model_dir)
    assert set(manifest["files"]) >= set(ONNX_FILES)
    # accuracy.json is added after the graphs were hashed: its own entry must still be right.
    assert manifest["files"][ACCURACY] == hashlib.sha256((dynamic_random / ACCURACY).read_bytes()).hexdigest()
    assert manifest["file_sizes"][ACCURACY] == (dynamic_random / ACCURACY).stat().st_size
    assert manifest["quantization"]["accuracy"]["clips"] == 1
    assert manifest["quantization"]["needs_vnni"] is False
    for name in ONNX_FILES:
        ops = {node.op_type for node in onnx.load(dynamic_random / name).graph.node}
        assert "MatMulInteger" in ops, name
        assert not constant_matmuls(dynamic_random / name), f"{name} kept a float weight MatMul"
        # The decoders' vocabulary projection, read whole for every token, is in 8-bit blocks instead.
        assert ("MatMulNBits" in ops) == name.startswith("decoder"), name


def test_dynamic_weights_fit_the_saturating_int8_kernels(dynamic_random: Path) -> None:
    """Exact on every x86-64 CPU: without VNNI or AMX, ONNX Runtime's u8 x s8 GEMM adds each pair of products
    in int16 with saturation (vpmaddubsw). With |w| <= 64 a pair is at most 2 * 255 * 64 = 32640 < 2**15."""
    for name in ONNX_FILES:
        graph = onnx.load(dynamic_random / name).graph
        inits = {init.name: onnx.numpy_helper.to_array(init) for init in graph.initializer}
        weights = [inits[node.input[1]] for node in graph.node if node.op_type == "MatMulInteger"]
        assert weights and all(w.dtype == np.int8 and np.abs(w.astype(np.int16)).max() <= 64 for w in weights), name
        assert max(np.abs(w.astype(np.int16)).max() for w in weights) == 64, name  # and the range is used


def test_weights_are_mapped_from_aligned_files_with_the_same_values(dynamic_random: Path, jfk_path: Path) -> None:
    """Each graph keeps its large weights in a file beside it at page-aligned offsets, which ONNX Runtime maps
    (so the decoders' embedding table is paged in by the rows used, not copied); the values are unchanged."""
    import onnxruntime as ort
    from onnx.external_data_helper import uses_external_data

    from npu_ep.model_folder import MAPPED_MIN_BYTES, WEIGHTS_ALIGNMENT, weights_file

    for name in ONNX_FILES:
        path = dynamic_random / name
        graph = onnx.load(path, load_external_data=False).graph
        external = [init for init in graph.initializer if uses_external_data(init)]
        assert external, name
        for init in external:
            entries = {entry.key: entry.value for entry in init.external_data}
            assert entries["location"] == weights_file(path).name and int(entries["offset"]) % WEIGHTS_ALIGNMENT == 0
        assert all(len(init.raw_data) < MAPPED_MIN_BYTES for init in graph.initializer if not uses_external_data(init))
    manifest = json.loads((dynamic_random / "manifest.json").read_text())
    assert {weights_file(dynamic_random / name).name for name in ONNX_FILES} <= set(manifest["files"])

    model = Pipeline(dynamic_random).model
    mapped = {line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines() if line.endswith(".data")}
    # The CPU sessions open the graphs' optimized copies (`session.cpu_graph`, the decoders merged into one),
    # whose weights are mapped too.
    assert {str(weights_file(dynamic_random / name)) for name in ("encoder_model.cpu.onnx", MERGED_DECODER_FILE)} <= mapped
    inline = ort.InferenceSession(onnx.load(dynamic_random / "decoder_model.onnx").SerializeToString(),
                                  providers=["CPUExecutionProvider"])
    features = np.random.default_rng(0).standard_normal((1, 80, 3000)).astype(np.float32)
    states = model.encoder.run(None, {"input_features": features})[0]
    feed = {"input_ids": np.array([[1, 2, 3]], dtype=np.int64), "encoder_hidden_states": states}
    np.testing.assert_array_equal(model.decoder.run(["logits"], {**feed, **model.first_pass_feeds})[0],
                                  inline.run(["logits"], feed)[0])


def test_accuracy_report_written_and_sane(dynamic_random: Path) -> None:
    report = json.loads((dynamic_random / "accuracy.json").read_text())
    assert report["clips"] == 1
    assert 0.9 < report["encoder_cosine_min"] <= 1.0 + 1e-9
    assert 0.9 < report["encoder_cosine_as_transcribed_min"] <= 1.0 + 1e-9
    assert 0.0 < report["encoder_max_abs_diff"] < 1.0
    assert 0.0 <= report["top1_match_rate"] <= 1.0
    assert report["per_clip"][0]["reference"] is None  # jfk has no references.json beside it: float text is the reference
    assert report["wer_float"] == 0.0


def test_each_onnx_file_is_opened_once(random_model_dir: Path, jfk_path: Path, second_clip: Path,
                                        held_out_clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Calibration, the float transcripts and the report's raw outputs share one set of sessions per model."""
    import npu_ep.session

    opened: list[Path] = []
    create_session, create_merged_decoder = npu_ep.session.create_session, npu_ep.session.create_merged_decoder
    monkeypatch.setattr(npu_ep.session, "create_session", lambda path, *a, **k: opened.append(path) or create_session(path, *a, **k))

    def merged(first: Path, past: Path, *args, **kwargs):
        session = create_merged_decoder(first, past, *args, **kwargs)
        opened.extend([first, past] if session is not None else [])  # else create_session opens them
        return session

    monkeypatch.setattr(npu_ep.session, "create_merged_decoder", merged)
    out, _ = quantize_model(random_model_dir, "static", tmp_path / "static", calibration=[jfk_path, second_clip],
                            evaluation=[held_out_clip], max_wer_increase=NO_WER_LIMIT, progress=False)
    assert sorted(p.name for p in opened) == sorted(ONNX_FILES * 2)
    staged = {p.parent.name for p in opened} - {random_model_dir.name}  # the float source and the staged model
    assert len(staged) == 1 and staged.pop().startswith(f".{out.name}.partial-")


def test_calibration_records_whole_feeds_and_decodes_only_for_a_decoder(random_model_dir: Path, jfk_path: Path) -> None:
    from npu_ep.quantize.calibration import FloatModel, collect_feeds

    model = FloatModel(Pipeline(random_model_dir))
    feeds = collect_feeds(model, [jfk_path], ONNX_FILES, progress=False).by_file
    assert set(feeds) == set(ONNX_FILES)
    for name in ONNX_FILES:  # each file's own inputs (those without a default), not the merged decoder's
        graph = onnx.load(random_model_dir / name, load_external_data=False).graph
        inputs = {i.name for i in graph.input} - {t.name for t in graph.initializer}
        assert feeds[name] and all(set(feed) == inputs for feed in feeds[name]), name
    model.decoder = model.decoder_with_past = None  # the encoder alone to quantize: no decoding
    assert set(collect_feeds(model, [jfk_path], ["encoder_model.onnx"], progress=False).by_file) == {"encoder_model.onnx"}


def test_quantized_model_transcribes_through_the_pipeline(dynamic_random: Path, jfk_path: Path) -> None:
    segments, info = Pipeline(dynamic_random).transcribe(jfk_path, temperature=0.0, progress=False)
    assert info.model == "random-int8-dynamic"
    assert info.duration == pytest.approx(11.0, abs=0.1)


def test_static_writes_int8_qdq_around_matmuls_and_honours_exclude(
    random_model_dir: Path, jfk_path: Path, second_clip: Path, held_out_clip: Path, tmp_path: Path
) -> None:
    kept = "encoder_model:*layers.0/fc1/MatMul"
    out, report = quantize_model(random_model_dir, "static", tmp_path / "static", calibration=[jfk_path, second_clip],
                                 evaluation=[jfk_path.parent, second_clip, held_out_clip], exclude=[kept],
                                 method="percentile", max_wer_increase=NO_WER_LIMIT, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["quantization"]["calibration"] == {"method": "percentile", "clips": ["jfk.flac", "jfk-noisy.wav"]}
    assert manifest["quantization"]["excluded_nodes"]["encoder_model.onnx"] == ["/layers.0/fc1/MatMul"]
    assert [Path(c["clip"]).name for c in report["per_clip"]] == ["jfk-start.flac"]  # calibration clips held out
    graph = onnx.load(out / "encoder_model.onnx").graph
    producers = {output: node for node in graph.node for output in node.output}
    int8_inits = {init.name for init in graph.initializer if init.data_type == onnx.TensorProto.INT8}
    matmuls = {node.name: node for node in graph.node if node.op_type == "MatMul"}
    for name, node in matmuls.items():
        fed_by = [producers.get(i) for i in node.input]
        # Excluded, or attention's activation x activation products (QKᵀ, AV): float.
        if name == "/layers.0/fc1/MatMul" or name.endswith(("self_attn/MatMul", "self_attn/MatMul_1")):
            assert all(p is None or p.op_type != "DequantizeLinear" for p in fed_by), name
        elif "_proj/" in name or "/fc" in name:
            assert all(p is not None and p.op_type == "DequantizeLinear" for p in fed_by), name
            assert fed_by[1].input[0] in int8_inits  # int8 weights
            activation_q = producers[fed_by[0].input[0]]
            assert activation_q.op_type == "QuantizeLinear"


def test_exclude_patterns_name_nodes_by_file_and_glob(random_model_dir: Path) -> None:
    encoder = random_model_dir / "encoder_model.onnx"
    assert matching_nodes(encoder, ["encoder_model:*layers.1/fc2"]) == ["/layers.1/fc2/MatMul"]
    assert matching_nodes(random_model_dir / "decoder_model.onnx", ["encoder_model:*fc2"]) == []
    assert len(matching_nodes(encoder, ["fc"])) >= 4


def test_sensitivity_ranks_every_encoder_matmul(random_model_dir: Path, jfk_path: Path) -> None:
    from npu_ep.quantize.sensitivity import measure_sensitivity

    rows = measure_sensitivity(str(random_model_dir), "dynamic", evaluation=[jfk_path], progress=False)
    assert len(rows) == len(constant_matmuls(random_model_dir / "encoder_model.onnx"))
    worst = [min(row["cosine"], row["cosine_as_transcribed"]) for row in rows]
    assert worst == sorted(worst)
    assert all(0.9 < row[key] <= 1.0 + 1e-9 for row in rows for key in ("cosine", "cosine_as_transcribed"))
    assert rows[0]["max_abs_diff"] > 0
    # The two inputs differ past the audio (log floor, zeros), so the scores do too.
    assert any(row["cosine"] != row["cosine_as_transcribed"] for row in rows)


def cli_error(capsys: pytest.CaptureFixture, *argv: str) -> str:
    assert main(["quantize", *argv]) == 2
    err = capsys.readouterr().err
    # Progress bars may come first (carriage-return updates); the error itself is one line, no traceback.
    errors = [line for line in err.splitlines() if "npu-ep: error: " in line]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0].split("npu-ep: error: ", 1)[1]


def test_refuses_a_folder_that_is_not_a_model(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    (tmp_path / "encoder_model.onnx").write_bytes(b"")
    assert "not an npu-ep model folder" in cli_error(capsys, "--model", str(tmp_path), "--mode", "dynamic")


def test_refuses_an_already_quantized_model(capsys: pytest.CaptureFixture, dynamic_random: Path, tmp_path: Path) -> None:
    err = cli_error(capsys, "--model", str(dynamic_random), "--mode", "static", "--out", str(tmp_path / "o"))
    assert "already quantized" in err


def test_refuses_calibration_that_is_not_audio_or_too_little(
    capsys: pytest.CaptureFixture, random_model_dir: Path, jfk_path: Path, held_out_clip: Path, tmp_path: Path
) -> None:
    fake = tmp_path / "notes.wav"
    fake.write_text("these are meeting notes, not audio\n")
    base = ["--model", str(random_model_dir), "--mode", "static", "--eval", str(held_out_clip)]
    err = cli_error(capsys, *base, "--calibration", str(fake), str(jfk_path), "--out", str(tmp_path / "a"))
    assert "notes.wav" in err
    assert "at least 2" in cli_error(capsys, *base, "--calibration", str(jfk_path), "--out", str(tmp_path / "b"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_refuses_malformed_references_beside_the_clips_before_quantizing(
    capsys: pytest.CaptureFixture, random_model_dir: Path, jfk_path: Path, tmp_path: Path
) -> None:
    clips = tmp_path / "clips"
    clips.mkdir()
    shutil.copy(jfk_path, clips / jfk_path.name)
    (clips / "references.json").write_text('{"jfk.flac": "And so my fellow Americans"')  # cut short
    out = tmp_path / "out"
    err = cli_error(capsys, "--model", str(random_model_dir), "--mode", "dynamic", "--eval", str(clips), "--out", str(out))
    assert err.startswith(f"{clips / 'references.json'}: not a readable JSON references file")
    assert "make it a JSON object mapping audio file name -> transcript text" in err
    assert not out.exists() and not (tmp_path / ".out.partial").exists()


def test_refuses_an_existing_output_without_force(
    capsys: pytest.CaptureFixture, random_model_dir: Path, jfk_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    err = cli_error(capsys, "--model", str(random_model_dir), "--mode", "dynamic", "--eval", str(jfk_path), "--out", str(out))
    assert "--force" in err and str(out) in err


def test_refuses_a_wer_rise_over_the_limit_and_writes_nothing(
    capsys: pytest.CaptureFixture, random_model_dir: Path, held_out_clip: Path, tmp_path: Path
) -> None:
    out = tmp_path / "refused"
    err = cli_error(capsys, "--model", str(random_model_dir), "--mode", "dynamic", "--eval", str(held_out_clip),
                    "--out", str(out), "--max-wer-increase", "-1000")
    assert "WER rose" in err and "--force" in err
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.fixture(scope="module")
def tiny_en_int8(tiny_en_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("real") / "tiny.en-int8-dynamic"
    assert main(["quantize", "--model", str(tiny_en_dir), "--mode", "dynamic", "--out", str(out)]) == 0
    return out


def test_tiny_en_dynamic_int8_keeps_jfk_word_perfect(tiny_en_int8: Path, tiny_en_dir: Path, jfk_path: Path) -> None:
    out = tiny_en_int8
    report = json.loads((out / "accuracy.json").read_text())
    assert report["encoder_cosine_min"] > 0.99
    assert report["first_step_top1_agreement"] == 1.0
    segments, _ = Pipeline(out).transcribe(jfk_path, progress=False)
    assert wer(JFK_TEXT, "".join(s.text for s in segments)) == 0.0
    from npu_ep.model_folder import weights_file

    def size(path: Path) -> int:  # the graph and its mapped weights
        return path.stat().st_size + (weights_file(path).stat().st_size if weights_file(path).exists() else 0)

    sizes = {name: size(out / name) / size(tiny_en_dir / name) for name in ONNX_FILES}
    assert all(ratio < 0.6 for ratio in sizes.values()), sizes


def test_tiny_en_dynamic_int8_encodes_a_window_the_same_whatever_shares_its_batch(tiny_en_int8: Path,
                                                                                  jfk_path: Path) -> None:
    """The int8 encoder quantizes its activations at run time with one scale per run: the batch's windows are
    encoded one run each, so jfk encodes the same alone and beside a much louder window."""
    from npu_ep.whisper.features import encoder_features

    model = Pipeline(tiny_en_int8, threads=2).model
    jfk = load_audio(jfk_path)
    loud = np.clip(8.0 * np.roll(jfk, len(jfk) // 3), -1.0, 1.0)
    features = np.stack([encoder_features(jfk, model.n_mels), encoder_features(loud, model.n_mels)])
    # `together` stays referenced: made from a numpy array, its .numpy() is a view of that array.
    alone, together = model.encode_batch(features[:1]), model.encode_batch(features)
    np.testing.assert_array_equal(together.numpy()[:1], alone.numpy())


def test_base_dynamic_int8_encoder_agrees_with_fp32_as_transcribed(base_dir: Path, jfk_path: Path, tmp_path: Path) -> None:
    """base's sensitive encoder MatMuls (its fc2s) stay float by default; with them quantized the agreement on jfk is 0.975."""
    out, report = quantize_model(base_dir, "dynamic", tmp_path / "base-int8-dynamic", evaluation=[jfk_path],
                                 parts=("encoder",), progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["quantization"]["excluded_nodes"]["encoder_model.onnx"] == [f"/layers.{i}/fc2/MatMul" for i in range(6)]
    assert report["encoder_cosine_as_transcribed_min"] >= 0.99 and report["encoder_cosine_min"] >= 0.99
    assert report["per_clip"][0]["quantized_text"] == report["per_clip"][0]["float_text"]


def test_tiny_en_static_int8_on_the_emulated_npu_matches_the_float_transcript(
    tiny_en_dir: Path, jfk_path: Path, tmp_path: Path, reference_cpu: None
) -> None:
    out, report = quantize_model(tiny_en_dir, "static", tmp_path / "tiny.en-int8-static", progress=False)
    assert report["wer_increase"] <= 1.0
    float_text = "".join(s.text for s in Pipeline(tiny_en_dir).transcribe(jfk_path, progress=False)[0])
    emulated = Pipeline(out, device="emulator")
    encoder = onnx.load(out / "encoder_model.emulator.onnx").graph
    int8_kernels = [n for n in encoder.node if n.op_type == "NpuQdqMatMul"]
    assert len(int8_kernels) == len(constant_matmuls(tiny_en_dir / "encoder_model.onnx")) - 2  # last fc1/fc2 kept float
    assert "".join(s.text for s in emulated.transcribe(jfk_path, progress=False)[0]) == float_text


@pytest.fixture
def cpu_without_vnni(monkeypatch: pytest.MonkeyPatch):
    """This process's CPU as an AVX2-only one (an AMD EPYC without AVX-512 or VNNI), as its code sees it."""
    import npu_ep.machine
    import npu_ep.session

    epyc = npu_ep.machine.read_cpu("model name\t: AMD EPYC 7B12\nflags\t\t: avx avx2 fma\n",
                                   {"avx2": True, "avx512f": False, "avx512_vnni": False})
    monkeypatch.setattr(npu_ep.machine, "cpu", lambda: epyc)
    monkeypatch.setattr(npu_ep.session, "cpu", lambda: epyc)
    return epyc


def test_full_range_int8_without_vnni_is_computed_exactly_and_said_in_one_line(
    random_model_dir: Path, jfk_path: Path, second_clip: Path, held_out_clip: Path, tmp_path: Path,
    cpu_without_vnni, caplog: pytest.LogCaptureFixture,
) -> None:
    from npu_ep.session import DISABLE_QDQ_FUSION

    out, _ = quantize_model(random_model_dir, "static", tmp_path / "static", calibration=[jfk_path, second_clip],
                            evaluation=[held_out_clip], max_wer_increase=NO_WER_LIMIT, progress=False)
    assert json.loads((out / "manifest.json").read_text())["quantization"]["needs_vnni"] is True
    caplog.clear()
    with caplog.at_level("WARNING", logger="npu_ep"):
        model = Pipeline(out).model
    said = [r.getMessage() for r in caplog.records if "VNNI" in r.getMessage()]
    assert len(said) == 1 and "AMD EPYC 7B12 (AVX2)" in said[0] and "\n" not in said[0], said
    for session in (model.encoder, model.decoder, model.decoder_with_past):
        assert session.get_session_options().get_session_config_entry(DISABLE_QDQ_FUSION) == "1"
    caplog.clear()
    Pipeline(random_model_dir)  # a float model: nothing to say
    assert not [r for r in caplog.records if "VNNI" in r.getMessage()]


def test_full_range_matmul_integer_weights_shift_to_the_exact_unsigned_kernel(random_model_dir: Path, tmp_path: Path) -> None:
    """A model quantized before weights were kept in the 7-bit range (its manifest has no "needs_vnni")."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from npu_ep.session import unsigned_weights
    from npu_ep.whisper.model import int8_needs_vnni

    assert int8_needs_vnni({"mode": "dynamic", "form": "matmul-integer"})
    assert not int8_needs_vnni({"mode": "dynamic", "form": "matmul-integer", "needs_vnni": False})
    full = tmp_path / "encoder_model.onnx"
    quantize_dynamic(random_model_dir / "encoder_model.onnx", full, op_types_to_quantize=["MatMul"], per_channel=True,
                     weight_type=QuantType.QInt8, extra_options={"MatMulConstBOnly": True})
    shifted = unsigned_weights(full)
    inits = {init.name: init for init in shifted.graph.initializer}
    matmuls = [node for node in shifted.graph.node if node.op_type == "MatMulInteger"]
    assert matmuls and all(inits[node.input[1]].data_type == onnx.TensorProto.UINT8 for node in matmuls)
    features = np.random.default_rng(0).standard_normal((1, 80, 3000)).astype(np.float32)
    want, got = (ort.InferenceSession(source, providers=["CPUExecutionProvider"]).run(None, {"input_features": features})[0]
                 for source in (str(full), shifted.SerializeToString()))
    from npu_ep.machine import cpu

    if not cpu().exact_int8:
        # Without VNNI the full-range u8 x s8 kernel saturates: the shifted form must be nearer the float model.
        float_out = ort.InferenceSession(str(random_model_dir / "encoder_model.onnx"),
                                         providers=["CPUExecutionProvider"]).run(None, {"input_features": features})[0]
        assert np.abs(got - float_out).max() <= np.abs(want - float_out).max()
        return
    # (w + 128) - 128 = w: the same integer products, summed exactly by both kernels on this CPU; only float
    # rounding after them may differ (a few units of float32's 2**-24, relative to the output's scale).
    assert np.abs(got - want).max() <= 64 * 2.0 ** -24 * np.abs(want).max()
