"""`npu-ep batch` on a real two-node Ray cluster on this machine: outputs equal `npu-ep transcribe`'s, bad
files recorded, a killed worker's file retried, an interrupted run resumed; plus input discovery and the
manifest without Ray."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from npu_ep.batch.inputs import discover, output_names
from npu_ep.batch.manifest import MANIFEST_NAME, PARTIAL_SUFFIX, ResultsManifest
from npu_ep.batch.runner import WorkerPlan, plan_workers
from npu_ep.cli import main
from npu_ep.errors import NpuEpError

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
WORKER_TITLE = b"ray::TranscribeWorker.transcribe"


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / MANIFEST_NAME).read_text().splitlines()]


def _transcribe_reference(files: list[Path], folder: Path) -> list[str]:
    """What `npu-ep transcribe FILE... --output-dir` writes for each file."""
    from npu_ep.whisper.command import output_names as transcribe_output_names

    assert main(["transcribe", *map(str, files), "--output-dir", str(folder), "--threads", "1", "--quiet"]) == 0
    targets = transcribe_output_names([str(audio) for audio in files], folder)
    return [Path(f"{targets[str(audio)]}.txt").read_text() for audio in files]


@pytest.fixture(scope="module")
def cluster():
    """A head and a worker node, one CPU each, as separate raylets on loopback."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    nodes.add_node(num_cpus=1)
    nodes.wait_for_nodes()
    yield nodes
    if ray.is_initialized():
        ray.shutdown()
    nodes.shutdown()


@pytest.fixture(scope="module")
def archive(tmp_path_factory, jfk_path) -> Path:
    """A folder tree with same-named files in different folders, a non-audio file, a bad and an empty one."""
    root = tmp_path_factory.mktemp("archive")
    for rel, source in [("a/hello.flac", "hello.flac"), ("a/weather.flac", "weather.flac"),
                        ("b/hello.flac", "library.flac"), ("b/deep/meeting.flac", "meeting.flac")]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLES / source, root / rel)
    shutil.copy(jfk_path, root / "jfk.flac")
    (root / "a" / "bad.wav").write_bytes(b"RIFF but not really a wave file" * 10)
    (root / "b" / "empty.flac").write_bytes(b"")
    (root / "a" / "notes.md").write_text("not audio, not searched for\n")
    return root


def test_cluster_batch_matches_transcribe_and_records_bad_files(cluster, archive, tiny_en_dir, tmp_path):
    from npu_ep.batch import transcribe_batch

    out = tmp_path / "out"
    summary = transcribe_batch([archive], out, model="tiny.en", ray_address=cluster.address, progress=False)
    assert (summary.done, summary.failed, summary.skipped, summary.workers) == (5, 2, 0, 2)
    records = {r["path"]: r for r in _records(out)}
    assert len(records) == len(_records(out)) == 7  # one line per file
    good = ["a/hello.flac", "a/weather.flac", "b/hello.flac", "b/deep/meeting.flac", "jfk.flac"]
    for rel in good:
        record = records[rel]
        assert record["status"] == "done" and record["error"] is None and record["model"] == "tiny.en"
        assert record["hash"].startswith("sha256:") and record["duration"] > 1 and record["seconds"] > 0
        assert out / record["output"] == (out / rel).with_suffix(".txt")
    expected = _transcribe_reference([archive / rel for rel in good], tmp_path / "ref")
    assert [(out / records[rel]["output"]).read_text() for rel in good] == expected
    assert (out / "a/hello.txt").read_text() != (out / "b/hello.txt").read_text()  # no collision
    assert "Americans" in (out / "jfk.txt").read_text()
    assert len({records[rel]["worker"] for rel in good}) == 2  # both nodes' workers took files
    assert records["a/bad.wav"]["status"] == "failed" and "not a readable audio file" in records["a/bad.wav"]["error"]
    assert records["b/empty.flac"]["status"] == "failed" and "empty" in records["b/empty.flac"]["error"]
    assert all(str(archive) in records[rel]["error"] for rel in ("a/bad.wav", "b/empty.flac"))
    assert not list(out.rglob(f"*{PARTIAL_SUFFIX}"))

    # The same run again does only what failed; a changed file is done again.
    shutil.copy(SAMPLES / "weather.flac", archive / "a" / "hello.flac")
    again = transcribe_batch([archive], out, model="tiny.en", ray_address=cluster.address, progress=False)
    assert (again.done, again.failed, again.skipped) == (1, 2, 4)
    assert [r["path"] for r in _records(out)[7:] if r["status"] == "done"] == ["a/hello.flac"]
    assert (out / "a/hello.txt").read_text() == (out / "a/weather.txt").read_text()
    shutil.copy(SAMPLES / "hello.flac", archive / "a" / "hello.flac")


def test_killed_worker_file_is_retried_and_done_once(cluster, jfk_path, tiny_en_dir, tmp_path):
    from npu_ep.batch import transcribe_batch

    speech, rate = soundfile.read(jfk_path, dtype="float32")
    (tmp_path / "in").mkdir()
    for i in range(3):  # 44 s each: long enough to be caught mid-file
        soundfile.write(tmp_path / "in" / f"talk{i}.flac", np.tile(speech, 4), rate)
    killed: list[int] = []

    def kill_one_worker_mid_file() -> None:
        deadline = time.monotonic() + 120
        while not killed and time.monotonic() < deadline:
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    if cmdline.read_bytes().startswith(WORKER_TITLE):
                        pid = int(cmdline.parent.name)
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
                        return
                except (OSError, ValueError):
                    continue
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_worker_mid_file)
    killer.start()
    out = tmp_path / "out"
    summary = transcribe_batch([tmp_path / "in"], out, model="tiny.en", ray_address=cluster.address, progress=False)
    killer.join()
    assert killed, "no worker was caught transcribing"
    records = _records(out)
    assert sorted(r["path"] for r in records) == ["talk0.flac", "talk1.flac", "talk2.flac"]  # each exactly once
    assert all(r["status"] == "done" for r in records) and summary.done == 3
    assert sorted(r["attempts"] for r in records) == [1, 1, 2]
    texts = {(out / r["output"]).read_text() for r in records}
    assert len(texts) == 1 and "Americans" in texts.pop()


def test_sigint_then_rerun_finishes_only_the_rest(tiny_en_dir, tmp_path):
    pytest.importorskip("ray")
    inputs = tmp_path / "in"
    for i in range(2):
        for clip in ("hello", "library", "meeting", "weather"):
            (inputs / f"part{i}").mkdir(parents=True, exist_ok=True)
            shutil.copy(SAMPLES / f"{clip}.flac", inputs / f"part{i}" / f"{clip}.flac")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "npu_ep", "batch", str(inputs), "--output-dir", str(out), "--workers", "1", "--quiet"]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    # A shell's background job starts with SIGINT ignored, and Python then keeps it ignored: give the run
    # the default disposition, so it is interrupted however the tests were started.
    run = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    manifest = out / MANIFEST_NAME
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and run.poll() is None and not (manifest.is_file() and manifest.read_text()):
        time.sleep(0.05)
    run.send_signal(signal.SIGINT)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 130, stderr
    first = _records(out)
    assert 1 <= len(first) < 8 and all(r["status"] == "done" for r in first)
    assert not list(out.rglob(f"*{PARTIAL_SUFFIX}"))

    rerun = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    records = _records(out)
    assert len(records) == 8 and len({r["path"] for r in records}) == 8  # the rest, and only the rest
    assert all(r["status"] == "done" for r in records)
    assert all((out / r["output"]).is_file() for r in records)


def test_batch_without_ray_says_how_to_install_it(tmp_path):
    blocked = "import sys; sys.modules['ray'] = None; from npu_ep.cli import main; sys.exit(main())"
    result = subprocess.run([sys.executable, "-c", blocked, "batch", str(SAMPLES), "--output-dir", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        'npu-ep: error: npu-ep batch needs Ray, which is not installed (pip install "npu-ep[cluster]")']


def test_unreachable_cluster_is_one_line(tmp_path):
    pytest.importorskip("ray")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = subprocess.run([sys.executable, "-m", "npu_ep", "batch", str(SAMPLES), "--output-dir", str(tmp_path),
                             "--ray", f"127.0.0.1:{port}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"npu-ep: error: --ray 127.0.0.1:{port}: no Ray cluster answers there (Connection refused; "
        "start one with `ray start --head` or leave out --ray)"]


def test_discovery_lists_and_output_names(tmp_path):
    (tmp_path / "x" / "deep").mkdir(parents=True)
    for rel in ("x/one.wav", "x/one.flac", "x/deep/two.mp3", "x/.hidden.wav", "x/readme.md", "y.ogg"):
        (tmp_path / rel).write_bytes(b"")
    (tmp_path / "list.txt").write_text("# comment\ny.ogg\nx/one.wav\n\n")
    (tmp_path / "list.csv").write_text("path,speaker\nx/deep/two.mp3,ann\n")
    files = discover([tmp_path / "x", tmp_path / "list.txt", tmp_path / "list.csv"])
    assert [str(f.rel) for f in files] == ["x/one.flac", "x/one.wav", "x/deep/two.mp3", "y.ogg"]  # each once
    names = {str(f.rel): str(name) for f, name in output_names(files, "srt").items()}
    assert names == {"x/one.flac": "x/one.flac.srt", "x/one.wav": "x/one.wav.srt",
                     "x/deep/two.mp3": "x/deep/two.srt", "y.ogg": "y.srt"}
    assert [str(f.rel) for f in discover([tmp_path / "x"], exclude=tmp_path / "x" / "deep")] == ["one.flac", "one.wav"]
    with pytest.raises(NpuEpError, match="nowhere: no such file or folder"):
        discover([tmp_path / "nowhere"])
    with pytest.raises(NpuEpError, match="no audio files"):
        discover([tmp_path / "x" / "deep"], exclude=tmp_path / "x")


def test_manifest_survives_a_torn_line_and_refuses_a_second_writer(tmp_path):
    record = {"path": "a.wav", "hash": "sha256:1", "model": "tiny.en", "settings": {"format": "txt"},
              "status": "done"}
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(record) + "\n" + '{"path": "b.wav", "ha')
    (tmp_path / f".a.txt{PARTIAL_SUFFIX}").write_text("half")
    with ResultsManifest(tmp_path) as manifest:
        assert manifest.records == [record] and len(manifest.done()) == 1
        assert not (tmp_path / f".a.txt{PARTIAL_SUFFIX}").exists()
        with pytest.raises(NpuEpError, match="another npu-ep batch is writing"):
            ResultsManifest(tmp_path)
        manifest.append({**record, "path": "c.wav"})
    lines = (tmp_path / MANIFEST_NAME).read_text().splitlines()
    assert json.loads(lines[-1])["path"] == "c.wav"


def test_worker_plan_puts_one_worker_per_npu_and_fills_the_cores():
    plans = plan_workers({"CPU": 4.0, "npu": 1.0}, "auto", None, 1)
    assert plans == [WorkerPlan("npu", 1, {"npu": 1})] + [WorkerPlan("cpu", 1, {})] * 3
    assert plan_workers({"CPU": 4.0}, "cpu", None, 2) == [WorkerPlan("cpu", 2, {})] * 2
    assert len(plan_workers({"CPU": 4.0}, "emulator", 1, 1)) == 1
    with pytest.raises(NpuEpError, match="no Ray node offers an NPU"):
        plan_workers({"CPU": 4.0}, "npu", None, 1)
