"""Whisper's tokenizer over `tokenizers`, with its special tokens read from the model folder."""
from __future__ import annotations

import json
import string
from pathlib import Path

from npu_ep.errors import NpuEpError
from npu_ep.whisper.spec import LANGUAGE_TOKEN, MAX_INITIAL_TIMESTAMP_INDEX, NO_SPEECH_OLD, SPECIAL_TOKENS, is_multilingual

# Written without spaces between words: their words are split at character boundaries instead.
_UNSPACED_LANGUAGES = {"zh", "ja", "th", "lo", "my", "yue"}


class WhisperTokenizer:
    """Text <-> token ids, plus the ids of Whisper's control tokens (start, language, task, timestamps)."""

    def __init__(self, model_dir: Path) -> None:
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        generation_path = model_dir / "generation_config.json"
        generation = json.loads(generation_path.read_text()) if generation_path.exists() else {}

        def special(*names: str) -> int:
            for name in names:
                token_id = self._tokenizer.token_to_id(name)
                if token_id is not None:
                    return token_id
            raise NpuEpError(f"{model_dir / 'tokenizer.json'}: no {names[0]} token (re-export the model)")

        self.eot = special(SPECIAL_TOKENS["eot"])
        self.sot = special(SPECIAL_TOKENS["sot"])
        self.sot_prev = special(SPECIAL_TOKENS["sot_prev"])
        self.no_speech = special(SPECIAL_TOKENS["no_speech"], NO_SPEECH_OLD)
        self.no_timestamps = generation.get("no_timestamps_token_id") or special(SPECIAL_TOKENS["no_timestamps"])
        # Timestamp tokens <|0.00|> ... <|30.00|> follow <|notimestamps|> and are not all in tokenizer.json.
        self.timestamp_begin = self.no_timestamps + 1
        task_to_id = generation.get("task_to_id") or {}
        self.transcribe = task_to_id.get("transcribe") or special(SPECIAL_TOKENS["transcribe"])
        self.translate = task_to_id.get("translate") or special(SPECIAL_TOKENS["translate"])
        vocab_size = json.loads((model_dir / "config.json").read_text())["vocab_size"]
        self.multilingual = bool(generation.get("is_multilingual", is_multilingual(vocab_size)))
        # Language tokens sit between <|startoftranscript|> and <|translate|>: look up those ids only (the
        # whole vocabulary as a dict costs a tenth of a second of every model load).
        lang_to_id = generation.get("lang_to_id") or {
            token: token_id
            for token_id in range(self.sot + 1, self.translate)
            if (token := self._tokenizer.id_to_token(token_id)) is not None and LANGUAGE_TOKEN.match(token)
        }
        self.languages = {token[2:-2]: token_id for token, token_id in sorted(lang_to_id.items(), key=lambda kv: kv[1])}
        # Decoding rules of the checkpoint: never-sampled tokens (symbols, speaker tags), tokens barred as the
        # first one (a blank, end of text), and how late the first timestamp may come (0.02 s units).
        self.suppress_tokens: list[int] = [t for t in generation.get("suppress_tokens") or [] if t >= 0]
        self.max_initial_timestamp_index: int = generation.get("max_initial_timestamp_index", MAX_INITIAL_TIMESTAMP_INDEX)

    def sot_sequence(self, language: str | None, task: str) -> list[int]:
        """The decoder's opening tokens: <|startoftranscript|> [<|lang|> <|task|>] on multilingual models."""
        if not self.multilingual:
            return [self.sot]
        return [self.sot, self.languages[language or "en"], self.translate if task == "translate" else self.transcribe]

    def check_language(self, language: str | None, task: str) -> None:
        """Raise a user error for a language or task this model cannot do."""
        if not self.multilingual:
            if language not in (None, "en"):
                raise NpuEpError(f"--language {language}: this model is English-only (use a multilingual model, e.g. --model base)")
            if task == "translate":
                raise NpuEpError("--task translate: this model is English-only (use a multilingual model, e.g. --model base)")
        elif language is not None and language not in self.languages:
            known = ", ".join(list(self.languages)[:12])
            raise NpuEpError(f"--language {language}: unknown language code (use one of {known}, ... ({len(self.languages)} in all))")

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, tokens: list[int]) -> str:
        """The text of `tokens`, ignoring control and timestamp tokens."""
        return self._tokenizer.decode([t for t in tokens if t < self.eot], skip_special_tokens=False)

    def split_to_word_tokens(self, tokens: list[int], language: str | None) -> tuple[list[str], list[list[int]]]:
        """`tokens` grouped into words, as openai/whisper groups them for word timestamps: a word starts at
        a leading space, a punctuation mark or a control token (so punctuation stands alone, to be merged
        later); languages written without spaces split at every whole character."""
        pieces, piece_tokens = self._split_on_characters(tokens)
        if language in _UNSPACED_LANGUAGES:
            return pieces, piece_tokens
        words: list[str] = []
        word_tokens: list[list[int]] = []
        for piece, ids in zip(pieces, piece_tokens):
            if not words or ids[0] >= self.eot or piece.startswith(" ") or piece.strip() in string.punctuation:
                words.append(piece)
                word_tokens.append(list(ids))
            else:
                words[-1] += piece
                word_tokens[-1].extend(ids)
        return words, word_tokens

    def _split_on_characters(self, tokens: list[int]) -> tuple[list[str], list[list[int]]]:
        """Runs of tokens that each decode to whole characters (a character's UTF-8 bytes may span tokens)."""
        full = self.decode(tokens)
        pieces: list[str] = []
        piece_tokens: list[list[int]] = []
        pending: list[int] = []
        offset = 0
        for token in tokens:
            pending.append(token)
            text = self.decode(pending)
            broken = text.find("\ufffd")
            # An incomplete character decodes to U+FFFD; a real U+FFFD in the text is kept as one.
            if broken < 0 or full[offset + broken : offset + broken + 1] == "\ufffd":
                pieces.append(text)
                piece_tokens.append(pending)
                pending = []
                offset += len(text)
        return pieces, piece_tokens
