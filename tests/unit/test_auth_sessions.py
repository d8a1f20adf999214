import uuid

from app.auth.sessions import SESSION_MAX_AGE_S, make_session_value, read_session_value
from app.security.passwords import hash_password, verify_password
from app.security.tokens import hash_token, new_token


def test_session_cookie_round_trips_and_rejects_tampering_and_expiry() -> None:
    user_id = uuid.uuid4()
    value = make_session_value("s3cret", user_id, now=1000)
    assert read_session_value("s3cret", value, now=1001) == user_id
    assert read_session_value("other", value, now=1001) is None
    forged = f"{uuid.uuid4().hex}.{value.split('.', 1)[1]}"
    assert read_session_value("s3cret", forged, now=1001) is None
    assert read_session_value("s3cret", value, now=1000 + SESSION_MAX_AGE_S + 1) is None
    assert read_session_value("s3cret", "garbage", now=1001) is None


def test_passwords_are_argon2id_and_verify() -> None:
    hashed = hash_password("correct horse")
    assert hashed.startswith("$argon2id$")
    assert verify_password(hashed, "correct horse")
    assert not verify_password(hashed, "wrong")
    assert not verify_password("not a hash", "x")


def test_tokens_have_256_bits_and_are_stored_hashed() -> None:
    token = new_token("pst_")
    assert token.startswith("pst_") and len(token) >= 4 + 43
    assert new_token() != new_token()
    assert len(hash_token(token)) == 64 and hash_token(token) != token
