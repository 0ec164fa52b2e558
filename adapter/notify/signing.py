"""Per-subscription signing secrets: generated at creation and returned to the client once,
kept encrypted at rest, used to sign every rest-hook body with HMAC-SHA256.

The secret is a shared key the gateway itself must use, so it cannot be stored as a one-way
hash: it is encrypted (Fernet: AES-128-CBC with HMAC-SHA256) with a key kept in the instance
folder (owner-only, like the service's signing key), so that a copy of the database alone
does not reveal it. The signature header follows W3C WebSub section 8 ("Authenticated Content
Distribution"): ``X-Hub-Signature: sha256=<hex HMAC of the exact body bytes>``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Final

from cryptography.fernet import Fernet

SIGNATURE_HEADER: Final = "X-Hub-Signature"
KEY_FILE: Final = "notify-secrets.key"


def _create_once(path: Path, data: bytes) -> None:
    """Create ``path`` holding ``data`` (mode 0600) unless it exists, atomically: a concurrent
    process either wins or reads the winner's complete file."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".key-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        try:
            os.link(temp, path)
        except FileExistsError:
            pass
    finally:
        os.unlink(temp)


@lru_cache(maxsize=8)
def secret_box(instance_path: str) -> Fernet:
    """Return the cipher of subscription secrets, creating its key on first use."""
    path = Path(instance_path) / "keys" / KEY_FILE
    if not path.exists():
        _create_once(path, Fernet.generate_key())
    return Fernet(path.read_bytes().strip())


def new_secret() -> str:
    """Return a new signing secret (256 bits, URL-safe text)."""
    return secrets.token_urlsafe(32)


def seal(instance_path: str, secret: str) -> str:
    """Return ``secret`` encrypted for storage."""
    return secret_box(instance_path).encrypt(secret.encode()).decode("ascii")


def unseal(instance_path: str, sealed: str) -> str:
    """Return a stored secret in clear.

    :raises cryptography.fernet.InvalidToken: the instance key is not the one it was sealed with.
    """
    return secret_box(instance_path).decrypt(sealed.encode("ascii")).decode()


def signature(secret: str, body: bytes) -> str:
    """Return the signature header value of ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str) -> bool:
    """Return True when ``header`` is the signature of ``body`` (what a receiver checks)."""
    return hmac.compare_digest(signature(secret, body), header)
