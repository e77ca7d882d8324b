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
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def normalize_text(text: str) -> list[str]:
    """Lower-case words with punctuation removed (apostrophes inside words kept)."""
    return _NON_WORD.sub(" ", text.lower()).split()


def _distance_table(ref: list[str], hyp: list[str]):
    """Edit distances between every prefix of `ref` (rows) and of `hyp` (columns), as a numpy array."""
    import numpy as np

    vocabulary = {word: index for index, word in enumerate(dict.fromkeys(ref + hyp))}
    hyp_ids = np.array([vocabulary[word] for word in hyp], dtype=np.int64)
    steps = np.arange(len(hyp) + 1)
    table = np.empty((len(ref) + 1, len(hyp) + 1), dtype=np.int32)
    table[0] = steps
    for i, word in enumerate(ref, 1):
        # Substitution or deletion from the row above, then insertions along the row (a running minimum).
        best = np.minimum(table[i - 1] + 1, np.concatenate(([i], table[i - 1, :-1] + (hyp_ids != vocabulary[word]))))
        table[i] = np.minimum.accumulate(best - steps) + steps
    return table


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference word count) after normalising both."""
    ref, hyp = normalize_text(reference), normalize_text(hypothesis)
    return int(_distance_table(ref, hyp)[-1, -1]), len(ref)


def errors_per_word(reference: str, hypothesis: str) -> list[int]:
    """The errors of one minimal alignment, charged to the reference words: a substitution or deletion to its
    word, an insertion to the reference word after it (the last one at the end). Sums to `word_errors`'s count;
    an empty reference gives []."""
    ref, hyp = normalize_text(reference), normalize_text(hypothesis)
    if not ref:
        return []
    table = _distance_table(ref, hyp)
    charged = [0] * len(ref)
    i, j = len(ref), len(hyp)
    while i > 0 or j > 0:
        if i > 0 and j > 0 and table[i, j] == table[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]):
            charged[i - 1] += int(ref[i - 1] != hyp[j - 1])
            i, j = i - 1, j - 1
        elif i > 0 and table[i, j] == table[i - 1, j] + 1:
            charged[i - 1] += 1
            i -= 1
        else:
            charged[min(i, len(ref) - 1)] += 1
            j -= 1
    return charged


def sentences(text: str) -> list[str]:
    """`text` cut after each sentence's end (., ! or ? before a space): the units a WER interval resamples."""
    return [piece for piece in _SENTENCE_END.split(text.strip()) if piece]


def wer_difference_interval(pairs: Iterable[tuple[str, str, str]], confidence: float = 0.95, rounds: int = 2000,
                            seed: int = 0) -> tuple[float, float, float] | None:
    """(difference, low, high) of WER A − WER B in points over (reference, hypothesis A, hypothesis B) texts,
    with a paired bootstrap interval: the reference sentences, with the errors each system made on them, are
    drawn again with replacement. None without reference words. An empty reference (silence) counts as one
    unit of insertions."""
    import numpy as np

    units = []  # (errors A, errors B, reference words) per sentence
    for reference, first, second in pairs:
        a, b = errors_per_word(reference, first), errors_per_word(reference, second)
        if not a:
            units.append((len(normalize_text(first)), len(normalize_text(second)), 0))
            continue
        start = 0
        for sentence in sentences(reference):
            end = start + len(normalize_text(sentence))
            units.append((sum(a[start:end]), sum(b[start:end]), end - start))
            start = end
    counts = np.array(units, dtype=np.float64).reshape(-1, 3)
    if counts[:, 2].sum() == 0:
        return None
    draws = np.random.default_rng(seed).integers(0, len(counts), size=(rounds, len(counts)))
    totals = counts[draws].sum(axis=1)
    differences = 100.0 * (totals[:, 0] - totals[:, 1]) / np.maximum(totals[:, 2], 1)
    tail = 100.0 * (1 - confidence) / 2
    whole = counts.sum(axis=0)
    return (float(100.0 * (whole[0] - whole[1]) / whole[2]), float(np.percentile(differences, tail)),
            float(np.percentile(differences, 100 - tail)))


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
