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
