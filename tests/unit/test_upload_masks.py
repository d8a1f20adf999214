"""`sanitize_mask` and `pair_masks`: masks read like photos are, in every mode a mask comes in,
paired with photos by name, refused with a message that says what is wrong."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from app.concepts.rules import pair_masks
from app.config import Settings
from app.uploads.images import UploadRejected
from app.uploads.masks import sanitize_mask
from tests.support.hostile import OK, corpus, encode, sixteen_bit_png
from tests.support.webdata import mask_png

SIZE = (64, 64)
REFUSED = [c for c in corpus() if c.expected != OK and c.filename != "tiny.png"]
"""What a photo is refused for being (not its size): a mask must be refused the same way."""


def clean(
    data: bytes, source: tuple[int, int] = SIZE, stored: tuple[int, int] = SIZE
) -> np.ndarray:
    png = sanitize_mask(data, "m.png", "photo.jpg", source, stored, Settings())
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.mode == "L" and image.size == stored
    assert not image.info  # no metadata survives
    return np.asarray(image)


def refusal(data: bytes, source: tuple[int, int] = SIZE) -> UploadRejected:
    with pytest.raises(UploadRejected) as caught:
        sanitize_mask(data, "m.png", "photo.jpg", source, source, Settings())
    return caught.value


@pytest.mark.parametrize("case", REFUSED, ids=[c.filename for c in REFUSED])
def test_hostile_files_are_refused_as_masks_as_they_are_as_photos(case) -> None:  # type: ignore[no-untyped-def]
    assert refusal(case.data).status_code == case.expected, case.why


def test_every_kind_of_mask_becomes_greyscale_weights() -> None:
    for mode in ("L", "1", "RGBA"):  # RGBA: a cut-out, its alpha is the mask
        weights = clean(mask_png(24, mode=mode))
        assert (weights[:, :24] == 255).all() and (weights[:, 24:] == 0).all(), mode
    opaque = Image.new("RGBA", SIZE, (0, 0, 0, 255))  # alpha says nothing: the pixels do
    opaque.paste((255, 255, 255, 255), (0, 0, 16, 64))
    assert (clean(encode(opaque, "PNG"))[:, :16] == 255).all()
    assert clean(sixteen_bit_png())[0, 0] == 128  # 16-bit scaled, not clipped to white
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "<script>alert(1)</script>")
    script = encode(Image.open(io.BytesIO(mask_png(8))), "PNG", pnginfo=info)
    assert b"<script>" not in sanitize_mask(script, "m", "p", SIZE, SIZE, Settings())


def test_a_mask_has_its_photos_shape_and_is_resized_to_the_stored_photo() -> None:
    half = clean(mask_png(16, size=(32, 32)))  # half size: resized up, bilinear
    assert (half[:, :31] > 127).all() and (half[:, 33:] < 128).all()
    stored = clean(mask_png(200, size=(400, 300)), source=(400, 300), stored=(200, 150))
    assert stored.shape == (150, 200)  # a photo stored smaller: its mask follows
    within_a_pixel = clean(mask_png(8, size=(64, 47)), source=(64, 48), stored=(64, 48))
    assert within_a_pixel.shape == (48, 64)
    wrong = refusal(mask_png(8, size=(64, 32)))
    assert wrong.status_code == 422
    assert str(wrong) == (
        "m.png: the mask is 64×32 but its photo photo.jpg is 64×64; a mask has its photo's size."
    )


def test_an_all_black_mask_is_refused() -> None:
    assert "all black" in str(refusal(mask_png(0)))
    noisy = Image.effect_noise(SIZE, 2).point(lambda v: min(v, 5))  # JPEG-ish near-black
    assert "all black" in str(refusal(encode(noisy, "PNG")))
    assert refusal(encode(Image.new("RGBA", SIZE, (255, 255, 255, 0)), "PNG")).status_code == 422


def test_masks_pair_with_photos_by_name_whatever_their_order_and_suffix() -> None:
    photos = ["rex1.jpg", "Rex2.JPG", "folder/rex3.png"]
    assert pair_masks(photos, ["rex3.png", "rex1.png", "rex2.webp"]) == [1, 2, 0]
    refusals = {
        "Give one mask per photo, or none: 3 photos, 2 masks.": (photos, ["rex1.png", "rex2.png"]),
        "x.png: no photo has this name; a mask is named like its photo (rex1.png for rex1.jpg).": (
            photos, ["rex1.png", "rex2.png", "x.png"]
        ),
        "rex1.jpg: a second mask for rex1.jpg.": (photos, ["rex1.png", "rex2.png", "rex1.jpg"]),
        "Masks are matched to photos by file name, so the photos need different names "
        "(a.jpg, a.png).": (["a.jpg", "a.png", "b.png"], ["a.png", "b.png", "c.png"]),
    }  # fmt: skip
    for message, (photo_names, mask_names) in refusals.items():
        with pytest.raises(ValueError) as caught:
            pair_masks(photo_names, mask_names)
        assert str(caught.value) == message
