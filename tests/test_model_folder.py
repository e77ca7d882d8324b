"""Writers of model folders (export, quantize) against each other and against a run that was killed:
one writer at a time, a waiting run says whom it waits for, and scratch never outlives the next run."""
from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT
from npu_ep.bench.shapes import build_random_whisper
from npu_ep.export import export_model
from npu_ep.model_folder import exclusive, lock_path, scratch_prefix

# A second process that takes a folder's lock, prints "held", keeps it for a while, then releases it.
HOLDER = """
import sys, time
from pathlib import Path
from npu_ep.model_folder import exclusive
from npu_ep.quantize import folder as folders
out = Path(sys.argv[1])
with exclusive(out, "quantize"):
    staging = folders.staging_folder(out, force=True)
    (staging / "work").write_text("in progress")
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
    intact = (staging / "work").is_file()
sys.exit(0 if intact else 1)
"""


def _holder(out: Path, seconds: float) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(out), str(seconds)], stdout=subprocess.PIPE,
                               text=True, cwd=ROOT)
    assert process.stdout.readline().strip() == "held"
    return process


def _scratch(out: Path) -> list[Path]:
    return sorted(p for p in out.parent.glob(f".{out.name}.*") if p.is_dir())


@pytest.mark.needs_weights
@pytest.mark.slow
def test_a_killed_export_leaves_scratch_that_the_next_export_removes(tmp_path: Path) -> None:
    hf = build_random_whisper(tmp_path / "hf")
    out = tmp_path / "models" / "random"
    process = subprocess.Popen([sys.executable, "-m", "npu_ep", "export", "--model", str(hf), "--out", str(out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    deadline = time.monotonic() + 300
    while not any(p.name.startswith(scratch_prefix(out, "partial")) for p in _scratch(out)):
        assert process.poll() is None and time.monotonic() < deadline, "the export never started staging"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert _scratch(out), "the killed export left nothing behind: the test would prove nothing"
    assert not (out / "manifest.json").exists()

    export_model(hf, out_dir=out)
    assert (out / "manifest.json").is_file()
    assert _scratch(out) == []


def test_a_second_quantize_of_the_same_output_waits_and_says_for_whom(
    random_model_dir: Path, jfk_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from npu_ep.quantize import quantize_model

    out = tmp_path / "int8"
    holder = _holder(out, seconds=2.0)
    with caplog.at_level(logging.WARNING, logger="npu_ep"):
        quantize_model(random_model_dir, "dynamic", out, evaluation=[jfk_path], max_wer_increase=1e9,
                       force=True, progress=False)
    assert holder.wait(timeout=60) == 0, "the second run deleted the first one's staged work"
    assert f"waiting for another quantize of {out} (pid {holder.pid})" in caplog.text
    assert (out / "manifest.json").is_file() and _scratch(out) == []


def test_the_lock_sweeps_only_its_own_folders_scratch(tmp_path: Path) -> None:
    out = tmp_path / "tiny.en"
    mine = [tmp_path / f"{scratch_prefix(out, role)}123" for role in ("partial", "old", "hf")]
    other = tmp_path / f"{scratch_prefix(tmp_path / 'tiny', 'partial')}456"  # model "tiny", a prefix of ours
    for folder in (*mine, other):
        folder.mkdir()
    with exclusive(out, "export"):
        assert not any(folder.exists() for folder in mine)
    assert other.is_dir()
    assert lock_path(out).read_text() == ""  # no stale pid once released
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name]  # nothing left beside the folder



def test_the_damaged_folder_hint_is_a_command_that_repairs_it(random_model_dir: Path, tmp_path: Path) -> None:
    import shlex
    import shutil

    import npu_ep
    from npu_ep.errors import NpuEpError

    damaged = tmp_path / "damaged"
    shutil.copytree(random_model_dir, damaged)
    (damaged / "config.json").write_text('{"num_mel_bins": 80')  # cut short
    with pytest.raises(NpuEpError, match="damaged model folder") as error:
        npu_ep.Pipeline(damaged)
    hint = str(error.value).rpartition("rebuild it with: ")[2].rstrip(")")
    command = shlex.split(hint)
    assert command[:2] == ["npu-ep", "export"] and str(damaged) in command
    result = subprocess.run([sys.executable, "-m", "npu_ep", *command[1:]], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    npu_ep.Pipeline(damaged)  # loads again
