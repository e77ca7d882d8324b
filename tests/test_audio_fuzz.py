"""A bounded fuzz run of the audio loader over mutated real files (scripts/fuzz_audio.py runs longer):
every case returns audio or raises the one-line NpuEpError, in its own process, under a time limit."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import fuzz_audio  # noqa: E402


def test_mutated_files_never_crash_hang_or_print_tracebacks(tmp_path: Path) -> None:
    seeds = fuzz_audio.make_seeds(ROOT / "samples" / "hello.flac", tmp_path)
    assert {fuzz_audio.run_case(seed, timeout=60)[0] for seed in seeds} == {"ok"}  # the seeds themselves load
    rng = np.random.default_rng(13)
    findings, outcomes = [], set()
    for index in range(48):
        seed = seeds[index % len(seeds)]
        case = tmp_path / f"case{index}{seed.suffix}"
        case.write_bytes(fuzz_audio.mutate(seed.read_bytes(), rng))
        outcome, detail = fuzz_audio.run_case(case, timeout=60)
        outcomes.add(outcome)
        if outcome not in ("ok", "error"):
            findings.append(f"{case.name}: {outcome}: {detail}")
    assert not findings, findings
    assert outcomes == {"ok", "error"}  # the mutations reach both: damage that decodes, and damage that is refused
