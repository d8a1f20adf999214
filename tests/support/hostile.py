"""A corpus of hostile and awkward uploads, built in memory, with the outcome each must get."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from dataclasses import dataclass

from PIL import Image, PngImagePlugin

OK = 200


@dataclass(frozen=True)
class Case:
    filename: str
    data: bytes
    expected: int
    """OK when the sanitizer must accept it; otherwise the HTTP status of the refusal."""
    why: str


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))


def png_with_size(width: int, height: int, rows: int | None = None) -> bytes:
    """A grey PNG whose header claims width×height; the pixel data is all zeros (compresses
    to almost nothing). `rows` < height leaves the data short (a truncated image)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    comp = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte + pixels
    idat = b"".join(comp.compress(row) for _ in range(height if rows is None else rows))
    idat += comp.flush()
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt, **params)
    return out.getvalue()


def halves(size: tuple[int, int] = (64, 32)) -> Image.Image:
    """Left half red, right half blue: orientation mistakes show up as wrong colours."""
    img = Image.new("RGB", size, (255, 0, 0))
    img.paste((0, 0, 255), (size[0] // 2, 0, size[0], size[1]))
    return img


def exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    return encode(halves(), "JPEG", exif=exif.tobytes(), quality=95)


def gps_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "SpyCam"  # Make
    gps = exif.get_ifd(0x8825)
    gps[1] = "N"
    gps[2] = (51.0, 30.0, 12.34)
    gps[3] = "W"
    gps[4] = (0.0, 7.0, 39.0)
    return encode(Image.new("RGB", (64, 64), (10, 200, 30)), "JPEG", exif=exif.tobytes())


def text_chunk_png() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "<script>alert('png')</script>")
    return encode(Image.new("RGB", (64, 64), (90, 90, 90)), "PNG", pnginfo=info)


def zip_bytes() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("photo.jpg", b"not really")
    return out.getvalue()


def animated_gif() -> bytes:
    red = Image.new("RGB", (64, 64), (255, 0, 0))
    blue = Image.new("RGB", (64, 64), (0, 0, 255))
    return encode(red, "GIF", save_all=True, append_images=[blue], duration=100, loop=0)


def sixteen_bit_png() -> bytes:
    return encode(Image.new("I;16", (64, 64), 32768), "PNG")


def palette_image() -> Image.Image:
    img = Image.new("P", (64, 64), 1)
    img.putpalette([0, 0, 0, 0, 128, 0])
    return img


POLYGLOT_PAYLOAD = b"<html><script>alert(document.cookie)</script></html>"


def corpus() -> list[Case]:
    jpeg = encode(Image.new("RGB", (64, 64), (120, 60, 30)), "JPEG")
    png = encode(Image.effect_noise((64, 64), 60), "PNG")
    return [
        Case("bomb.png", png_with_size(8000, 6000), 422, "48 MP of zeros in 50 KB"),
        Case("huge.png", png_with_size(100_000, 100_000, rows=1), 422, "header claims 10 GP"),
        Case("truncated.jpg", jpeg[: len(jpeg) // 2], 422, "JPEG cut in half"),
        Case("short.png", png[: len(png) * 2 // 3], 422, "PNG cut short"),
        Case("polyglot.jpg", jpeg + POLYGLOT_PAYLOAD + zip_bytes(), OK, "JPEG+HTML+ZIP"),
        Case("script.png", text_chunk_png(), OK, "script in a PNG text chunk"),
        Case("notes.jpg", b"<?php system($_GET['c']); ?>\n", 415, "text named .jpg"),
        Case("photos.zip", zip_bytes(), 415, "a zip archive"),
        Case("vector.png", b'<svg xmlns="http://www.w3.org/2000/svg"/>', 415, "SVG named .png"),
        Case("empty.jpg", b"", 422, "0 bytes"),
        Case("rotated.jpg", exif_rotated_jpeg(), OK, "EXIF orientation 6"),
        Case("gps.jpg", gps_jpeg(), OK, "EXIF with GPS position"),
        Case(
            "cmyk.jpg",
            encode(Image.new("CMYK", (64, 64), (0, 255, 255, 0)), "JPEG"),
            OK,
            "CMYK JPEG",
        ),
        Case("grey16.png", sixteen_bit_png(), OK, "16-bit greyscale PNG"),
        Case(
            "alpha.png",
            encode(Image.new("RGBA", (64, 64), (0, 0, 0, 0)), "PNG"),
            OK,
            "fully transparent RGBA",
        ),
        Case("palette.png", encode(palette_image(), "PNG"), OK, "palette PNG"),
        Case("animated.gif", animated_gif(), OK, "two-frame GIF"),
        Case("tiny.png", encode(Image.new("RGB", (8, 8)), "PNG"), 422, "8×8 pixels"),
        Case("photo.webp", encode(Image.new("RGB", (64, 48), (1, 2, 3)), "WEBP"), OK, "WebP"),
    ]
