"""The one access layer every route sits behind: each view declares what it is (a FHIR
interaction on a resource type, a public document, ...) and one ``before_request`` hook
authenticates the caller and checks the declaration (docs/architecture.md "Security model").

A route without a declaration is refused: access is never granted by omission.
"""

from __future__ import annotations

import functools
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from flask import Flask, current_app, g, request
from sqlalchemy import event, select
from sqlalchemy.orm import Session, object_session

from adapter.db import Database, get_db
from adapter.errors import Forbidden, Unauthorized
from adapter.http import public_base
from adapter.models import Client
from adapter.security.caller import Caller
from adapter.security.limits import ClientLimits, enforce_limits
from adapter.security.policy.phase import KINDS
from adapter.security.scopes import Scope, parse_scopes
from adapter.security.tokens import TokenError, read_access_token

F = TypeVar("F", bound=Callable[..., Any])
PURPOSE_HEADER: Final = "X-Purpose-Of-Use"
# The phase gate: refuses a route's kind the decommissioning phase does not allow (raises).
# It reads the decommissioning plan, a layer above this one, so the decommissioning hands it
# in at start-up (``adapter.decommission.init_app``; scripts/check_layers.py).
PhaseGate = Callable[[str, str | None], None]
PHASE_GATE_KEY: Final = "phase_gate"


@dataclass(frozen=True)
class Access:
    """What a route is: public or not, and which scope it needs (if fixed per route)."""

    kind: str
    resource_type: str | None = None
    interaction: str | None = None
    public: bool = False
    right: str | None = None


def _declare(access: Access) -> Callable[[F], F]:
    """Return a decorator attaching ``access`` to a view function."""
    if access.kind not in KINDS:  # the phase policy decides by kind: it must know this one
        raise ValueError(f"unknown route kind {access.kind!r}: one of {', '.join(KINDS)}")

    def decorate(view: F) -> F:
        view._access = access  # type: ignore[attr-defined]
        return view
    return decorate


def public(kind: str = "meta") -> Callable[[F], F]:
    """Declare a route that needs no token (metadata, discovery, health, the token endpoint)."""
    return _declare(Access(kind, public=True))


def interaction(resource_type: str, name: str, kind: str) -> Callable[[F], F]:
    """Declare a FHIR interaction on ``resource_type``: a token with a matching scope is needed."""
    return _declare(Access(kind, resource_type, name))


def authenticated(kind: str, right: str | None = None) -> Callable[[F], F]:
    """Declare a route that needs a token (and ``right`` if given) and checks scopes itself."""
    return _declare(Access(kind, right=right))


def access_of(endpoint: str) -> Access | None:
    """Return the declaration of the view behind ``endpoint``."""
    view = current_app.view_functions.get(endpoint)
    declared: Access | None = getattr(view, "_access", None)
    return declared


def bearer_token() -> str:
    """Return the bearer token of the request.

    :raises Unauthorized: no ``Authorization: Bearer`` header.
    """
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("A bearer token is required: get one from POST /auth/token "
                           "(SMART Backend Services).", headers=_challenge("invalid_request"))
    return token.strip()


def token_audience() -> str:
    """Return the audience access tokens are issued for and checked against: the FHIR base
    URL of this server as configured (``GATEWAY_PUBLIC_URL``, else
    ``http://127.0.0.1:<GATEWAY_PORT>``), whatever ``Host`` the request names."""
    return f"{public_base()}/fhir"


def _challenge(error: str) -> dict[str, str]:
    """Return the ``WWW-Authenticate`` header of a 401 (RFC 6750 section 3)."""
    return {"WWW-Authenticate": f'Bearer realm="contactpoint-gateway", error="{error}"'}


def authenticate() -> tuple[Caller, ClientLimits]:
    """Return the caller behind the request's bearer token, and its client's limits.

    :raises Unauthorized: missing, malformed, expired token, a token for another server, or a
        disabled or re-keyed client.
    """
    try:
        claims = read_access_token(bearer_token(), current_app.config["INSTANCE_PATH"],
                                   token_audience())
    except TokenError as exc:
        raise Unauthorized(exc.description, headers=_challenge("invalid_token")) from exc
    return client_caller(claims)


def client_caller(claims: dict[str, Any]) -> tuple[Caller, ClientLimits]:
    """Return the caller and limits of the client named by verified token ``claims``.

    :raises Unauthorized: the client is disabled or was re-keyed since the token was issued.
    """
    client = client_row(str(claims.get("sub")))
    if client is None or client.status != "active" or client.key_version != claims.get("kv"):
        raise Unauthorized("The token's client is disabled or its keys were rotated: "
                           "request a new token.", headers=_challenge("invalid_token"))
    caller = Caller(client.client_id, client.organisation_code,
                    _scopes(str(claims.get("scope", ""))), client.rights,
                    request.headers.get(PURPOSE_HEADER, "")[:100] or None, g.request_id)
    return caller, ClientLimits(client.rate_limit_per_minute, client.harvest_ceiling_per_hour)


@dataclass(frozen=True)
class ClientRow:
    """What every request needs of its client's registration."""

    client_id: str
    organisation_code: str
    rights: frozenset[str]
    status: str
    key_version: int
    rate_limit_per_minute: int
    harvest_ceiling_per_hour: int


_Cached = tuple[float, ClientRow | None]


class ClientCache:
    """Client registrations as this process last read them, at most
    ``GATEWAY_CLIENT_CACHE_SECONDS`` old: one read per client and interval instead of one per
    request (0: read on every request).

    A change made in this process (disable, key rotation, new limits: any flush of a ``Client``)
    empties the cache at once, and again after its commit; a change made by another process
    (the CLI, another worker) takes effect there within the interval, as the decommissioning
    phase does (``adapter.decommission.phases``).
    """

    def __init__(self) -> None:
        self._rows: weakref.WeakKeyDictionary[Database, dict[str, _Cached]] = \
            weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._generation = 0  # raised by clear(): a read that began before is not kept

    def get(self, db: Database, client_id: str, max_age: float) -> ClientRow | None:
        """Return the registration of ``client_id`` in ``db`` (None: no such client)."""
        now = time.monotonic()
        with self._lock:
            cached = self._rows.get(db, {}).get(client_id)
        if cached is not None and now - cached[0] < max_age:
            return cached[1]
        generation = self._generation
        row = _read_client(db, client_id)
        if max_age > 0:
            with self._lock:
                if generation != self._generation:
                    return row
                rows = self._rows.setdefault(db, {})
                if len(rows) > 4096:  # bounded: client ids come from verified tokens only
                    rows.clear()
                rows[client_id] = (now, row)
        return row

    def clear(self) -> None:
        """Forget every cached registration."""
        with self._lock:
            self._rows.clear()
            self._generation += 1


CLIENTS: Final = ClientCache()


def _read_client(db: Database, client_id: str) -> ClientRow | None:
    """Read one client's registration from the database."""
    with db.engine.connect() as connection:
        found = connection.execute(select(
            Client.client_id, Client.organisation_code, Client.rights, Client.status,
            Client.key_version, Client.rate_limit_per_minute, Client.harvest_ceiling_per_hour,
        ).where(Client.client_id == client_id)).first()
    if found is None:
        return None
    return ClientRow(found.client_id, found.organisation_code, frozenset(found.rights),
                     found.status, found.key_version, found.rate_limit_per_minute,
                     found.harvest_ceiling_per_hour)


def client_row(client_id: str) -> ClientRow | None:
    """Return the registration of ``client_id`` (cached briefly: see ``ClientCache``)."""
    return CLIENTS.get(get_db(), client_id, float(current_app.config["CLIENT_CACHE_SECONDS"]))


CHANGED: Final = "clients_changed"


@event.listens_for(Client, "after_insert")
@event.listens_for(Client, "after_update")
@event.listens_for(Client, "after_delete")
def _client_changed(_mapper: Any, _connection: Any, target: Client) -> None:
    """Forget cached registrations when a client is written, and again after the commit (so
    that a request between the flush and the commit cannot keep the old row)."""
    CLIENTS.clear()
    session = object_session(target)
    if session is not None:
        session.info[CHANGED] = True


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    """Forget cached registrations after a commit that changed a client."""
    if session.info.pop(CHANGED, False):
        CLIENTS.clear()


def authenticate_admin() -> tuple[Caller, ClientLimits]:
    """Return the caller of an admin route: by bearer token, else, on the admin pages only
    (the dashboard under ``/admin``, never the FHIR API), by admin session cookie
    (``adapter.security.admin_session``).

    :raises Unauthorized: neither a valid token nor a valid session.
    """
    from adapter.security.admin_session import (
        COOKIE,
        in_admin_pages,
        read_session,
        session_audience,
    )

    session = request.cookies.get(COOKIE)
    if request.headers.get("Authorization") or not session or not in_admin_pages(request.path):
        return authenticate()
    try:
        claims = read_session(session, current_app.config["INSTANCE_PATH"],
                              session_audience(public_base()))
    except TokenError as exc:
        raise Unauthorized(exc.description, headers=_challenge("invalid_token")) from exc
    return client_caller(claims)


@functools.lru_cache(maxsize=1024)
def _scopes(text: str) -> list[Scope]:
    """Parse a granted scope string (cached: tokens repeat it)."""
    return parse_scopes(text)


def enforce_access() -> None:
    """Authenticate and authorise the request by its route's declaration (before_request).

    :raises Unauthorized: no valid token.
    :raises Throttled: the client is over its rate limit.
    :raises Forbidden: the route is undeclared, or the token lacks the scope or right.
    :raises PhaseRefused: the decommissioning phase refuses the route's kind.
    """
    g.request_id = request.headers.get("X-Request-ID", "")[:64] or uuid.uuid4().hex
    if request.endpoint is None:
        return  # no route: the 404/405 handler answers
    access = access_of(request.endpoint)
    if access is None:
        raise Forbidden("This route has no access declaration.")
    # The phase policy decides first which kinds of route still answer in the current
    # decommissioning phase (docs/domain.md "The decommissioning timetable"), through the gate
    # the decommissioning hands in (``adapter.decommission.gate.enforce_request``).
    phase_gate: PhaseGate = current_app.extensions[PHASE_GATE_KEY]
    phase_gate(access.kind, access.resource_type)  # (Subscription: by its topic)
    if access.public:
        return
    caller, limits = authenticate_admin() if access.kind == "admin" else authenticate()
    # Every authenticated request counts, refused ones too: probing is use.
    enforce_limits(caller, limits)
    if access.right and not caller.has_right(access.right):
        raise Forbidden(f"This needs the '{access.right}' right.")
    if access.resource_type and access.interaction:
        require_scope(caller, access.resource_type, access.interaction)
    g.caller = caller


def require_scope(caller: Caller, resource_type: str, name: str) -> None:
    """Check one interaction against the caller's scopes (routes that act on several types).

    :raises Forbidden: no scope allows it.
    """
    if not caller.may(resource_type, name):
        raise Forbidden(f"The token's scopes do not allow {name} on {resource_type} "
                        f"(e.g. system/{resource_type}.rs for reads).")


def init_app(app: Flask) -> None:
    """Install the access check before every request."""
    app.before_request(enforce_access)
