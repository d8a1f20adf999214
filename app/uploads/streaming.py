"""Reading uploads in chunks, stopping with 413 as soon as a count or size limit is crossed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import BinaryIO, Protocol

from fastapi import HTTPException, status

from app.config import Settings, get_settings

CHUNK_BYTES = 64 * 1024


def too_large(message: str) -> HTTPException:
    return HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, message)


class SyncReadable(Protocol):
    filename: str | None
    file: BinaryIO


def read_upload(upload: SyncReadable, max_bytes: int) -> bytes:
    """One upload's bytes, read in chunks; 413 as soon as it is larger than `max_bytes`."""
    return _read(upload, max_bytes)


def read_upload_files(
    uploads: Sequence[SyncReadable], settings: Settings | None = None
) -> list[tuple[str, bytes]]:
    """(file name, bytes) of every upload, read in chunks within the count, per-file and total
    limits; 413 as soon as one is crossed."""
    settings = settings or get_settings()
    if len(uploads) > settings.upload_max_files:
        raise too_large(f"too many files ({len(uploads)}; at most {settings.upload_max_files})")
    files: list[tuple[str, bytes]] = []
    total = 0
    for upload in uploads:
        data = _read(upload, settings.upload_max_file_bytes, total, settings.upload_max_total_bytes)
        total += len(data)
        files.append((upload.filename or "upload", data))
    return files


def _read(
    upload: SyncReadable, max_bytes: int, read_before: int = 0, max_total: int | None = None
) -> bytes:
    """The upload's bytes within its own limit and, after `read_before`, the total one."""
    parts: list[bytes] = []
    size = 0
    while chunk := upload.file.read(CHUNK_BYTES):
        size += len(chunk)
        if size > max_bytes:
            raise too_large(f"{upload.filename or 'upload'}: larger than {max_bytes:,} bytes")
        if max_total is not None and read_before + size > max_total:
            raise too_large(f"the files together are larger than {max_total:,} bytes")
        parts.append(chunk)
    return b"".join(parts)
