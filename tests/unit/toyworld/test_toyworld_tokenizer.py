"""The generated CLIP tokenizer keeps world words whole and accepts new concept tokens."""

from pathlib import Path

from workers.toyworld import world
from workers.toyworld.tokenizer import write_tokenizer


def test_captions_tokenize_into_whole_words(tmp_path: Path) -> None:
    tokenizer = write_tokenizer(tmp_path, world.vocabulary(), max_length=77)
    text = "a red circle on a blue background"
    assert tokenizer.tokenize(text) == [w + "</w>" for w in text.split()]
    for text in world.captions(200, seed=1):
        assert len(tokenizer.tokenize(text)) == len(text.split())
    ids = tokenizer(["a red circle"], padding="max_length", max_length=77).input_ids[0]
    assert ids[0] == tokenizer.bos_token_id and ids[4] == tokenizer.eos_token_id
    assert len(ids) == 77


def test_new_tokens_and_unknown_words(tmp_path: Path) -> None:
    tokenizer = write_tokenizer(tmp_path, world.vocabulary(), max_length=77)
    size = len(tokenizer)
    assert tokenizer.add_tokens(["<rex>"]) == 1
    assert len(tokenizer) == size + 1
    assert tokenizer.tokenize("a <rex> on a gray background")[1] == "<rex>"
    # A word outside the world still encodes (as bytes), never as the unknown token.
    ids = tokenizer("a wizard hat", add_special_tokens=False).input_ids
    assert tokenizer.unk_token_id not in ids and len(ids) > 3
