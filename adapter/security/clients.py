"""The client registry: registering systems with their organisation, scopes, rights and
public keys; disabling them; rotating their keys; and the demo clients of ``make run``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Final

import orjson
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet
from sqlalchemy import select
from sqlalchemy.orm import Session

from adapter.errors import Conflict, Invalid, NotFound
from adapter.identifiers import InvalidIdentifier, validate_gss_code, validate_ods_code
from adapter.models import Client
from adapter.models.security import CLIENT_RIGHTS
from adapter.security.scopes import InvalidScope, parse_scopes

PRIVATE_MEMBERS: Final = {"d", "p", "q", "dp", "dq", "qi", "k"}
CLIENT_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,99}")
ALL_SCOPES: Final = "system/*.cruds"
LIMITS: Final = {"rate_limit_per_minute": "requests a minute",
                  "harvest_ceiling_per_hour": "distinct children an hour"}


def validate_organisation_code(code: str) -> str:
    """Return an ODS code or a children's services authority GSS code.

    :raises Invalid: neither.
    """
    try:
        return validate_gss_code(code) if code.upper().startswith("E") and len(code) == 9 \
            else validate_ods_code(code)
    except InvalidIdentifier as exc:
        raise Invalid(f"organisation: {exc.reason}", expression="organisation") from exc


def validate_jwks(jwks: Any) -> dict[str, Any]:
    """Return a JWKS of public signing keys (RSA or EC) suitable for RS384/ES384.

    :raises Invalid: not a JWKS, a private key member present, or a key that cannot sign.
    """
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list) or not jwks["keys"]:
        raise Invalid("jwks: a JSON Web Key Set with at least one key is needed",
                      expression="jwks")
    for key in jwks["keys"]:
        if not isinstance(key, dict) or PRIVATE_MEMBERS & set(key):
            raise Invalid("jwks: only public keys may be registered", expression="jwks")
        if key.get("kty") not in ("RSA", "EC"):
            raise Invalid("jwks: keys must be RSA or EC (RS384 / ES384)", expression="jwks")
    try:
        KeySet.import_key_set(jwks)  # type: ignore[arg-type]
    except (JoseError, ValueError, TypeError) as exc:
        raise Invalid(f"jwks: not a valid key set ({type(exc).__name__})",
                      expression="jwks") from exc
    return jwks


def _validate_registration(client_id: str, scopes: str, rights: list[str]) -> None:
    """Check a client id, its scopes and rights.

    :raises Invalid: a malformed id, scope or an unknown right.
    """
    if not CLIENT_ID_RE.fullmatch(client_id):
        raise Invalid("client id: 2-100 letters, digits, '.', '_' or '-'", expression="client_id")
    try:
        parse_scopes(scopes)
    except InvalidScope as exc:
        raise Invalid(f"scopes: {exc}", expression="scopes") from exc
    unknown = set(rights) - set(CLIENT_RIGHTS)
    if unknown:
        raise Invalid(f"rights: unknown {sorted(unknown)}; allowed {list(CLIENT_RIGHTS)}",
                      expression="rights")


def add_client(session: Session, client_id: str, name: str, organisation_code: str,
               scopes: str, rights: list[str], jwks: Any, **limits: int) -> Client:
    """Register a client.

    :raises Invalid: bad id, organisation, scopes, rights or keys.
    :raises Conflict: the client id is taken.
    """
    _validate_registration(client_id, scopes, rights)
    organisation = validate_organisation_code(organisation_code)
    keys = validate_jwks(jwks)
    if session.scalar(select(Client.id).where(Client.client_id == client_id)) is not None:
        raise Conflict(f"client '{client_id}' is already registered")
    client = Client(client_id=client_id, name=name, organisation_code=organisation,
                    scopes=" ".join(scopes.split()), rights=sorted(set(rights)), jwks=keys,
                    **limits)
    session.add(client)
    session.flush()
    return client


def get_client(session: Session, client_id: str) -> Client:
    """Return a registered client.

    :raises NotFound: no such client.
    """
    client = session.scalar(select(Client).where(Client.client_id == client_id))
    if client is None:
        raise NotFound(f"no client '{client_id}'")
    return client


def disable_client(session: Session, client_id: str) -> Client:
    """Disable a client: its tokens stop working at once and it gets no new ones.

    :raises NotFound: no such client.
    """
    client = get_client(session, client_id)
    client.status = "disabled"
    return client


def rotate_key(session: Session, client_id: str, jwks: Any) -> Client:
    """Replace a client's public keys; tokens issued before stop working.

    :raises NotFound: no such client.
    :raises Invalid: the new keys are not a valid public JWKS.
    """
    client = get_client(session, client_id)
    client.jwks = validate_jwks(jwks)
    client.key_version += 1
    return client


def set_limits(session: Session, client_id: str, **limits: int) -> Client:
    """Change a client's rate limit and harvesting ceiling (``rate_limit_per_minute``,
    ``harvest_ceiling_per_hour``).

    :raises NotFound: no such client.
    :raises Invalid: a limit that is not a positive number, or an unknown one.
    """
    client = get_client(session, client_id)
    for name, value in limits.items():
        if name not in LIMITS or value < 1:
            raise Invalid(f"{name}: a positive number of {LIMITS.get(name, 'limit')} is needed",
                          expression=name)
        setattr(client, name, value)
    return client


def generate_keypair(path: Path) -> dict[str, Any]:
    """Create a P-384 key pair for a client; keep the private JWK at ``path`` (mode 0600) and
    return the public JWKS to register."""
    key = ECKey.generate_key("P-384", parameters={"alg": "ES384", "use": "sig"})
    private = key.as_dict(private=True)
    private["kid"] = key.thumbprint()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_bytes(orjson.dumps(private))
    path.chmod(0o600)
    public = {k: v for k, v in private.items() if k not in PRIVATE_MEMBERS}
    return {"keys": [public]}


def demo_clients(la_gss_code: str) -> list[dict[str, Any]]:
    """Return the demo clients of the outside contract (docs/architecture.md): demo-admin with every
    scope and right, demo-la for one authority with national reads and its own writes."""
    return [
        {"client_id": "demo-admin", "name": "Demo administrator",
         "organisation_code": la_gss_code, "scopes": ALL_SCOPES, "rights": list(CLIENT_RIGHTS)},
        {"client_id": "demo-la", "name": "Demo local authority system",
         "organisation_code": la_gss_code, "scopes": ALL_SCOPES, "rights": []},
    ]
