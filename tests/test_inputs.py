"""Inputs through PyAV: other containers and codecs, video files, standard input, broken media (CLI runs)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest


def _encode(source: Path, target: Path, codec: str, video: bool = False) -> Path:
    """`source`'s audio re-encoded with PyAV into `target` (with a moving test picture when `video`)."""
    import av
    import numpy as np

    with av.open(str(source)) as reader, av.open(str(target), "w") as writer:
        audio_in = reader.streams.audio[0]
        audio_out = writer.add_stream(codec, rate=48000 if codec == "libopus" else audio_in.rate)
        audio_out.bit_rate = 192_000
        picture = None
        if video:
            picture = writer.add_stream("mpeg4", rate=10)
            picture.width, picture.height, picture.pix_fmt = 64, 48, "yuv420p"
        resampler = av.AudioResampler(format=audio_out.codec_context.format.name, layout="mono", rate=audio_out.rate)
        shown = heard = 0.0
        for frame in reader.decode(audio_in):
            frame.pts = None
            heard += frame.samples / frame.sample_rate
            for piece in resampler.resample(frame):
                writer.mux(audio_out.encode(piece))
            while picture is not None and shown <= heard:
                image = np.full((48, 64, 3), int(shown * 20) % 256, dtype=np.uint8)
                writer.mux(picture.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
                shown += 0.1
        writer.mux(audio_out.encode(None))
        if picture is not None:
            writer.mux(picture.encode(None))
    return target


def _words(text: bytes) -> list[str]:
    """The transcript's words, lower-case and without punctuation (lossy codecs may move a comma)."""
    return re.sub(r"[^a-z' ]", " ", text.decode().lower()).split()


def _transcribe(model: Path, *files: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "npu_ep", "transcribe", *files, "--model", str(model), "--quiet"],
                          input=stdin, capture_output=True, timeout=600)


@pytest.fixture(scope="module")
def media(tmp_path_factory, jfk_path: Path) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("media")
    wav = folder / "jfk.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(jfk_path), str(wav)], check=True)
    return {
        "wav": wav,
        "m4a": _encode(wav, folder / "jfk.m4a", "aac"),
        "mp4": _encode(wav, folder / "video.mp4", "aac", video=True),
        "webm": _encode(wav, folder / "jfk.webm", "libopus"),
    }


def test_containers_video_and_stdin_give_the_wav_text(tiny_en_dir: Path, media: dict[str, Path]) -> None:
    import av

    with av.open(str(media["mp4"])) as container:
        assert container.streams.video and container.streams.audio
    reference = _transcribe(tiny_en_dir, str(media["wav"]))
    assert reference.returncode == 0 and b"Americans" in reference.stdout
    for kind in ("m4a", "mp4", "webm"):
        run = _transcribe(tiny_en_dir, str(media[kind]))
        assert (run.returncode, _words(run.stdout), run.stderr) == (0, _words(reference.stdout), b""), kind
    piped = _transcribe(tiny_en_dir, "-", stdin=media["webm"].read_bytes())
    assert (piped.returncode, _words(piped.stdout), piped.stderr) == (0, _words(reference.stdout), b"")


def test_broken_media_is_one_line_naming_the_file(tiny_en_dir: Path, media: dict[str, Path], tmp_path: Path) -> None:
    truncated = tmp_path / "cut.m4a"
    truncated.write_bytes(media["m4a"].read_bytes()[:3000])
    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video\n")
    silent_video = tmp_path / "mute.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=5:duration=1",
                    str(silent_video)], check=True)
    run = _transcribe(tiny_en_dir, str(truncated), str(fake), str(silent_video), str(media["wav"]))
    errors = run.stderr.decode().splitlines()
    assert run.returncode == 2 and b"Americans" in run.stdout  # the good file still transcribes
    assert len(errors) == 3, errors
    for line, path, problem in zip(errors, (truncated, fake, silent_video), ("not a readable", "not a readable", "no audio stream")):
        assert line.startswith(f"npu-ep: error: {path}: ") and problem in line
    empty_stdin = _transcribe(tiny_en_dir, "-", stdin=b"")
    assert empty_stdin.returncode == 2 and empty_stdin.stderr.decode().startswith("npu-ep: error: stdin: ")
