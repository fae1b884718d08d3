"""Webhook signatures: the hex HMAC-SHA256 of a body under a shared secret, both ways."""

from __future__ import annotations

import hashlib
import hmac


def sign(secret: str, body: bytes) -> str:
    """The X-Tierone-Signature of a body: hex HMAC-SHA256 with the shared secret."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
