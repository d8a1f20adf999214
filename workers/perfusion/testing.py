"""Helpers for building tiny seeded pipelines in tests and benchmarks (no downloads)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from transformers import CLIPTokenizer


def write_word_tokenizer(folder: Path, words: Sequence[str], max_length: int) -> CLIPTokenizer:
    """A CLIP BPE tokenizer over the 256 byte symbols plus whole-word merges for `words`."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    chars, extra = [], 0
    for b in range(256):
        chars.append(chr(b) if b in printable else chr(256 + extra))
        extra += b not in printable
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars])}
    merges: list[str] = []
    for word in words:
        parts = [*word[:-1], word[-1] + "</w>"]
        while len(parts) > 1:
            merge = f"{parts[0]} {parts[1]}"
            if merge not in merges:
                merges.append(merge)
            parts = [parts[0] + parts[1], *parts[2:]]
            vocab.setdefault(parts[0], len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=max_length
    )
