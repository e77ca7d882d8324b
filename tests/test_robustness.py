"""The provider under conditions a server meets: fallbacks on the session's threads, bugs that must not
hide behind a CPU fallback, a thread-safe import, and the private onnxruntime-extensions API it reads."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto

import npu_ep
from npu_ep.one_node import one_node_model
from npu_ep.partition.planner import offloaded_count
from npu_ep.provider import cpu_ops, emulator
from npu_ep.provider.xrt_backend import Backend, fingerprint
from npu_ep.session import create_session

ROOT = Path(__file__).resolve().parent.parent
M, D = 1500, 384

pytestmark = pytest.mark.usefixtures("reference_cpu", "clean_emulator")


def projection() -> onnx.ModelProto:
    """x[M, D] @ w[D, D]: a MatMul the cost model offloads under the tests' reference CPU figures."""
    w = np.random.default_rng(0).standard_normal((D, D), dtype=np.float32)
    return one_node_model("MatMul", [("x", TensorProto.FLOAT, [M, D])], TensorProto.FLOAT, {"w": w}, output_shape=[M, D])


@pytest.fixture
def fallback_threads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The intra-op thread count of every one-node fallback session opened during the test."""
    seen: list[int] = []
    real = ort.InferenceSession

    def spy(model, options=None, *args, **kwargs):
        graph = onnx.load_from_string(model).graph if isinstance(model, bytes) else None
        if graph is not None and len(graph.node) == 1 and graph.node[0].domain == "":
            seen.append(options.intra_op_num_threads)
        return real(model, options, *args, **kwargs)

    cpu_ops._session.cache_clear()  # sessions cached by earlier tests would not be opened again
    monkeypatch.setattr(cpu_ops.ort, "InferenceSession", spy)
    return seen


def test_fallbacks_of_a_session_run_on_its_threads(tmp_path, fallback_threads):
    path = tmp_path / "proj.onnx"
    onnx.save(projection(), str(path))
    session = create_session(path, "emulator", threads=1)
    emulator.inject_fault("error")  # the run fails: this node's CPU result
    x = np.ones((M, D), np.float32)
    session.run(None, {"x": x})
    assert session.npu_backend.warnings and fallback_threads == [1]


def test_fallbacks_of_session_options_run_on_its_threads(fallback_threads):
    partitioned = npu_ep.partition(projection(), device="xdna1")
    assert offloaded_count(partitioned) == 1
    session = ort.InferenceSession(partitioned.SerializeToString(), npu_ep.session_options("cpu", threads=1),
                                   providers=["CPUExecutionProvider"])
    session.run(None, {"x": np.ones((M, D), np.float32)})
    assert fallback_threads == [1]


def test_a_device_fault_falls_back_but_a_bug_propagates():
    a = np.ones((4, 8), np.float32)
    backend = Backend("emulator")
    emulator.inject_fault("no_device")  # the driver's RuntimeError: the CPU result, with a warning
    assert np.array_equal(backend.gemm("ok#k", "gemm-bf16-npu1", a, lambda: a.T, b"id", cpu=lambda: a @ a.T), a @ a.T)
    assert len(backend.warnings) == 1 and "No such device" in backend.warnings[0]  # (shown once per process)
    emulator.clear_faults()

    def broken_weight() -> np.ndarray:
        raise TypeError("a bug in the op's weight conversion")

    backend = Backend("emulator")
    with pytest.raises(TypeError, match="a bug"):
        backend.gemm("bug#k", "gemm-bf16-npu1", a, broken_weight, fingerprint(a), cpu=lambda: a @ a.T)
    assert backend.warnings == []  # and it was not reported as an NPU fault either


def test_the_provider_import_never_breaks_torch_for_other_threads():
    """While one thread imports the provider (which keeps torch and transformers out of
    onnxruntime-extensions), every other thread keeps seeing the real import system: no None in
    sys.modules, and a module import of its own that works."""
    code = textwrap.dedent("""
        import sys, threading
        seen, stop = [], threading.Event()

        def watch():
            while not stop.is_set():
                if sys.modules.get("torch", 0) is None or sys.modules.get("transformers", 0) is None:
                    seen.append("None in sys.modules")
                    return

        watcher = threading.Thread(target=watch)
        watcher.start()
        import npu_ep.provider.ops
        stop.set()
        watcher.join()
        assert not seen, seen
        assert "torch" not in sys.modules and "transformers" not in sys.modules  # still kept out
        import importlib.util
        assert importlib.util.find_spec("torch") is not None  # and importable afterwards
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_the_private_onnxruntime_extensions_api_the_provider_reads_is_there():
    """ops.py installs its own hook, which reads Opdef._odlist and Opdef.body/cast_attributes: private
    to onnxruntime-extensions, so pyproject pins the versions this was checked with."""
    import tomllib

    from packaging.requirements import Requirement

    from npu_ep.provider import ops

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned = next(Requirement(r) for r in project["dependencies"] if r.startswith("onnxruntime-extensions"))
    capped = any(spec.operator in ("<", "<=", "==", "~=") for spec in pinned.specifier)
    assert capped, "cap onnxruntime-extensions at the versions whose private Opdef API was checked"
    assert metadata.version("onnxruntime-extensions") in pinned.specifier
    assert isinstance(ops.Opdef._odlist, dict) and callable(ops.PyCustomOpDef.install_hooker)
    ours = {op.op_type: op for op in ops.Opdef._odlist.values() if op.op_type.startswith("Npu")}
    assert {"NpuMatMul", "NpuGemm", "NpuMatMulInteger", "NpuQdqMatMul"} <= set(ours)
    op = ours["NpuMatMul"]
    assert callable(op.body) and callable(op.cast_attributes)
    assert op.cast_attributes({"node_key": "k", "kernel": "none"}) == {"node_key": "k", "kernel": "none"}
