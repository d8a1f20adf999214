"""The hostile-upload corpus against `sanitize_image`: each file accepted clean or refused."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from app.config import Settings
from app.uploads.images import UploadRejected, sanitize_image
from tests.support.hostile import OK, POLYGLOT_PAYLOAD, corpus, gps_jpeg

CASES = corpus()


def outcome(data: bytes, filename: str) -> int:
    try:
        sanitize_image(data, filename, Settings())
    except UploadRejected as exc:
        return exc.status_code
    return OK


@pytest.mark.parametrize("case", CASES, ids=[c.filename for c in CASES])
def test_corpus_file_gets_its_expected_outcome(case) -> None:  # type: ignore[no-untyped-def]
    assert outcome(case.data, case.filename) == case.expected, case.why


def stored(data: bytes) -> Image.Image:
    clean = sanitize_image(data, "x", Settings())
    img = Image.open(io.BytesIO(clean.data))
    assert img.format == "PNG" and img.mode == "RGB"
    assert (img.width, img.height) == (clean.width, clean.height)
    return img


def by_name(name: str) -> bytes:
    return next(c.data for c in CASES if c.filename == name)


def test_gps_and_all_metadata_are_gone_from_the_stored_bytes() -> None:
    assert Image.open(io.BytesIO(gps_jpeg())).getexif().get_ifd(0x8825)  # the input has GPS
    clean = sanitize_image(gps_jpeg(), "gps.jpg", Settings()).data
    img = Image.open(io.BytesIO(clean))
    assert not img.getexif() and not img.getexif().get_ifd(0x8825)
    assert set(img.info) <= {"dpi"}, img.info
    assert b"eXIf" not in clean and b"SpyCam" not in clean and b"iCCP" not in clean


def test_exif_orientation_is_applied() -> None:
    img = stored(by_name("rotated.jpg"))
    assert img.size == (32, 64)  # was 64×32 with "rotate 90° clockwise"
    top, bottom = img.getpixel((16, 8)), img.getpixel((16, 56))
    assert top[0] > 200 > top[2] and bottom[2] > 200 > bottom[0]  # red above blue


def test_polyglot_and_text_chunk_payloads_do_not_survive() -> None:
    assert POLYGLOT_PAYLOAD not in sanitize_image(by_name("polyglot.jpg"), "p", Settings()).data
    assert b"<script>" not in sanitize_image(by_name("script.png"), "s", Settings()).data


def test_modes_are_normalised_faithfully() -> None:
    assert stored(by_name("grey16.png")).getpixel((0, 0)) == (128, 128, 128)  # not clipped
    assert stored(by_name("alpha.png")).getpixel((0, 0)) == (255, 255, 255)  # on white
    assert stored(by_name("palette.png")).getpixel((0, 0)) == (0, 128, 0)
    r, g, b = stored(by_name("cmyk.jpg")).getpixel((32, 32))
    assert r > 200 and g < 60 and b < 60  # CMYK (0, 255, 255, 0) is red
    assert stored(by_name("animated.gif")).getpixel((0, 0)) == (255, 0, 0)  # first frame


def test_large_photos_are_stored_downscaled() -> None:
    big = Image.new("RGB", (3000, 1500), (5, 5, 5))
    buf = io.BytesIO()
    big.save(buf, "JPEG")
    clean = sanitize_image(buf.getvalue(), "big.jpg", Settings(image_store_max_side=1024))
    assert (clean.width, clean.height) == (1024, 512)


def test_refusals_explain_themselves_without_echoing_control_characters() -> None:
    with pytest.raises(UploadRejected, match="too many pixels"):
        sanitize_image(by_name("bomb.png"), "bomb.png", Settings())
    with pytest.raises(UploadRejected, match="too small") as exc:
        sanitize_image(by_name("tiny.png"), "ti\x1b[31mny\n.png", Settings())
    assert str(exc.value).startswith("ti[31mny.png:")  # escape and newline dropped
