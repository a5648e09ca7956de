"""Signed links (pure): an unsubscribe token names one address for one purpose and cannot be forged.

The token carries the address (not a row id): a store rebuilt from scratch renumbers subscribers,
and an old link must never unsubscribe somebody else. The purpose is the signature's salt, so a
token made for one purpose is refused for any other.
"""

from __future__ import annotations

from itsdangerous import BadSignature, URLSafeSerializer

UNSUBSCRIBE = "unsubscribe"


def make(secret: bytes, email: str, purpose: str = UNSUBSCRIBE) -> str:
    return URLSafeSerializer(secret, salt=f"digestmail.{purpose}").dumps(email.lower())


def read(secret: bytes, token: str, purpose: str = UNSUBSCRIBE) -> str | None:
    """The address a token was made for, or None when it was tampered with or made for another purpose."""
    try:
        value = URLSafeSerializer(secret, salt=f"digestmail.{purpose}").loads(token)
    except BadSignature:
        return None
    return value if isinstance(value, str) else None


def unsubscribe_url(base_url: str, secret: bytes, email: str) -> str:
    return f"{base_url.rstrip('/')}/u/{make(secret, email)}"
