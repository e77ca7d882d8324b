"""Output formats (tsv, all) and output names that never overwrite each other (real CLI runs)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "npu_ep", "transcribe", *args, "--quiet"], capture_output=True,
                          timeout=600)


def test_tsv_and_all(tiny_en_dir: Path, jfk_path: Path, tmp_path: Path) -> None:
    tsv = _cli(str(jfk_path), "--model", str(tiny_en_dir), "--format", "tsv")
    assert tsv.returncode == 0, tsv.stderr.decode()
    header, *rows = tsv.stdout.decode().splitlines()
    assert header == "start\tend\ttext" and rows
    starts = [int(row.split("\t")[0]) for row in rows]
    assert starts == sorted(starts) and "Americans" in rows[0].split("\t")[2]

    run = _cli(str(jfk_path), "--model", str(tiny_en_dir), "--format", "all", "--output-dir", str(tmp_path / "out"))
    assert run.returncode == 0, run.stderr.decode()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"jfk.{f}" for f in ("json", "srt", "tsv", "txt", "vtt")]
    to_stdout = _cli(str(jfk_path), "--model", str(tiny_en_dir), "--format", "all")
    assert to_stdout.returncode == 2 and b"--output-dir" in to_stdout.stderr and len(to_stdout.stderr.splitlines()) == 1


def test_same_names_never_overwrite(tiny_en_dir: Path, jfk_path: Path, tmp_path: Path) -> None:
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(jfk_path, tmp_path / folder / "x.flac")
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "npu_ep", "transcribe", "a/x.flac", "b/x.flac", "--model",
                          str(tiny_en_dir), "--output-dir", str(out), "--quiet"], cwd=tmp_path, capture_output=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr.decode()
    assert (out / "a" / "x.txt").is_file() and (out / "b" / "x.txt").is_file()

    shutil.copy(jfk_path, tmp_path / "a" / "x.wav")
    clash = subprocess.run([sys.executable, "-m", "npu_ep", "transcribe", "a/x.flac", "a/x.wav", "--model",
                            str(tiny_en_dir), "--output-dir", str(tmp_path / "clash"), "--quiet"], cwd=tmp_path,
                           capture_output=True, timeout=600)
    message = clash.stderr.decode()
    assert clash.returncode == 2 and len(message.splitlines()) == 1
    assert "a/x.flac" in message and "a/x.wav" in message and not (tmp_path / "clash" / "a").exists()


def _cue_texts(subtitles: str) -> list[str]:
    """The cues of an srt or vtt document (a blank line ends each)."""
    return [cue for cue in subtitles.replace("WEBVTT\n\n", "", 1).split("\n\n") if cue.strip()]


def test_subtitles_on_stdout_come_as_segments_are_decoded(tiny_en_dir: Path, jfk_path: Path, tmp_path: Path) -> None:
    import numpy as np
    import soundfile

    from npu_ep.whisper.audio import SAMPLE_RATE, load_audio

    speech = load_audio(jfk_path)
    pause = np.zeros(3 * SAMPLE_RATE, dtype=np.float32)
    talk = tmp_path / "talk.wav"  # 8 x jfk: five 30 s windows, a dozen segments
    soundfile.write(talk, np.concatenate([speech, pause] * 8), SAMPLE_RATE)
    common = [str(talk), "--model", str(tiny_en_dir), "--word-timestamps", "True", "--max-line-width", "30",
              "--max-line-count", "2"]
    for fmt in ("srt", "vtt"):
        written = _cli(*common, "--format", fmt, "--output-dir", str(tmp_path / "out"))
        assert written.returncode == 0, written.stderr.decode()
        whole = (tmp_path / "out" / f"talk.{fmt}").read_text()
        assert whole.count("Americans") == 8
        printed = _cli(*common, "--format", fmt)
        assert printed.returncode == 0 and printed.stdout.decode() == whole

    # Stopped as soon as its first cue is out, a run has printed that cue and not yet the rest.
    run = subprocess.Popen([sys.executable, "-m", "npu_ep", "transcribe", *common, "--format", "srt", "--quiet"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        first = []
        while (line := run.stdout.readline()) not in ("\n", ""):
            first.append(line)
        run.kill()
        rest = run.stdout.read()
    finally:
        run.kill()
        run.wait()
    cues = _cue_texts((tmp_path / "out" / "talk.srt").read_text())
    assert "".join(first).strip() == cues[0]
    assert 1 <= len(_cue_texts("".join(first) + "\n" + rest)) < len(cues) // 2
