"""Admin dashboard sessions: an admin client's operator pastes an access token once into the
login form; the gateway checks it and sets a session cookie holding a short JWT of its own,
signed with the service key, naming the client and its key version (so disabling or re-keying
the client ends the session at once).

The cookie is ``HttpOnly``, ``SameSite=Strict``, scoped to ``/admin`` and ``Secure`` when the
gateway's public URL is https (OWASP "Session Management Cheat Sheet"); the session token's
``typ`` and audience differ from an access token's, so neither is accepted as the other, and the
access layer accepts a session on the admin pages only, never on the FHIR API.

Every form that changes state (sign in, sign out) carries a CSRF token: the HMAC, keyed from the
service key, of a random value the browser holds in its own cookie (OWASP "Cross-Site Request
Forgery Prevention Cheat Sheet", "Signed Double-Submit Cookie"); a page of another site can
neither read that cookie nor compute the token.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import time
from typing import Any, Final

from joserfc import jwt
from joserfc.errors import JoseError

from adapter.security.keys import SERVICE_KEY_ALG, service_key
from adapter.security.tokens import TokenError

COOKIE: Final = "cpgw_admin"
COOKIE_PATH: Final = "/admin"
SESSION_TYPE: Final = "admin-session+jwt"
CSRF_COOKIE: Final = "cpgw_csrf"
CSRF_FIELD: Final = "csrf_token"


def in_admin_pages(path: str) -> bool:
    """Return True for a path the session cookie is scoped to (``/admin`` and below)."""
    return path == COOKIE_PATH or path.startswith(COOKIE_PATH + "/")


def new_csrf_nonce() -> str:
    """Return a fresh random value for the CSRF cookie."""
    return secrets.token_urlsafe(32)


@functools.lru_cache(maxsize=8)
def _csrf_key(instance_path: str) -> bytes:
    """Return the CSRF HMAC key, derived from the service key's private part (a key of its
    own: a CSRF token is never a signature the service key could be asked for)."""
    private = str(service_key(instance_path).as_dict(private=True)["d"])
    return hashlib.sha256(b"contactpoint-gateway admin csrf\0" + private.encode()).digest()


def csrf_token(nonce: str, instance_path: str) -> str:
    """Return the form token that goes with the CSRF cookie value ``nonce``."""
    return hmac.new(_csrf_key(instance_path), nonce.encode(), hashlib.sha256).hexdigest()


def csrf_valid(nonce: str | None, sent: str | None, instance_path: str) -> bool:
    """Return True when the form's token ``sent`` matches the CSRF cookie value ``nonce``."""
    if not nonce or not sent:
        return False
    return hmac.compare_digest(csrf_token(nonce, instance_path), sent)


def session_audience(base: str) -> str:
    """Return the audience of admin sessions at the server reached at ``base``."""
    return f"{base}/admin"


def issue_session(claims: dict[str, Any], instance_path: str, audience: str,
                  lifetime: int) -> str:
    """Return a session token for the client of verified access-token ``claims``."""
    now = int(time.time())
    key = service_key(instance_path)
    session_claims = {"iss": "contactpoint-gateway", "sub": claims["sub"], "aud": audience,
                      "iat": now, "exp": now + lifetime, "jti": secrets.token_urlsafe(16),
                      "scope": claims.get("scope", ""), "kv": claims.get("kv")}
    header = {"alg": SERVICE_KEY_ALG, "kid": key.kid or "", "typ": SESSION_TYPE}
    return jwt.encode(header, session_claims, key, algorithms=[SERVICE_KEY_ALG])


def read_session(token: str, instance_path: str, audience: str) -> dict[str, Any]:
    """Verify a session token; return its claims.

    :raises TokenError: bad signature, not a session token, expired, or another audience.
    """
    try:
        decoded = jwt.decode(token, service_key(instance_path), algorithms=[SERVICE_KEY_ALG])
    except (JoseError, ValueError) as exc:
        raise TokenError("invalid_token", "the admin session is not valid: log in again",
                         401) from exc
    claims = dict(decoded.claims)
    if decoded.header.get("typ") != SESSION_TYPE or claims.get("aud") != audience:
        raise TokenError("invalid_token", "not an admin session of this server", 401)
    if not isinstance(claims.get("exp"), int) or claims["exp"] < time.time():
        raise TokenError("invalid_token", "the admin session has expired: log in again", 401)
    return claims
