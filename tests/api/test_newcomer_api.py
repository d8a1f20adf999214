"""Issue #15 over HTTP on PostgreSQL: what a newcomer ran into, each as a check that fails."""

from __future__ import annotations

import pytest

from app.config import get_settings
from tests.support.apihelpers import create_concept
from tests.support.webdata import photo_png


def test_refused_uploads_do_not_use_up_the_fit_quota(
    make_user, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(get_settings(), "fits_per_hour", 3)
    user = make_user()
    good = [("images", (f"{i}.png", photo_png(i), "image/png")) for i in range(3)]
    not_image = [*good[:2], ("images", ("notes.txt", b"not an image", "text/plain"))]
    for files, code in ((not_image, 415), (good[:2], 422), (good * 4, 422)):
        for _ in range(3):  # nine refusals: none of them a fit
            data = {"name": "Rex", "token": "<rex-refused>", "superclass": "toy"}
            assert user.post("/api/concepts", data=data, files=files).status_code == code
    for _ in range(3):
        create_concept(user)  # all three fits of the hour are still there
    over = user.post(
        "/api/concepts", data={"name": "Rex", "token": "<rex-4th>", "superclass": "toy"}, files=good
    )
    assert over.status_code == 429 and "Hourly limit of 3 fit jobs" in over.json()["detail"]
    assert 1 <= int(over.headers["retry-after"]) <= 3600
