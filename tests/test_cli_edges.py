"""The transcription command at its edges, each case in a real `npu-ep` process: options that would
oversubscribe the machine, output folders that cannot be written, names that are not UTF-8, pipes and
devices, unreadable files, noise that only looks like mp3."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
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


def _error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.decode().splitlines() if line.strip()]


def test_a_name_that_is_not_utf8_fails_alone_in_one_line(tiny_en_dir: Path, tmp_path: Path) -> None:
    bad = os.fsencode(tmp_path) + b"/bad\xffname.flac"
    with open(bad, "wb") as handle:
        handle.write(b"not audio at all" * 100)
    result = npu_ep_cli("transcribe", "--model", str(tiny_en_dir), "--quiet", bad, str(SAMPLE))
    lines = _error_lines(result)
    assert result.returncode == 2
    assert len(lines) == 1 and "bad\\xffname.flac: not a readable audio file" in lines[0], lines
    assert "hello" in result.stdout.decode().lower()  # the good file after it still ran


def test_a_good_file_with_a_name_that_is_not_utf8_is_transcribed(tiny_en_dir: Path, tmp_path: Path) -> None:
    bad = os.fsencode(tmp_path) + b"/good\xffname.flac"
    with open(bad, "wb") as handle:
        handle.write(SAMPLE.read_bytes())
    result = npu_ep_cli("transcribe", "--model", str(tiny_en_dir), "--quiet", bad)
    assert result.returncode == 0, result.stderr.decode()
    assert "hello" in result.stdout.decode().lower()


def test_pipes_and_devices_are_refused_in_one_line_without_blocking(tiny_en_dir: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.wav"
    os.mkfifo(fifo)
    result = subprocess.run([sys.executable, "-m", "npu_ep", "transcribe", "--model", str(tiny_en_dir), "--quiet",
                             str(fifo), "/dev/zero", str(SAMPLE)], capture_output=True, cwd=ROOT, timeout=300)
    lines = _error_lines(result)
    assert result.returncode == 2
    assert lines == [f"npu-ep: error: {fifo}: pipes and devices are not supported (save the audio to a file first)",
                     "npu-ep: error: /dev/zero: pipes and devices are not supported (save the audio to a file first)"]
    assert "hello" in result.stdout.decode().lower()


def test_an_unreadable_file_says_permission_denied(tiny_en_dir: Path, tmp_path: Path) -> None:
    locked = tmp_path / "locked.flac"
    locked.write_bytes(SAMPLE.read_bytes())
    locked.chmod(0)
    # Root reads any file; without the capabilities that let it, root is denied like any owner of a 000 file.
    drop = "-dac_override,-dac_read_search"
    as_plain_owner = ["setpriv", f"--inh-caps={drop}", f"--bounding-set={drop}"] if os.geteuid() == 0 else []
    if as_plain_owner and shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to drop root's file capabilities")
    result = subprocess.run([*as_plain_owner, sys.executable, "-m", "npu_ep", "transcribe", "--model", str(tiny_en_dir),
                             "--quiet", str(locked), str(SAMPLE)], capture_output=True, cwd=ROOT, timeout=300)
    lines = _error_lines(result)
    assert result.returncode == 2
    assert lines == [f"npu-ep: error: permission denied: {locked} (make it readable, e.g. chmod a+r)"], lines
    assert "hello" in result.stdout.decode().lower()


def test_random_bytes_named_mp3_give_one_line_and_no_decoder_noise(tiny_en_dir: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    names = []
    for index in range(4):
        # Frame sync words scattered through noise: what makes libmpg123 try, resync and print its notes.
        data = bytearray(rng.integers(0, 256, 20000, dtype=np.uint8).tobytes())
        for at in rng.integers(0, len(data) - 4, 40):
            data[at:at + 4] = b"\xff\xfb\x90\x64"
        (tmp_path / f"noise{index}.mp3").write_bytes(bytes(data))
        names.append(str(tmp_path / f"noise{index}.mp3"))
    result = npu_ep_cli("transcribe", "--model", str(tiny_en_dir), "--quiet", *names)
    lines = _error_lines(result)
    assert all(line.startswith("npu-ep: error: ") for line in lines), lines
    assert not any("Note:" in line or "libmpg123" in line or "Traceback" in line for line in lines), lines
    assert len(lines) <= len(names)


def test_a_beam_size_out_of_range_is_refused_before_the_model_loads(tmp_path: Path) -> None:
    # A model folder that does not exist: the option's error must come first, naming the CLI flag.
    result = npu_ep_cli("transcribe", "--model", str(tmp_path / "no-model"), "--beam-size", "1000", str(SAMPLE))
    assert result.returncode == 2
    assert _error_lines(result) == ["npu-ep: error: --beam-size 1000: must be between 1 and 64"]
