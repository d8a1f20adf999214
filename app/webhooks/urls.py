"""Which callback URLs a job may name, and which addresses a delivery may reach.

Only http(s). In production (unless `STUDIO_WEBHOOK_ALLOW_PRIVATE`) nothing on this
machine or its private networks: a callback URL must not turn the server into a way of
calling its own internal services. Literal addresses and `localhost` are refused when the
job is created; host names are resolved and checked again before every attempt.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field

from app.config import get_settings

CALLBACK_URL_MAX_CHARS = 2000
SCHEMES = ("http", "https")
LOCAL_NAMES = ("localhost", "localhost.localdomain")


class CallbackRefused(ValueError):
    """A callback URL or address this server will not call; the message says why."""


def public_address(address: str) -> bool:
    """True for an address on the public internet (not loopback, private, link-local, …)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _literal_address(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


def check_callback_url(url: str, *, allow_private: bool) -> str:
    """`url` if a job may name it; else CallbackRefused saying what is wrong."""
    url = url.strip()
    if len(url) > CALLBACK_URL_MAX_CHARS:
        raise CallbackRefused(
            f"The callback URL is longer than {CALLBACK_URL_MAX_CHARS} characters."
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a port that is not a number in range)
    except ValueError:
        raise CallbackRefused("The callback URL is not a valid URL.") from None
    if parts.scheme.lower() not in SCHEMES:
        raise CallbackRefused("The callback URL must start with http:// or https://.")
    host = (parts.hostname or "").lower()
    if not host:
        raise CallbackRefused("The callback URL has no host name.")
    if not allow_private:
        address = _literal_address(host)
        if host in LOCAL_NAMES or host.endswith(".localhost"):
            raise CallbackRefused(_private_message(host))
        if address is not None and not public_address(address):
            raise CallbackRefused(_private_message(address))
    return url


def _private_message(what: str) -> str:
    return (
        f"The callback URL points at {what}, a loopback or private address; "
        "this server only calls public addresses."
    )


def delivery_refusal(url: str, *, allow_private: bool) -> str | None:
    """Why a delivery to `url` may not be made now (its host resolves to a private address),
    or None. A host that does not resolve raises OSError: a failed attempt, tried again."""
    try:
        check_callback_url(url, allow_private=allow_private)
    except CallbackRefused as exc:
        return str(exc)
    if allow_private:
        return None
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    for *_, sockaddr in socket.getaddrinfo(parts.hostname, port, proto=socket.IPPROTO_TCP):
        if not public_address(str(sockaddr[0])):
            return _private_message(f"{parts.hostname} ({sockaddr[0]})")
    return None


def _validate(url: str) -> str:
    return check_callback_url(url, allow_private=get_settings().webhooks_allow_private)


CallbackUrl = Annotated[
    str,
    Field(
        max_length=CALLBACK_URL_MAX_CHARS,
        description=(
            "Told when the job ends: a signed POST (Standard Webhooks), retried with backoff "
            "until it answers 2xx. See docs/webhooks.md."
        ),
        examples=["https://example.com/hooks/perfusion"],
    ),
    AfterValidator(_validate),
]
"""A request field: a 422 with the reason when the URL is not one a job may name."""
