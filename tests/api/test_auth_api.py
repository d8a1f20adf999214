"""Accounts and API tokens over HTTP, on PostgreSQL."""

from __future__ import annotations

from fastapi.testclient import TestClient


def test_signup_sets_a_safe_session_cookie_and_refuses_a_taken_name(anon: TestClient) -> None:
    response = anon.post("/api/auth/signup", json={"username": "Alice", "password": "s3cret-pass"})
    assert response.status_code == 201, response.text
    assert response.json()["username"] == "alice"
    cookie = response.headers["set-cookie"].lower()
    assert "studio_session=" in cookie and "httponly" in cookie and "samesite=lax" in cookie
    assert "secure" not in cookie  # only in production
    assert anon.get("/api/auth/me").json()["username"] == "alice"

    again = anon.post("/api/auth/signup", json={"username": "ALICE", "password": "another-pass"})
    assert again.status_code == 409
    assert again.json()["detail"] == "That username is taken."
    short = anon.post("/api/auth/signup", json={"username": "bob", "password": "short"})
    assert short.status_code == 422 and "password" in short.text
    weird = anon.post("/api/auth/signup", json={"username": "a b/c", "password": "long enough"})
    assert weird.status_code == 422


def test_login_failures_are_generic_and_logout_signs_out(anon: TestClient, make_user) -> None:  # type: ignore[no-untyped-def]
    user = make_user("carol", "carol-password")
    wrong = anon.post("/api/auth/login", json={"username": "carol", "password": "nope-nope"})
    unknown = anon.post("/api/auth/login", json={"username": "nobody", "password": "nope-nope"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == {"detail": "Wrong username or password."}

    ok = anon.post("/api/auth/login", json={"username": "Carol", "password": "carol-password"})
    assert ok.status_code == 200 and ok.json()["username"] == "carol"
    assert anon.get("/api/auth/me").status_code == 200

    out = user.post("/api/auth/logout")
    assert out.status_code == 204
    assert (
        'studio_session=""' in out.headers["set-cookie"] or "Max-Age=0" in out.headers["set-cookie"]
    )
    assert user.get("/api/auth/me").status_code == 401


def test_api_tokens_authenticate_scripts_until_deleted(make_user, anon: TestClient) -> None:  # type: ignore[no-untyped-def]
    user = make_user()
    assert anon.post("/api/tokens", json={"name": "x"}).status_code == 401
    created = user.post("/api/tokens", json={"name": "laptop script"})
    assert created.status_code == 201, created.text
    secret = created.json()["token"]
    assert secret.startswith("pst_") and len(secret) > 40

    bearer = {"Authorization": f"Bearer {secret}"}
    me = anon.get("/api/auth/me", headers=bearer)
    assert me.status_code == 200 and me.json()["username"] == user.username
    assert anon.get("/api/concepts", headers=bearer).status_code == 200
    listed = user.get("/api/tokens").json()
    assert [t["name"] for t in listed] == ["laptop script"]
    assert "token" not in listed[0] and listed[0]["last_used_at"] is not None

    other = make_user()
    assert other.delete(f"/api/tokens/{listed[0]['id']}").status_code == 404
    assert user.delete(f"/api/tokens/{listed[0]['id']}").status_code == 204
    assert anon.get("/api/auth/me", headers=bearer).status_code == 401
    bogus = {"Authorization": "Bearer pst_not-a-token"}
    assert anon.get("/api/auth/me", headers=bogus).status_code == 401
