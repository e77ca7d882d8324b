"""Word error rate on normalised text (lower case, punctuation stripped), for tests, quantize and bench."""
from __future__ import annotations

import re

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
    errors, words = word_errors(reference, hypothesis)
    return 100.0 * errors / max(words, 1)
