"""The transcription command at its edges, each case in a real `npu-ep` process: options that would
oversubscribe the machine, output folders that cannot be written, names that are not UTF-8."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import npu_ep
from conftest import ROOT
from npu_ep.errors import NpuEpError
from npu_ep.session import cpu_cores

SAMPLE = ROOT / "samples" / "hello.flac"


def npu_ep_cli(*args: str | bytes, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "npu_ep", *args], capture_output=True, cwd=cwd,
                          env={**os.environ, "PYTHONIOENCODING": "utf-8"})


def test_more_threads_than_cores_are_capped_with_one_line(tiny_en_dir: Path) -> None:
    result = npu_ep_cli("transcribe", "--threads", "999", "--model", str(tiny_en_dir), "--quiet", str(SAMPLE))
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    cores = cpu_cores()
    assert stderr.count(f"--threads 999 is more than the {cores} CPU cores here; using {cores}") == 1, stderr
    assert result.stdout.strip()
    pipeline = npu_ep.Pipeline(tiny_en_dir, threads=999)
    assert pipeline.model.encoder.get_session_options().intra_op_num_threads == cores


def test_threads_that_are_not_a_count_are_refused(tiny_en_dir: Path) -> None:
    with pytest.raises(NpuEpError, match="threads 0: must be a whole number"):
        npu_ep.Pipeline(tiny_en_dir, threads=0)


def test_an_output_folder_that_cannot_be_written_is_refused_before_any_work(tiny_en_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    # Immutable: even root cannot create files in it (a read-only folder would not stop root).
    if subprocess.run(["chattr", "+i", str(out)], capture_output=True).returncode != 0:
        pytest.skip("this file system has no immutable attribute")
    try:
        result = npu_ep_cli("transcribe", "--model", str(tiny_en_dir), "--output-dir", str(out), str(SAMPLE))
    finally:
        subprocess.run(["chattr", "-i", str(out)], check=True)
    stderr = result.stderr.decode()
    assert result.returncode == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and f"{out}: cannot write the output folder" in lines[0], stderr
    assert "realtime" not in stderr  # nothing was transcribed first
