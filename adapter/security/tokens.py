"""SMART Backend Services token exchange (SMART App Launch 2.0, "Backend Services") and the
gateway's own access tokens. The JOSE work is done by joserfc; nothing here is cryptography."""

from __future__ import annotations

import datetime as dt
import functools
import secrets
import time
from dataclasses import dataclass
from typing import Any, Final

import orjson
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from adapter.models import Client, UsedAssertion
from adapter.security.keys import SERVICE_KEY_ALG, service_key
from adapter.security.scopes import InvalidScope, granted_scopes

ASSERTION_TYPE: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGS: Final = ["RS384", "ES384"]
MAX_ASSERTION_LIFETIME: Final = 300  # SMART: exp no more than five minutes in the future
CLOCK_SKEW: Final = 60


class TokenError(Exception):
    """An OAuth 2.0 error at the token endpoint (RFC 6749 section 5.2)."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


@dataclass(frozen=True)
class IssuedToken:
    """An access token response (RFC 6749 section 5.1)."""

    access_token: str
    expires_in: int
    scope: str

    def as_response(self) -> dict[str, Any]:
        """Return the JSON body of the token response."""
        return {"access_token": self.access_token, "token_type": "bearer",
                "expires_in": self.expires_in, "scope": self.scope}


def _unverified_client_id(assertion: str) -> str:
    """Return the ``iss`` of an assertion before verification, only to find the client's keys.

    :raises TokenError: the assertion is not a readable JWT.
    """
    try:
        claims = orjson.loads(jws.extract_compact(assertion.encode()).payload)
    except (JoseError, ValueError) as exc:
        raise TokenError("invalid_client", "client_assertion is not a valid JWT") from exc
    issuer = claims.get("iss") if isinstance(claims, dict) else None
    if not isinstance(issuer, str) or not issuer:
        raise TokenError("invalid_client", "client_assertion has no iss (the client id)")
    return issuer


def _verify_assertion(assertion: str, client: Client, token_urls: set[str]) -> dict[str, Any]:
    """Verify an assertion's signature and claims; return its claims.

    :raises TokenError: bad signature or claims (iss/sub, aud, exp, jti).
    """
    try:
        key_set = KeySet.import_key_set(client.jwks)  # type: ignore[arg-type]
        token = jwt.decode(assertion, key_set, algorithms=ASSERTION_ALGS)
    except (JoseError, ValueError) as exc:
        raise TokenError("invalid_client", "client_assertion signature does not verify with "
                                           "the client's registered keys") from exc
    claims = dict(token.claims)
    now = int(time.time())
    if claims.get("iss") != client.client_id or claims.get("sub") != client.client_id:
        raise TokenError("invalid_client", "iss and sub must both be the client id")
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    if not token_urls.intersection(a for a in audiences if isinstance(a, str)):
        raise TokenError("invalid_client", "aud must be this server's token URL")
    exp = claims.get("exp")
    if not isinstance(exp, int) or exp < now - CLOCK_SKEW:
        raise TokenError("invalid_client", "client_assertion has expired")
    if exp > now + MAX_ASSERTION_LIFETIME + CLOCK_SKEW:
        raise TokenError("invalid_client", "client_assertion exp is more than 5 minutes ahead")
    if not isinstance(claims.get("jti"), str) or not claims["jti"]:
        raise TokenError("invalid_client", "client_assertion needs a jti")
    return claims


def _remember_jti(session: Session, client_id: str, jti: str, exp: int) -> None:
    """Record a used ``jti``; a replay violates the unique constraint.

    :raises TokenError: the jti was used before.
    """
    now = dt.datetime.now(dt.UTC)
    session.execute(delete(UsedAssertion).where(UsedAssertion.expires_at < now))
    expires = dt.datetime.fromtimestamp(exp + CLOCK_SKEW, dt.UTC)
    try:
        with session.begin_nested():
            session.add(UsedAssertion(client_id=client_id, jti=jti, expires_at=expires))
    except IntegrityError as exc:
        raise TokenError("invalid_client", "client_assertion jti has been used before") from exc


def exchange_assertion(session: Session, form: dict[str, str], token_urls: set[str],
                       instance_path: str, lifetime: int, audience: str) -> IssuedToken:
    """Check a client-credentials request with a signed assertion; issue an access token
    for ``audience`` (the FHIR base URL of this server).

    :raises TokenError: any OAuth error, as RFC 6749 names it.
    """
    if form.get("grant_type") != "client_credentials":
        raise TokenError("unsupported_grant_type", "grant_type must be client_credentials")
    if form.get("client_assertion_type") != ASSERTION_TYPE:
        raise TokenError("invalid_request", f"client_assertion_type must be {ASSERTION_TYPE}")
    assertion = form.get("client_assertion") or ""
    client_id = _unverified_client_id(assertion)
    client = session.scalar(select(Client).where(Client.client_id == client_id))
    if client is None or client.status != "active":
        raise TokenError("invalid_client", "unknown or disabled client", 401)
    claims = _verify_assertion(assertion, client, token_urls)
    _remember_jti(session, client.client_id, claims["jti"], claims["exp"])
    try:
        scope = granted_scopes(form.get("scope") or "", client.scopes)
    except InvalidScope as exc:
        raise TokenError("invalid_scope", str(exc)) from exc
    if not scope:
        raise TokenError("invalid_scope", "none of the requested scopes is allowed to this client")
    return issue_access_token(client, scope, instance_path, lifetime, audience)


def issue_access_token(client: Client, scope: str, instance_path: str, lifetime: int,
                       audience: str) -> IssuedToken:
    """Return an access token (a JWT signed with the service key) for ``client``.

    ``aud`` binds the token to this server's FHIR base (RFC 9068 section 3, "aud"; RFC 8707):
    a server sharing the service key but reached at another address refuses it.
    """
    now = int(time.time())
    key = service_key(instance_path)
    claims = {"iss": "contactpoint-gateway", "sub": client.client_id, "aud": audience,
              "iat": now, "exp": now + lifetime, "jti": secrets.token_urlsafe(16),
              "scope": scope, "kv": client.key_version}
    header = {"alg": SERVICE_KEY_ALG, "kid": key.kid or "", "typ": "at+jwt"}
    token = jwt.encode(header, claims, key, algorithms=[SERVICE_KEY_ALG])
    return IssuedToken(token, lifetime, scope)


@functools.lru_cache(maxsize=8192)
def _verified_claims(token: str, instance_path: str) -> tuple[tuple[str, Any], ...]:
    """Verify an access token's signature once per process (a token seen again is the same
    signed bytes); return its claims. Failures are not cached.

    :raises TokenError: bad signature, malformed, or not an access token of this server.
    """
    try:
        decoded = jwt.decode(token, service_key(instance_path), algorithms=[SERVICE_KEY_ALG])
    except (JoseError, ValueError) as exc:
        raise TokenError("invalid_token", "the access token is not valid", 401) from exc
    if decoded.header.get("typ") != "at+jwt":
        raise TokenError("invalid_token", "not an access token of this server", 401)
    return tuple(decoded.claims.items())


def read_access_token(token: str, instance_path: str, audience: str) -> dict[str, Any]:
    """Verify an access token's signature, expiry and audience; return its claims.

    :raises TokenError: bad signature, malformed, expired, or issued for another audience.
    """
    claims = dict(_verified_claims(token, instance_path))
    if not isinstance(claims.get("exp"), int) or claims["exp"] < time.time():
        raise TokenError("invalid_token", "the access token has expired", 401)
    granted = claims.get("aud")
    # RFC 7519 section 4.1.3: aud is one string or an array of them.
    if audience not in (granted if isinstance(granted, list) else [granted]):
        raise TokenError("invalid_token", f"the access token was issued for another server, "
                                          f"not {audience}: request one from this server", 401)
    return claims
