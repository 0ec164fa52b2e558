"""``contactpoint-gateway clients ...`` and ``token`` commands."""

from __future__ import annotations

import datetime as dt
import secrets
import time
from pathlib import Path
from typing import Any, Final

import click
import orjson
from flask.cli import with_appcontext
from joserfc import jwt
from joserfc.jwk import ECKey
from sqlalchemy import select

from adapter.db import get_db
from adapter.errors import GatewayError
from adapter.models import AuditRecord, Client, Organisation
from adapter.models.canonical import as_utc
from adapter.security import audit
from adapter.security import clients as registry
from adapter.security.policy.phase import command_kind
from adapter.security.tokens import ASSERTION_TYPE, TokenError, exchange_assertion
from adapter.settings import Settings


def command_settings() -> Settings:
    """Return the running command's settings (``adapter.runtime.command_runtime``)."""
    from adapter.runtime import command_runtime

    return command_runtime()[0]


def _keys_dir() -> Path:
    """Return the folder of demo clients' private keys under the instance folder."""
    return Path(command_settings().instance_path) / "keys"


def _cli_base() -> str:
    """Return the base URL the server is reached at, as the CLI knows it: ``GATEWAY_PUBLIC_URL``,
    else ``http://127.0.0.1:<GATEWAY_PORT>`` (where ``make run`` serves)."""
    return command_settings().public_base


def _cli_token_url() -> str:
    """Return the token URL the CLI signs assertions for."""
    return f"{_cli_base()}/auth/token"


def _load_jwks(jwks_file: str) -> Any:
    """Read a JWKS file (JSON).

    :raises click.BadParameter: not JSON.
    """
    try:
        return orjson.loads(Path(jwks_file).read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise click.BadParameter(f"cannot read a JSON JWKS: {exc}") from exc


@click.group("clients")
def clients_group() -> None:
    """Register, list, disable and re-key client systems."""


@command_kind("admin")
@clients_group.command("add")
@click.argument("client_id")
@click.option("--name", required=True, help="Human-readable name of the system.")
@click.option("--organisation", required=True, help="ODS code or GSS code of its organisation.")
@click.option("--scopes", required=True, help='Allowed SMART scopes, e.g. "system/*.rs".')
@click.option("--right", "rights", multiple=True,
              type=click.Choice(["shielded", "sensitive", "audit", "admin"]), help="A right.")
@click.option("--jwks", "jwks_file", required=True, type=click.Path(exists=True, dir_okay=False),
              help="File holding the client's public JWKS.")
@click.option("--rate-limit", type=click.IntRange(min=1), default=None,
              help="Requests a minute before 429 (default 600).")
@click.option("--harvest-ceiling", type=click.IntRange(min=1), default=None,
              help="Distinct children read in an hour before an alert (default 500).")
@with_appcontext
def add_command(client_id: str, name: str, organisation: str, scopes: str,
                rights: tuple[str, ...], jwks_file: str, rate_limit: int | None,
                harvest_ceiling: int | None) -> None:
    """Register a client system with its public keys and its abuse limits."""
    limits = _limits(rate_limit, harvest_ceiling)
    _run(lambda s: registry.add_client(s, client_id, name, organisation, scopes, list(rights),
                                       _load_jwks(jwks_file), **limits))
    click.echo(f"registered {client_id}")


def _limits(rate_limit: int | None, harvest_ceiling: int | None) -> dict[str, int]:
    """Return the limits given on the command line as Client column values."""
    given = {"rate_limit_per_minute": rate_limit, "harvest_ceiling_per_hour": harvest_ceiling}
    return {name: value for name, value in given.items() if value is not None}


@command_kind("admin")
@clients_group.command("set-limits")
@click.argument("client_id")
@click.option("--rate-limit", type=click.IntRange(min=1), default=None,
              help="Requests a minute before 429.")
@click.option("--harvest-ceiling", type=click.IntRange(min=1), default=None,
              help="Distinct children read in an hour before an alert.")
@with_appcontext
def set_limits_command(client_id: str, rate_limit: int | None,
                       harvest_ceiling: int | None) -> None:
    """Change a client's abuse limits (they apply from its next request)."""
    limits = _limits(rate_limit, harvest_ceiling)
    _run(lambda s: registry.set_limits(s, client_id, **limits))
    click.echo(f"limits of {client_id}: " + ", ".join(f"{k}={v}" for k, v in limits.items()))


@command_kind("admin")
@clients_group.command("list")
@with_appcontext
def list_command() -> None:
    """List registered clients."""
    with get_db().sessions() as session:
        for client in session.scalars(select(Client).order_by(Client.client_id)):
            click.echo(f"{client.client_id}\t{client.status}\t{client.organisation_code}\t"
                       f"{client.scopes}\t{','.join(client.rights) or '-'}\t"
                       f"{client.rate_limit_per_minute}/min\t"
                       f"{client.harvest_ceiling_per_hour} children/h")


@command_kind("admin")
@clients_group.command("disable")
@click.argument("client_id")
@with_appcontext
def disable_command(client_id: str) -> None:
    """Disable a client: its tokens stop working at once."""
    _run(lambda s: registry.disable_client(s, client_id))
    click.echo(f"disabled {client_id}")


@command_kind("admin")
@clients_group.command("rotate-key")
@click.argument("client_id")
@click.option("--jwks", "jwks_file", required=True, type=click.Path(exists=True, dir_okay=False))
@with_appcontext
def rotate_command(client_id: str, jwks_file: str) -> None:
    """Replace a client's public keys (tokens issued before stop working)."""
    _run(lambda s: registry.rotate_key(s, client_id, _load_jwks(jwks_file)))
    click.echo(f"rotated keys of {client_id}")


@command_kind("admin")
@clients_group.command("ensure-demo")
@with_appcontext
def ensure_demo_command() -> None:
    """Register demo-admin and demo-la (keys under the instance folder) if absent."""
    with get_db().transaction() as session:
        authority = session.scalar(select(Organisation.gss_code).where(
            Organisation.type == "local-authority").order_by(Organisation.id).limit(1))
        for spec in registry.demo_clients(authority or "E09000001"):
            if session.scalar(select(Client.id).where(Client.client_id == spec["client_id"])):
                continue
            jwks = registry.generate_keypair(_keys_dir() / f"{spec['client_id']}.jwk.json")
            registry.add_client(session, jwks=jwks, **spec)
            click.echo(f"registered {spec['client_id']}")


def sign_assertion(client_id: str, token_url: str, key_file: Path) -> str:
    """Return a SMART client assertion for ``client_id`` signed with its private key."""
    key = ECKey.import_key(orjson.loads(key_file.read_bytes()))
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": token_url, "exp": now + 240,
              "jti": secrets.token_urlsafe(24)}
    return jwt.encode({"alg": "ES384", "kid": key.kid or "", "typ": "JWT"}, claims, key,
                      algorithms=["ES384"])


@command_kind("meta")  # as POST /auth/token
@click.command("token")
@click.option("--client", "client_id", required=True, help="A client whose key is in instance/.")
@click.option("--scope", default="system/*.cruds", show_default=True, help="Scopes to ask for.")
@with_appcontext
def token_command(client_id: str, scope: str) -> None:
    """Print a bearer token for a demo client: signs a real assertion and runs the exchange."""
    key_file = _keys_dir() / f"{client_id}.jwk.json"
    if not key_file.exists():
        raise click.ClickException(f"no private key for {client_id} at {key_file}")
    form = {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": sign_assertion(client_id, _cli_token_url(), key_file),
            "scope": scope}
    try:
        with get_db().transaction() as session:
            issued = exchange_assertion(session, form, {_cli_token_url()},
                                        command_settings().instance_path,
                                        command_settings().token_lifetime,
                                        f"{_cli_base()}/fhir")
    except TokenError as exc:
        raise click.ClickException(f"{exc.error}: {exc.description}") from exc
    click.echo(issued.access_token)


def _run(action: Any) -> None:
    """Run a registry action in a transaction, turning gateway errors into CLI errors.

    :raises click.ClickException: the action failed.
    """
    try:
        with get_db().transaction() as session:
            action(session)
    except GatewayError as exc:
        raise click.ClickException(exc.message) from exc


OUTCOMES: Final = {"0": "success", "4": "minor failure", "8": "serious failure",
                   "12": "major failure"}
REPORT_COLUMNS: Final = (("when", 24), ("who", 20), ("organisation", 12), ("action", 16),
                         ("what", 16), ("outcome", 16), ("override", 8), ("purpose", 0))


@click.group("audit")
def audit_group() -> None:
    """Report on the audit trail."""


def _report_row(values: tuple[str, ...]) -> str:
    """Return one line of the report table, each column padded to its width."""
    return "  ".join(f"{value:<{width}}" if width else value
                     for value, (_name, width) in zip(values, REPORT_COLUMNS, strict=True))


def _report_values(entry: AuditRecord) -> tuple[str, ...]:
    """Return the columns of one audit record: who, when, what, never a child's data."""
    moment = as_utc(entry.recorded) or entry.recorded
    return (moment.isoformat(timespec="seconds").replace("+00:00", "Z"), entry.client_id,
            entry.organisation_code, entry.action, entry.resource_type or "-",
            f"{entry.outcome} {OUTCOMES.get(entry.outcome, '')}".strip(),
            "yes" if entry.override else "-", entry.purpose_of_use or "-")


@command_kind("read")  # as GET /fhir/AuditEvent
@audit_group.command("report")
@click.option("--child", help="The child: its Patient id or ContactPoint ID.")
@click.option("--client", "client_id", help="A registered client's id.")
@click.option("--since", type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
              help="Only events from this date or time on (UTC).")
@with_appcontext
def report_command(child: str | None, client_id: str | None,
                   since: dt.datetime | None) -> None:
    """Print who accessed one child's data, or what one client did: when, organisation,
    action, outcome, override and purpose of use; no child's personal data is printed.

    \f
    :raises click.UsageError: neither or both of --child and --client.
    """
    if (child is None) == (client_id is None):
        raise click.UsageError("Give either --child or --client.")
    child_ref = audit.child_ref_of(child) if child is not None else None
    click.echo(f"audit trail of Patient/{child_ref}" if child_ref else
               f"audit trail of client {client_id}")
    click.echo(_report_row(tuple(name for name, _width in REPORT_COLUMNS)))
    count = 0
    with get_db().transaction() as session:
        for entry in audit.trail(session, child_ref=child_ref, client_id=client_id,
                                 since=since.replace(tzinfo=dt.UTC) if since else None):
            click.echo(_report_row(_report_values(entry)))
            count += 1
    click.echo(f"{count} events")
