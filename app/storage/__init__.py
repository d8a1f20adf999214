"""Blob storage behind one small interface (database-backed by default)."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.orm import Session

from app.storage.models import Blob


@dataclass(frozen=True)
class StoredBlob:
    id: uuid.UUID
    content_type: str
    data: bytes


class BlobStore(Protocol):
    def put(self, data: bytes, content_type: str) -> uuid.UUID: ...
    def get(self, blob_id: uuid.UUID) -> StoredBlob | None: ...
    def delete(self, blob_id: uuid.UUID) -> None: ...


class DatabaseBlobStore:
    """Blobs as rows in the caller's session, so they commit or roll back with it."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def put(self, data: bytes, content_type: str) -> uuid.UUID:
        blob = Blob(
            content_type=content_type,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            data=data,
        )
        self.session.add(blob)
        self.session.flush()
        return blob.id

    def get(self, blob_id: uuid.UUID) -> StoredBlob | None:
        blob = self.session.get(Blob, blob_id)
        if blob is None:
            return None
        return StoredBlob(id=blob.id, content_type=blob.content_type, data=blob.data)

    def delete(self, blob_id: uuid.UUID) -> None:
        blob = self.session.get(Blob, blob_id)
        if blob is not None:
            self.session.delete(blob)
