"""Reading uploads in chunks, stopping with 413 as soon as a count or size limit is crossed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import BinaryIO, Protocol

from fastapi import HTTPException, status

from app.config import Settings, get_settings

CHUNK_BYTES = 64 * 1024


class AsyncReadable(Protocol):
    filename: str | None

    async def read(self, size: int = -1) -> bytes: ...


def too_large(message: str) -> HTTPException:
    return HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, message)


async def read_limited(
    upload: AsyncReadable, max_bytes: int, *, already: int = 0, max_total: int | None = None
) -> bytes:
    """All bytes of one upload, read in chunks; 413 once it passes `max_bytes`.

    `already` is what earlier files of the same request used against `max_total`.
    """
    name = upload.filename or "upload"
    parts: list[bytes] = []
    size = 0
    while chunk := await upload.read(CHUNK_BYTES):
        size += len(chunk)
        if size > max_bytes:
            raise too_large(f"{name}: larger than {max_bytes:,} bytes")
        if max_total is not None and already + size > max_total:
            raise too_large(f"the files together are larger than {max_total:,} bytes")
        parts.append(chunk)
    return b"".join(parts)


class SyncReadable(Protocol):
    filename: str | None
    file: BinaryIO


def read_upload_files(
    uploads: Sequence[SyncReadable], settings: Settings | None = None
) -> list[tuple[str, bytes]]:
    """`read_uploads` for sync routes: reads each `UploadFile.file` in chunks."""
    settings = settings or get_settings()
    if len(uploads) > settings.upload_max_files:
        raise too_large(f"too many files ({len(uploads)}; at most {settings.upload_max_files})")
    files: list[tuple[str, bytes]] = []
    total = 0
    for upload in uploads:
        name = upload.filename or "upload"
        parts: list[bytes] = []
        size = 0
        while chunk := upload.file.read(CHUNK_BYTES):
            size += len(chunk)
            if size > settings.upload_max_file_bytes:
                raise too_large(f"{name}: larger than {settings.upload_max_file_bytes:,} bytes")
            if total + size > settings.upload_max_total_bytes:
                raise too_large(
                    f"the files together are larger than {settings.upload_max_total_bytes:,} bytes"
                )
            parts.append(chunk)
        total += size
        files.append((name, b"".join(parts)))
    return files


async def read_uploads(
    uploads: Sequence[AsyncReadable], settings: Settings | None = None
) -> list[tuple[str, bytes]]:
    """(file name, bytes) of every upload, within the count, per-file and total limits."""
    settings = settings or get_settings()
    if len(uploads) > settings.upload_max_files:
        raise too_large(f"too many files ({len(uploads)}; at most {settings.upload_max_files})")
    files: list[tuple[str, bytes]] = []
    total = 0
    for upload in uploads:
        data = await read_limited(
            upload,
            settings.upload_max_file_bytes,
            already=total,
            max_total=settings.upload_max_total_bytes,
        )
        total += len(data)
        files.append((upload.filename or "upload", data))
    return files
