"""The package layering of npu_ep: every import, at any depth in a module (lazy ones included), goes
to a lower layer or stays inside its own unit. So no import runs upward, and none runs in a circle
between units. The README's "How it works" section draws the same order."""
from __future__ import annotations

import ast
from pathlib import Path

import npu_ep

ROOT = Path(npu_ep.__file__).parent

# Bottom first. A unit is a module or package prefix; the longest matching prefix names a module's unit.
# "npu_ep" is the package's own __init__ (the public API) only, so a new module must be placed here.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("npu_ep.errors", "npu_ep.paths", "npu_ep.machine")),
    ("model facts", ("npu_ep.whisper.spec", "npu_ep.kernels", "npu_ep.forms")),
    ("shared tools", ("npu_ep.model_folder", "npu_ep.metrics", "npu_ep.timing", "npu_ep.one_node", "npu_ep.cpu_attention",
                      "npu_ep.decoder_merge")),
    ("engines", ("npu_ep.export", "npu_ep.partition", "npu_ep.provider")),
    ("cost-model calibration", ("npu_ep.calibrate",)),
    ("session building", ("npu_ep.session",)),
    ("transcription", ("npu_ep.whisper",)),
    ("quantization", ("npu_ep.quantize",)),
    ("package commands", ()),
    ("front ends", ("npu_ep.batch", "npu_ep.bench", "npu_ep.info", "npu_ep.kernel_build", "npu_ep.server")),
    ("command line", ("npu_ep.cli",)),
    ("entry points", ("npu_ep.__main__", "npu_ep")),
]
# Each engine package's `command` module is its CLI front end: it parses arguments and calls across
# packages (the batch runner reuses the transcription command's options).
COMMANDS = ("npu_ep.export.command", "npu_ep.partition.command", "npu_ep.whisper.command")


def _unit(module: str) -> tuple[int, str]:
    if module in COMMANDS:
        return _rank("package commands"), module
    best = None
    for rank, (_, units) in enumerate(LAYERS):
        for unit in units:
            inside = module == unit or (unit != "npu_ep" and module.startswith(unit + "."))
            if inside and (best is None or len(unit) > len(best[1])):
                best = (rank, unit)
    assert best is not None, f"{module}: in no layer (add it to LAYERS)"
    return best


def _rank(name: str) -> int:
    return [layer for layer, _ in LAYERS].index(name)


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = ["npu_ep", *path.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, imported npu_ep module) for every import statement in the file, at any depth."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            # `from npu_ep.x import y` may import the submodule npu_ep.x.y: count the deeper one when it exists.
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    modules = _modules()
    resolved = []
    for line, name in found:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name.startswith("npu_ep"):
            resolved.append((line, name))
    return resolved


def test_every_module_is_in_a_layer():
    for module in _modules():
        _unit(module)


def test_no_import_runs_upward_or_sideways_between_units():
    wrong = []
    for module, path in sorted(_modules().items()):
        rank, unit = _unit(module)
        for line, target in _imports(module, path):
            target_rank, target_unit = _unit(target)
            if target_unit != unit and target_rank >= rank:
                wrong.append(f"{path.relative_to(ROOT.parent)}:{line}: {unit} ({LAYERS[rank][0]}) imports "
                             f"{target} ({LAYERS[target_rank][0]})")
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


def test_the_check_sees_an_upward_import(tmp_path):
    """The parser above finds lazy and relative imports: a provider module importing the partition
    pass inside a function is caught."""
    fake = tmp_path / "npu_ep" / "provider"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("def f():\n    from ..partition import planner\n    import npu_ep.session\n")
    found = [target for _, target in _imports("npu_ep.provider.bad", fake / "bad.py")]
    assert found == ["npu_ep.partition.planner", "npu_ep.session"]
    assert all(_unit(target)[0] >= _unit("npu_ep.provider.bad")[0] for target in found)
