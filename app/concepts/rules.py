"""What a concept may be called and made of: token, name, superclass, photo and mask rules."""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.concepts.models import Concept
from app.concepts.schemas import TokenCheck
from app.config import TOYWORLD_MODEL, Settings
from app.uploads.images import display_name

MIN_PHOTOS, MAX_PHOTOS = 3, 10
MAX_PHOTO_BYTES = 10 * 1024 * 1024
TOKEN_PATTERN = r"<[a-z0-9][a-z0-9_-]{0,36}>"
"""A trigger token as it appears in a prompt."""
TOKEN_RE = re.compile(f"^{TOKEN_PATTERN}$")
SUPERCLASS_RE = re.compile(r"^[a-z][a-z -]{0,38}[a-z]$|^[a-z]$")
SUPERCLASSES_FILE = "superclasses.txt"
"""A base-model folder may list the nouns it knows best, one a line; they are suggested first."""
COMMON_SUPERCLASSES = (
    "person", "man", "woman", "child", "dog", "cat", "bird", "toy", "car", "mug", "bag",
    "shoe", "plant", "building", "sculpture", "teddy bear", "backpack", "object",
)  # fmt: skip


def is_toy_world(settings: Settings) -> bool:
    return settings.base_model.rstrip("/") == str(TOYWORLD_MODEL)


def superclass_suggestions(settings: Settings) -> list[str]:
    """The superclasses the new-concept page suggests: the nouns the base model's folder lists,
    then common ones. The toy world gets only its own: its vocabulary is closed ("dog" is a
    word it never saw)."""
    listed = Path(settings.base_model) / SUPERCLASSES_FILE
    own = listed.read_text().split("\n") if listed.is_file() else []
    nouns = [noun.strip() for noun in own if noun.strip()]
    if nouns and is_toy_world(settings):
        return list(dict.fromkeys(nouns))
    return list(dict.fromkeys([*nouns, *COMMON_SUPERCLASSES]))


def suggest_token(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:36].strip("-")
    return f"<{slug or 'concept'}>"


def check_token(session: Session, token: str) -> TokenCheck:
    if not TOKEN_RE.match(token):
        return TokenCheck(
            token=token,
            valid=False,
            available=False,
            message="Use <name>: lowercase letters, digits, - or _, at most 38 characters.",
        )
    taken = session.scalar(select(Concept.id).where(Concept.token == token)) is not None
    return TokenCheck(
        token=token,
        valid=True,
        available=not taken,
        message=f"{token} is already used by another concept." if taken else f"{token} is free.",
    )


def file_stem(filename: str) -> str:
    """A file name without its folders and last suffix, lowercased: how a mask names its photo."""
    base = re.split(r"[\\/]", filename)[-1]
    stem, dot, _ = base.rpartition(".")
    return (stem if dot and stem else base).lower()


def pair_masks(photo_names: list[str], mask_names: list[str]) -> list[int]:
    """For each photo, the index of its mask: the one with the photo's file name, whatever its
    suffix (`rex1.jpg` ↔ `rex1.png`). ValueError, with a message for the person, unless that
    pairs every photo with exactly one mask."""
    if len(mask_names) != len(photo_names):
        raise ValueError(
            f"Give one mask per photo, or none: {len(photo_names)} photos, {len(mask_names)} masks."
        )
    photos = [file_stem(name) for name in photo_names]
    repeated = sorted({display_name(n) for n in photo_names if photos.count(file_stem(n)) > 1})
    if repeated:
        raise ValueError(
            "Masks are matched to photos by file name, so the photos need different names "
            f"({', '.join(repeated)})."
        )
    index = {stem: k for k, stem in enumerate(photos)}
    pairs: dict[int, int] = {}
    for m, name in enumerate(mask_names):
        k = index.get(file_stem(name))
        if k is None:
            raise ValueError(
                f"{display_name(name)}: no photo has this name; a mask is named like its "
                "photo (rex1.png for rex1.jpg)."
            )
        if k in pairs:
            raise ValueError(
                f"{display_name(name)}: a second mask for {display_name(photo_names[k])}."
            )
        pairs[k] = m
    return [pairs[k] for k in range(len(photo_names))]
