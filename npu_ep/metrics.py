"""Word error rate on normalised text (lower case, punctuation stripped), and the reference texts it is
measured against, for tests, quantize and bench."""
from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

from npu_ep.errors import NpuEpError

# The name of a folder's references file (samples/ ships one), read by quantize's report and bench's suite.
REFERENCES_FILE = "references.json"
_REFERENCES_FORM = "a JSON object mapping audio file name -> transcript text"
_NON_WORD = re.compile(r"[^\w\s']|(?<!\w)'|'(?!\w)")


def normalize_text(text: str) -> list[str]:
    """Lower-case words with punctuation removed (apostrophes inside words kept)."""
    return _NON_WORD.sub(" ", text.lower()).split()


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference word count) after normalising both."""
    ref, hyp = normalize_text(reference), normalize_text(hypothesis)
    previous = list(range(len(hyp) + 1))
    for i, ref_word in enumerate(ref, 1):
        current = [i]
        for j, hyp_word in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref_word != hyp_word)))
        previous = current
    return previous[-1], len(ref)


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate in percent (0.0 for an empty reference and hypothesis)."""
    return corpus_wer([word_errors(reference, hypothesis)])


def corpus_wer(counts: Iterable[tuple[int, int]]) -> float:
    """Word error rate in percent over many (errors, reference words) pairs: all errors over all words."""
    errors = words = 0
    for file_errors, file_words in counts:
        errors, words = errors + file_errors, words + file_words
    return 100.0 * errors / max(words, 1)


def load_references(path: Path) -> dict[str, str]:
    """A references file ({audio file name or path: transcript}); any other content is a one-line NpuEpError."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NpuEpError(f"{path}: no such references file (give {_REFERENCES_FORM})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise NpuEpError(f"{path}: not a readable JSON references file: {reason} (make it {_REFERENCES_FORM})") from None
    if not isinstance(data, dict):
        raise NpuEpError(f"{path}: not a JSON object (make it {_REFERENCES_FORM})")
    wrong = next((name for name, text in data.items() if not isinstance(text, str)), None)
    if wrong is not None:
        raise NpuEpError(f"{path}: the entry for {wrong!r} is not text (make it {_REFERENCES_FORM})")
    return data
