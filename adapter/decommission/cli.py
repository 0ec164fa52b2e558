"""``contactpoint-gateway decommission ...``: plan, status, advance, remind, escalation,
destroy and verify-certificate. Times are the machine's clock in UTC; ``--now`` moves
a phase on before its date (drills)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Final

import click
import orjson
from flask.cli import with_appcontext
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet

from adapter.db import get_db
from adapter.decommission import phases
from adapter.decommission.certificate import CertificateError, audit_digest, verify_certificate
from adapter.decommission.certify import certificate_folder, issue_certificate
from adapter.decommission.contact import set_contact, unannounced
from adapter.decommission.destruction import destroy
from adapter.decommission.plan import PlanView, load_plan, make_timetable, save_plan, view
from adapter.decommission.resources import instant, local_text, timetable_text
from adapter.decommission.tasks import TaskRow, escalate, remind, task_rows
from adapter.decommission.transitions import NotDue, advance
from adapter.errors import GatewayError, NotFound
from adapter.models.base import utcnow
from adapter.security.keys import service_key
from adapter.security.policy.phase import command_kind
from adapter.settings import Settings


def command_settings() -> Settings:
    """Return the running command's settings (``adapter.runtime.command_runtime``)."""
    from adapter.runtime import command_runtime

    return command_runtime()[0]


def _fail(exc: GatewayError) -> click.ClickException:
    """Return a CLI error for a gateway error."""
    return click.ClickException(exc.message)


@click.group("decommission")
def decommission_group() -> None:
    """Run the directory's decommissioning: plan, run-down, switch-off, destruction."""


@command_kind("admin")
@decommission_group.command("plan")
@click.option("--last-use", required=True, help="Day of last use (YYYY-MM-DD): run-down begins.")
@click.option("--switch-off", required=True,
              help="Switch-off: YYYY-MM-DD (at GATEWAY_DECOMMISSION_SWITCH_OFF_TIME) or "
                   "YYYY-MM-DDTHH:MM.")
@click.option("--destroy-by", default=None,
              help="Destruction deadline; default the switch-off plus two calendar months.")
@click.option("--reminder-days", type=int, default=None, help="Days between reminders.")
@click.option("--escalate-days", type=int, default=None,
              help="Days after switch-off before an owner not completed is escalated.")
@click.option("--drill", is_flag=True,
              help="A drill: dates in the past and a short purge window are allowed, and every "
                   "notice, the dashboard and the certificate say it is a drill.")
@with_appcontext
def plan_command(last_use: str, switch_off: str, destroy_by: str | None,
                 reminder_days: int | None, escalate_days: int | None, drill: bool) -> None:
    """Make or change the plan and announce it to subscribers. Dates in the past, or fewer than
    GATEWAY_DECOMMISSION_MIN_PURGE_DAYS between switch-off and destroy-by, are refused unless
    --drill.

    \f
    :raises click.ClickException: invalid dates, a timetable that does not give holders their
        time (without --drill), or already switched off.
    """
    settings = command_settings()
    try:
        timetable = make_timetable(last_use, switch_off, destroy_by,
                                   settings.decommission_time_zone,
                                   settings.decommission_switch_off_time)
        with get_db().write_transaction() as session:
            plan = save_plan(session, timetable,
                             reminder_days or settings.decommission_reminder_days,
                             settings.decommission_escalate_days if escalate_days is None
                             else escalate_days,
                             base=settings.canonical_base,
                             min_days=settings.decommission_min_purge_days, drill=drill)
            text = timetable_text(view(plan))
    except GatewayError as exc:
        raise _fail(exc) from exc
    phases.forget()
    click.echo(text)


COLUMNS: Final = (("system", "client_id"), ("organisation", "organisation_code"),
                  ("name", "organisation_name"), ("status", "shown"), ("task status", "status"),
                  ("children", "children"), ("destroyed", "purged"), ("reached", "delivered"),
                  ("answered", "answered"), ("reminders", "reminders"), ("reason", "reason"))


def _cell(value: Any, time_zone: str) -> str:
    """Return one table cell: dates in the plan's time zone, none as ``-``."""
    if value is None or value == "":
        return "-"
    if isinstance(value, dt.datetime):
        return local_text(value, time_zone)
    return str(value)


def _echo_rows(rows: list[TaskRow], time_zone: str) -> None:
    """Print purge Tasks as a table with a header line, columns padded to their width."""
    table = [[label.upper() for label, _ in COLUMNS]]
    table += [[_cell(getattr(row, name), time_zone) for _, name in COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    for line in table:
        click.echo("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())


def _row_json(row: TaskRow) -> dict[str, Any]:
    """Return one purge Task of ``status --json``."""
    values = {name: getattr(row, name) for _, name in COLUMNS}
    values |= {"task": row.resource_id, "client_name": row.client_name,
               "escalated": row.escalated}
    return {k: instant(v) if isinstance(v, dt.datetime) else v for k, v in values.items()}


def _status_json(plan: PlanView | None, rows: list[TaskRow]) -> dict[str, Any]:
    """Return what ``status --json`` prints."""
    if plan is None:
        return {"phase": "live", "plan": None, "tasks": []}
    t = plan.timetable
    moments = {"runDownAt": t.run_down_at, "switchOffAt": t.switch_off_at,
               "destroyByAt": t.destroy_by_at, "runDownStarted": plan.run_down_started,
               "switchedOff": plan.switched_off, "destroyed": plan.destroyed}
    return {"phase": plan.phase, "drill": plan.drill, "timeZone": t.time_zone,
            "lastUse": t.last_use.isoformat(), "reminderDays": plan.reminder_days,
            "escalateDays": plan.escalate_days,
            **{k: instant(v) if v else None for k, v in moments.items()},
            "tasks": [_row_json(r) for r in rows]}


def _echo_status(plan: PlanView, rows: list[TaskRow]) -> None:
    """Print the phase, the timetable (labelled lines) and the purge Tasks (a table)."""
    zone_name = plan.timetable.time_zone
    lines = [("phase", plan.phase + (" (drill)" if plan.drill else "")),
             ("last use", plan.timetable.last_use.isoformat()),
             ("run-down from", plan.timetable.run_down_at),
             ("switch-off", plan.timetable.switch_off_at),
             ("destroy-by", plan.timetable.destroy_by_at),
             ("run-down began", plan.run_down_started), ("switched off", plan.switched_off),
             ("destroyed", plan.destroyed),
             ("reminders", f"every {plan.reminder_days} days"),
             ("escalation", f"{plan.escalate_days} days after switch-off")]
    for label, value in lines:
        click.echo(f"{label + ':':<16}{_cell(value, zone_name)}")
    click.echo("")
    if rows:
        _echo_rows(rows, zone_name)
    else:
        click.echo("no purge Tasks (they are issued at switch-off)")


@command_kind("admin")
@decommission_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@with_appcontext
def status_command(as_json: bool) -> None:
    """Print the phase, the timetable and each system's purge status."""
    with get_db().sessions() as session:
        stored = load_plan(session)
        plan = view(stored) if stored is not None else None
        rows = task_rows(session, plan, utcnow()) if plan is not None else []
    if as_json:
        click.echo(orjson.dumps(_status_json(plan, rows), option=orjson.OPT_INDENT_2))
    elif plan is None:
        click.echo("phase: live (no decommissioning plan)")
    else:
        _echo_status(plan, rows)


@command_kind("admin")
@decommission_group.command("advance")
@click.option("--now", "force", is_flag=True, help="Advance now, before the date (drills).")
@with_appcontext
def advance_command(force: bool) -> None:
    """Move to the next phase when its time has come (run it from cron every minute). Nothing
    due is not a failure: it says so and exits 0.

    \f
    :raises click.ClickException: the phase could not be changed (a failure).
    """
    try:
        done = advance(get_db(), utcnow(), command_settings(), force)
    except (NotDue, NotFound) as exc:
        click.echo(f"nothing due: {exc.message}")
        return
    except GatewayError as exc:
        raise _fail(exc) from exc
    click.echo(f"{done.before} -> {done.after}"
               + (f"; {done.tasks} purge tasks issued" if done.after == "switched-off" else ""))
    if done.after == "switched-off":
        with get_db().sessions() as session:
            untold = unannounced(session)
        if untold:
            click.echo(f"{len(untold)} holders have neither a purge-instruction subscription nor "
                       "a contact: they see their Task only if they search for it (register "
                       "one with `decommission contact`): " + ", ".join(untold), err=True)


@command_kind("admin")  # a client's registration, like `clients`: no child's data
@decommission_group.command("contact")
@click.argument("client_id")
@click.argument("contact", required=False)
@click.option("--remove", is_flag=True, help="Remove the client's contact.")
@with_appcontext
def contact_command(client_id: str, contact: str | None, remove: bool) -> None:
    """Register where a holder is told its purge instruction without subscribing: CONTACT is
    mesh:MAILBOX or an https:// rest-hook endpoint (docs/holders.md "Being told").

    \f
    :raises click.ClickException: no such client, or not a MESH mailbox or https URL.
    """
    if not remove and not contact:
        raise click.ClickException("Give the contact (mesh:MAILBOX or https://...) or --remove.")
    try:
        with get_db().write_transaction() as session:
            client = set_contact(session, client_id, None if remove else contact,
                                 command_settings())
            shown = client.contact
    except GatewayError as exc:
        raise _fail(exc) from exc
    click.echo(f"{client_id}: contact {shown or 'removed'}")


def _switched_off_plan(session: Any) -> Any:
    """Return the plan's view when switched off.

    :raises click.ClickException: otherwise.
    """
    stored = load_plan(session, lock=True)
    if stored is None or stored.phase != "switched-off":
        raise click.ClickException("Purge instructions exist only while switched off.")
    return view(stored)


@command_kind("purge")
@decommission_group.command("remind")
@click.option("--now", "force", is_flag=True, help="Remind every open owner now.")
@with_appcontext
def remind_command(force: bool) -> None:
    """Send the purge Task again to owners due a reminder (run it from cron daily)."""
    with get_db().write_transaction() as session:
        sent = remind(session, _switched_off_plan(session), utcnow(), command_settings(), force)
    click.echo(f"{sent} reminders sent")


@command_kind("purge")
@decommission_group.command("escalation")
@with_appcontext
def escalation_command() -> None:
    """Print the owners not completed by the escalation threshold (and record them)."""
    with get_db().write_transaction() as session:
        plan = _switched_off_plan(session)
        rows = escalate(session, plan, utcnow())
    _echo_rows(rows, plan.timetable.time_zone)
    click.echo(f"{len(rows)} escalated", err=True)


@command_kind("purge")
@decommission_group.command("destroy")
@click.option("--yes", is_flag=True, help="Confirm: every personal datum is destroyed.")
@click.option("--override", "override", metavar="REASON", default=None,
              help="Destroy before destroy-by, or while purge Tasks are neither completed nor "
                   "escalated, for this reason (recorded in the certificate).")
@with_appcontext
def destroy_command(yes: bool, override: str | None) -> None:
    """Tell every subscriber, destroy every personal datum, scrub the storage and issue the
    signed certificate.

    \f
    :raises click.ClickException: not confirmed, not switched off, or too early without an
        override reason.
    """
    if not yes:
        raise click.ClickException("Destruction cannot be undone: confirm with --yes.")
    settings, db, now = command_settings(), get_db(), utcnow()
    instance = settings.instance_path
    try:
        done = destroy(db, settings, now, override)
        done.finished = utcnow()
        document = issue_certificate(db, settings, done, done.finished)
    except GatewayError as exc:
        raise _fail(exc) from exc
    notice = document["certificate"]["finalNotice"]
    click.echo(f"destroyed; final notice delivered to "
               f"{sum(1 for n in notice if n['delivered'])} of {len(notice)} subscriptions; "
               f"certificate {document['certificate']['certificateId']} in "
               f"{certificate_folder(instance)}")


def _key(jwks_file: str | None) -> ECKey:
    """Return the public key to verify with: from ``jwks_file``, else the service key.

    :raises click.ClickException: the file holds no EC key.
    """
    if jwks_file is None:
        return service_key(command_settings().instance_path)
    try:
        key = KeySet.import_key_set(orjson.loads(Path(jwks_file).read_bytes())).keys[0]
    except (OSError, orjson.JSONDecodeError, JoseError, KeyError, IndexError, ValueError) as exc:
        raise click.ClickException(f"cannot read a JWKS from {jwks_file}") from exc
    if not isinstance(key, ECKey):
        raise click.ClickException("the JWKS holds no P-384 (EC) key")
    return key


@command_kind("meta")  # as GET /decommission/certificate.json
@decommission_group.command("verify-certificate")
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--jwks", "jwks_file", type=click.Path(exists=True, dir_okay=False),
              help="Public key (JWKS); default the service key of this instance.")
@with_appcontext
def verify_command(file: str | None, jwks_file: str | None) -> None:
    """Verify a certificate's signature (JSON or XML; default the instance's JSON one) and,
    where this database holds the audit trail, its digest.

    \f
    :raises click.ClickException: it does not verify.
    """
    path = Path(file) if file else certificate_folder(
        command_settings().instance_path) / "certificate.json"
    try:
        verified = verify_certificate(path.read_bytes(), _key(jwks_file))
    except (OSError, CertificateError) as exc:
        raise click.ClickException(f"{path}: does not verify: {exc}") from exc
    click.echo(f"{path}: signature verifies ({verified.form}, certificate "
               f"{verified.certificate_id}, key {verified.key_id})")
    _check_digest(verified.audit)


def _check_digest(claimed: dict[str, Any]) -> None:
    """Compare the certificate's audit digest with this database's audit trail, if destroyed.

    :raises click.ClickException: the digests differ.
    """
    last = str(claimed.get("lastRecordId", ""))
    with get_db().sessions() as session:
        stored = load_plan(session)
        if stored is None or stored.phase != "destroyed" or not last.isdigit():
            click.echo("audit trail: not checked (this database is not the destroyed one)")
            return
        _count, _last, digest = audit_digest(session, int(last))
    if digest != claimed.get("digest"):
        raise click.ClickException("the audit trail in this database does not match the "
                                   "certificate's digest")
    click.echo(f"audit trail: {claimed.get('records')} records match {digest}")
