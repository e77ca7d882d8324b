"""Which device runs offloaded nodes: pyxrt for a real NPU, the emulator module for "emulator",
and what "auto" means on this machine. Kept light: the CPU path imports this and nothing heavier."""
from __future__ import annotations

import importlib
import logging

log = logging.getLogger(__name__)
_said: set[str] = set()  # device choices already shown in this process


def xrt_module(device: str):
    """`pyxrt` for a real NPU, the emulator module for device="emulator"."""
    if device == "emulator":
        return importlib.import_module("npu_ep.provider.emulator")
    return importlib.import_module("pyxrt")


def npu_present() -> tuple[bool, str]:
    """(True, "") when pyxrt imports and opens device 0, else (False, why not)."""
    try:
        xrt = xrt_module("npu")
    except ImportError:
        return False, "pyxrt is not installed"
    try:
        xrt.device(0)
    except Exception as error:  # pyxrt raises RuntimeError subclasses with the driver's text
        return False, f"pyxrt sees no NPU ({error})"
    return True, ""


def resolve_device(device: str) -> str:
    """"auto" -> "npu" when pyxrt sees one, else "cpu" (said once per process)."""
    if device != "auto":
        return device
    present, why = npu_present()
    chosen = "npu" if present else "cpu"
    message = f"device auto -> {chosen}" + ("" if present else f" ({why})")
    if message not in _said:
        _said.add(message)
        log.info(message)
    return chosen
