"""`npu-ep serve` as a client meets it: a real uvicorn server on a loopback port, OpenAI's own client,
httpx for raw requests, and the page in a headless Chromium."""
from __future__ import annotations

import concurrent.futures
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from conftest import ROOT

KEY = "test-key"
JFK_WORDS = "and so my fellow americans ask not what your country can do for you ask what you can do for your country"


def words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z' ]", " ", text.lower()).split())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`npu-ep serve ARGS` in its own process, its uploads in a private temporary folder."""

    def __init__(self, args: list[str], tmp: Path, key: str | None = KEY) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.key = key
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(ROOT)}
        command = [sys.executable, "-m", "npu_ep", "serve", "--port", str(self.port), *args]
        if key:
            command += ["--api-key", key]
        self.log = open(tmp / "server.log", "wb")
        self.process = subprocess.Popen(command, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (tmp / "server.log").read_text()
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise AssertionError("the server did not start:\n" + (tmp / "server.log").read_text())

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}

    def post(self, files: dict | None = None, data: dict | None = None, path: str = "transcriptions", **kwargs) -> httpx.Response:
        return httpx.post(f"{self.url}/v1/audio/{path}", files=files, data=data, headers=self.headers,
                          timeout=kwargs.pop("timeout", 300), **kwargs)

    def health(self) -> dict:
        return httpx.get(f"{self.url}/health", timeout=10).json()

    def uploads_left(self) -> list[Path]:
        return [p for folder in self.tmp.glob("npu-ep-uploads-*") for p in folder.iterdir()]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


@pytest.fixture(scope="module")
def tiny_server(tiny_en_dir, tmp_path_factory):
    """tiny.en behind an API key, a 2 MB upload limit (jfk is 1.2 MB)."""
    server = Server(["--model", str(tiny_en_dir), "--max-upload-mb", "2"], tmp_path_factory.mktemp("tiny-server"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory, jfk_path) -> Path:
    """jfk and the four shipped clips, then again in reverse order, half a second apart: 74 s of
    speech (3 windows), a decode long enough to watch. (One clip repeated back to back would send
    the decoder into its temperature fallback on every window.)"""
    import soundfile as sf
    import soxr

    def mono16k(path: Path) -> np.ndarray:
        samples, rate = sf.read(path, dtype="float32")
        return soxr.resample(samples.mean(axis=1) if samples.ndim > 1 else samples, rate, 16000)

    clips = [mono16k(jfk_path)] + [mono16k(ROOT / "samples" / f"{name}.flac") for name in ("hello", "library", "meeting", "weather")]
    gap = np.zeros(8000, dtype=np.float32)
    path = tmp_path_factory.mktemp("long") / "long.flac"
    sf.write(path, np.concatenate([part for clip in clips + clips[::-1] for part in (clip, gap)]), 16000, subtype="PCM_16")
    return path


def client(server: Server):
    import openai

    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.key, max_retries=0, timeout=300)


# ---------------------------------------------------------------- OpenAI's client, every format


@pytest.mark.parametrize("fmt", ["json", "text", "srt", "vtt", "verbose_json"])
def test_openai_client_gets_the_transcript_in_each_format(tiny_server, jfk_path, fmt):
    with open(jfk_path, "rb") as audio:
        result = client(tiny_server).audio.transcriptions.create(model="whisper-1", file=audio, response_format=fmt)
    if fmt == "json":
        assert words(result.text) == JFK_WORDS
    elif fmt == "verbose_json":
        assert words(result.text) == JFK_WORDS
        assert result.language == "en" and result.duration == pytest.approx(11.0, abs=0.1)
        assert words(" ".join(s.text for s in result.segments)) == JFK_WORDS
        assert all(0 <= s.start < s.end <= result.duration for s in result.segments)
    elif fmt == "text":
        assert words(result) == JFK_WORDS
    else:
        cues = re.findall(r"(\d\d:\d\d:\d\d[.,]\d{3}) --> (\d\d:\d\d:\d\d[.,]\d{3})\n(.+)", result)
        assert cues and words(" ".join(c[2] for c in cues)) == JFK_WORDS
        assert result.startswith("WEBVTT") == (fmt == "vtt")
        assert ("," in cues[0][0]) == (fmt == "srt")
    assert not tiny_server.uploads_left()


def test_openai_client_streams_segments(tiny_server, jfk_path):
    with open(jfk_path, "rb") as audio:
        events = list(client(tiny_server).audio.transcriptions.create(model="tiny.en", file=audio, stream=True))
    deltas = [e for e in events if e.type == "transcript.text.delta"]
    assert len(deltas) >= 2 and events[-1].type == "transcript.text.done"
    assert "".join(d.delta for d in deltas) == events[-1].text
    assert words(events[-1].text) == JFK_WORDS


def test_models_and_health(tiny_server):
    models = client(tiny_server).models.list()
    assert {m.id for m in models.data} == {"tiny.en", "whisper-1"}
    health = tiny_server.health()  # open without the key: for monitors
    assert health["status"] == "ok" and health["models"] == ["tiny.en"] and health["workers"] >= 1


def test_segment_granularity_and_prompt(tiny_server, jfk_path):
    with open(jfk_path, "rb") as audio:
        result = client(tiny_server).audio.transcriptions.create(
            model="whisper-1", file=audio, response_format="verbose_json", timestamp_granularities=["segment"],
            prompt="President Kennedy's inaugural address.")
    assert words(result.text) == JFK_WORDS


def test_word_granularity_gives_the_words_with_their_times(tiny_server, jfk_path):
    with open(jfk_path, "rb") as audio:
        result = client(tiny_server).audio.transcriptions.create(
            model="whisper-1", file=audio, response_format="verbose_json", timestamp_granularities=["word"])
    assert words(result.text) == JFK_WORDS
    assert words(" ".join(w.word for w in result.words)) == JFK_WORDS
    assert all(w.start < w.end for w in result.words)
    assert all(a.start <= b.start for a, b in zip(result.words, result.words[1:]))
    americans = next(w for w in result.words if "Americans" in w.word)
    assert americans.start < 1.8 < americans.end


# ---------------------------------------------------------------- bad input: status and OpenAI's error body


def _error(response: httpx.Response, status: int, param: str | None) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["param"] == param
    assert "Traceback" not in error["message"] and "\n" not in error["message"]
    return error["message"]


def test_bad_inputs_get_status_and_error_body(tiny_server, jfk_path, tmp_path):
    jfk = jfk_path.read_bytes()
    cases = [
        ({"file": ("empty.wav", b"")}, {}, 400, "file", "empty"),
        ({"file": ("notes.wav", b"these are not samples " * 50)}, {}, 400, "file", "notes.wav"),
        ({"file": ("cut.flac", jfk[: len(jfk) // 3])}, {}, 400, "file", "cut.flac"),
        ({"file": ("notes.wav", b"these are not samples " * 50)}, {"stream": "true"}, 400, "file", "notes.wav"),
        ({"file": ("big.flac", jfk * 2)}, {}, 413, "file", "upload limit"),
        ({"file": ("jfk.flac", jfk)}, {"model": "whisper-9"}, 404, "model", "whisper-9"),
        ({"file": ("jfk.flac", jfk)}, {"response_format": "docx"}, 400, "response_format", "docx"),
        ({"file": ("jfk.flac", jfk)}, {"temperature": "warm"}, 400, "temperature", "warm"),
        ({"file": ("jfk.flac", jfk)}, {"temperature": "1.5"}, 400, "temperature", "1.5"),
        (None, {"model": "whisper-1"}, 400, "file", "no `file`"),
        ({"file": ("jfk.flac", jfk)}, {"language": "xx"}, 400, "language", "English-only"),
        ({"file": ("jfk.flac", jfk)}, {"stream": "maybe"}, 400, "stream", "maybe"),
        ({"file": ("jfk.flac", jfk)}, {"response_format": "json", "timestamp_granularities[]": "word"}, 400,
         "timestamp_granularities", "verbose_json"),
    ]
    for files, data, status, param, needle in cases:
        if files is None:  # a form without the file part
            response = httpx.post(f"{tiny_server.url}/v1/audio/transcriptions", files={"model": (None, "whisper-1")},
                                  headers=tiny_server.headers, timeout=60)
        else:
            response = tiny_server.post(files=files, data=data)
        assert needle in _error(response, status, param), (files and list(files.values())[0][0], data)
    assert not tiny_server.uploads_left()


def test_truncated_flac_names_the_client_file_not_the_server_path(tiny_server, jfk_path):
    cut = jfk_path.read_bytes()[:400_000]
    message = _error(tiny_server.post(files={"file": ("../../etc/cut.flac", cut)}), 400, "file")
    assert message.startswith("cut.flac:") and str(tiny_server.tmp) not in message


def test_upload_without_length_is_cut_at_the_limit(tiny_server):
    sent = []

    def body():  # chunked transfer: no Content-Length to refuse up front, the limit holds while reading
        boundary = b"--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n"
        yield boundary
        for _ in range(40):
            sent.append(1)
            yield b"\0" * 100_000
        yield b"\r\n--x--\r\n"

    response = httpx.post(f"{tiny_server.url}/v1/audio/transcriptions", content=body(), timeout=60,
                          headers={**tiny_server.headers, "Content-Type": "multipart/form-data; boundary=x"})
    _error(response, 413, "file")
    assert not tiny_server.uploads_left()


def test_wrong_or_missing_key_is_401(tiny_server, jfk_path):
    import openai

    with open(jfk_path, "rb") as audio, pytest.raises(openai.AuthenticationError) as raised:
        openai.OpenAI(base_url=f"{tiny_server.url}/v1", api_key="wrong", max_retries=0).audio.transcriptions.create(
            model="whisper-1", file=audio)
    assert raised.value.status_code == 401 and "API key" in raised.value.body["message"]
    _error(httpx.get(f"{tiny_server.url}/v1/models"), 401, None)


def test_unknown_route_and_non_form_body(tiny_server):
    _error(httpx.get(f"{tiny_server.url}/v1/nothing", headers=tiny_server.headers), 404, None)
    _error(httpx.post(f"{tiny_server.url}/v1/audio/transcriptions", json={"file": "x"}, headers=tiny_server.headers),
           400, "file")


def test_other_address_without_key_is_refused():
    result = subprocess.run([sys.executable, "-m", "npu_ep", "serve", "--host", "0.0.0.0", "--port", str(free_port())],
                            capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "--api-key" in result.stderr and "0.0.0.0" in result.stderr


# ---------------------------------------------------------------- concurrency


@pytest.fixture(scope="module")
def busy_server(tiny_en_dir, tmp_path_factory):
    """One worker and room for one waiting request, to fill up on purpose."""
    server = Server(["--model", str(tiny_en_dir), "--workers", "1", "--threads", "1", "--queue-size", "1"],
                    tmp_path_factory.mktemp("busy-server"), key=None)
    yield server
    server.stop()


def _wait_for(condition, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_health_answers_during_a_long_decode_and_a_full_queue_is_429(busy_server, long_clip, jfk_path):
    audio = long_clip.read_bytes()

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        running = pool.submit(busy_server.post, files={"file": ("long.flac", audio)})
        assert _wait_for(lambda: busy_server.health()["running"] == 1)
        # Answered mid-decode, and again: a loop blocked by inference would answer only once it ended.
        assert busy_server.health()["running"] == 1 and not running.done()
        waiting = pool.submit(busy_server.post, files={"file": ("jfk.flac", jfk_path.read_bytes())})
        assert _wait_for(lambda: busy_server.health()["waiting"] == 1)
        _error(busy_server.post(files={"file": ("jfk.flac", jfk_path.read_bytes())}), 429, None)
        assert running.result().status_code == 200 and words(waiting.result().json()["text"]) == JFK_WORDS
    assert words(running.result().json()["text"]).startswith(JFK_WORDS)
    assert not busy_server.uploads_left()


def test_client_that_leaves_cancels_its_work(busy_server, long_clip):
    before = busy_server.health()
    audio = long_clip.read_bytes()
    with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes its connection
        busy_server.post(files={"file": ("long.flac", audio)}, timeout=httpx.Timeout(60, read=1.5))
    assert _wait_for(lambda: busy_server.health()["cancelled"] == before["cancelled"] + 1, timeout=120)
    health = busy_server.health()
    assert health["running"] == 0 and health["completed"] == before["completed"]
    # "cancelled", not "completed": the worker stopped with windows of the clip still undecoded.
    assert not busy_server.uploads_left()


def test_time_limit_is_504(tiny_en_dir, long_clip, tmp_path):
    server = Server(["--model", str(tiny_en_dir), "--workers", "1", "--time-limit", "1"], tmp_path, key=None)
    try:
        message = _error(server.post(files={"file": ("long.flac", long_clip.read_bytes())}), 504, None)
        assert "--time-limit" in message
        assert _wait_for(lambda: server.health()["running"] == 0 and not server.uploads_left())
    finally:
        server.stop()


def test_concurrent_requests_each_get_their_own_text(tiny_en_dir, jfk_path, tmp_path):
    """32 requests at once, alternating two short clips: each answer is the one its clip gets alone,
    so no request sees another's result. (The latency, throughput and memory figures come from
    scripts/serve_load.py, not from a test.)"""
    import soundfile as sf

    samples, rate = sf.read(jfk_path, dtype="float32")
    opening = tmp_path / "opening.wav"
    sf.write(opening, samples[: int(rate * 3.5)], rate)
    clips = [("opening.wav", opening.read_bytes()), ("library.flac", (ROOT / "samples" / "library.flac").read_bytes())]
    server = Server(["--model", str(tiny_en_dir), "--workers", "2", "--threads", "1"], tmp_path / "server", key=None)
    try:
        alone = [server.post(files={"file": clip}).json()["text"] for clip in clips]
        assert words(alone[0]) == "and so my fellow americans" and alone[0] != alone[1]
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            answers = list(pool.map(lambda i: server.post(files={"file": clips[i % 2]}, timeout=900), range(32)))
        assert [a.status_code for a in answers] == [200] * 32
        assert [a.json()["text"] for a in answers] == [alone[i % 2] for i in range(32)]
        assert server.health()["completed"] == 34 and not server.uploads_left()
    finally:
        server.stop()


# ---------------------------------------------------------------- the page, in a real headless Chromium


def test_page_transcribes_an_uploaded_file(tiny_server, jfk_path, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1000,800"):
        options.add_argument(flag)
    # The system's chromedriver, named explicitly: Selenium Manager never runs (nothing is downloaded).
    driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)
    try:
        driver.get(tiny_server.url + "/")
        key = driver.find_element(By.ID, "key")
        key.send_keys(KEY)
        driver.execute_script("arguments[0].dispatchEvent(new Event('change'))", key)
        WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#model option"))
        driver.find_element(By.ID, "file").send_keys(str(jfk_path))
        WebDriverWait(driver, 120).until(lambda d: d.find_element(By.ID, "status").text.startswith(("Done", "The server"))
                                         or "error" in d.find_element(By.ID, "status").get_attribute("class"))
        assert driver.find_element(By.ID, "status").text.startswith("Done"), driver.find_element(By.ID, "status").text
        segments = driver.find_elements(By.CSS_SELECTOR, "#transcript .segment")
        assert len(segments) >= 2
        assert all(re.match(r"\d\d:\d\d\S", s.text) for s in segments)  # each line starts with its time
        assert words(" ".join(s.text[5:] for s in segments)) == JFK_WORDS
        assert driver.find_element(By.ID, "srt").get_attribute("href").startswith("blob:")
        driver.save_screenshot(str(Path(os.environ.get("NPU_EP_SCREENSHOT", tmp_path / "page.png"))))
    finally:
        driver.quit()


# ---------------------------------------------------------------- the README's examples, as written


def _readme_blocks(language: str) -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### `npu-ep serve`", 1)[1].split("\n### ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)


def test_readme_examples_work_as_written(busy_server, jfk_path, tmp_path):
    (tmp_path / "talk.flac").write_bytes(jfk_path.read_bytes())
    address = busy_server.url.removeprefix("http://")
    curls = [line for block in _readme_blocks("sh") for line in block.splitlines() if line.startswith("curl ")]
    assert len(curls) == 2
    outputs = [subprocess.run(line.replace("127.0.0.1:8000", address), shell=True, cwd=tmp_path, capture_output=True,
                              text=True, timeout=300, check=True).stdout for line in curls]
    assert words(httpx.Response(200, content=outputs[0]).json()["text"]) == JFK_WORDS
    assert outputs[1].startswith("1\n00:00:00,000 --> ") and words(re.sub(r".*-->.*|^\d+$", "", outputs[1], flags=re.M)) == JFK_WORDS
    (python,) = _readme_blocks("python")
    result = subprocess.run([sys.executable, "-c", python.replace("127.0.0.1:8000", address)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300, check=True)
    assert words(result.stdout) == JFK_WORDS
