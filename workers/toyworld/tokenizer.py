"""Generate a CLIP-style byte-level BPE vocabulary in which every world word is one token.

The files follow the layout of openai/clip-vit-large-patch14 (vocab.json, merges.txt), so
`CLIPTokenizer.from_pretrained` loads them and `add_tokens` works as with SD 1.5. Unknown words
still tokenize (into single bytes), never into <|endoftext|>.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import CLIPTokenizer

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
EOW = "</w>"


def _bytes_to_unicode() -> dict[int, str]:
    """The reversible byte -> printable character map of byte-level BPE (GPT-2, CLIP)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def _bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """Byte-pair-encode one (ASCII) word: repeatedly merge the best-ranked adjacent pair."""
    symbols = [*word[:-1], word[-1] + EOW]
    while len(symbols) > 1:
        pairs = [(ranks.get(p, len(ranks)), p) for p in zip(symbols, symbols[1:], strict=False)]
        rank, best = min(pairs)
        if rank == len(ranks):
            break
        merged: list[str] = []
        i = 0
        while i < len(symbols):
            if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                merged.append(symbols[i] + symbols[i + 1])
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    return symbols


def build_vocab(words: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary and merges: all bytes, all bytes ending a word, then merges that make each
    word one token. A merge learnt for one word can split another ("ri" of "ring" inside
    "triangle"), so merges are added until every word encodes whole."""
    chars = list(_bytes_to_unicode().values())
    tokens = chars + [c + EOW for c in chars]
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    changed = True
    while changed:
        changed = False
        for word in sorted(set(words)):
            pieces = _bpe(word, ranks)
            while len(pieces) > 1:
                pair = (pieces[0], pieces[1])
                ranks[pair] = len(merges)
                merges.append(pair)
                tokens.append(pair[0] + pair[1])
                changed = True
                pieces = _bpe(word, ranks)
    tokens += [BOS, EOS]
    vocab: dict[str, int] = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    return vocab, merges


def write_tokenizer(folder: Path, words: list[str], max_length: int) -> CLIPTokenizer:
    """Write vocab.json, merges.txt and tokenizer_config.json, and check every word is whole."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = build_vocab(words)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=0) + "\n")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": max_length,
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "pad_token": EOS,
        "do_lower_case": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    tokenizer = CLIPTokenizer.from_pretrained(folder)
    for word in words:
        pieces = tokenizer.tokenize(word)
        if pieces != [word + EOW]:
            raise RuntimeError(f"word {word!r} is not one token: {pieces}")
    return tokenizer
