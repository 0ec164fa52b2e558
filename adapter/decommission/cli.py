"""``contactpoint-gateway decommission ...``: plan, status, advance, remind, escalation,
destroy and verify-certificate (issue 7). Times are the machine's clock in UTC; ``--now`` moves
a phase on before its date (drills)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import orjson
from flask import current_app
from flask.cli import with_appcontext
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet

from adapter.db import get_db
from adapter.decommission import phases
from adapter.decommission.certificate import CertificateError, audit_digest, verify_certificate
from adapter.decommission.certify import certificate_folder, issue_certificate
from adapter.decommission.destruction import destroy
from adapter.decommission.plan import load_plan, make_timetable, save_plan, view
from adapter.decommission.resources import local_text, timetable_text
from adapter.decommission.tasks import TaskRow, escalate, remind, task_rows
from adapter.decommission.transitions import advance
from adapter.errors import GatewayError
from adapter.models.base import utcnow
from adapter.security.keys import service_key
from adapter.security.policy.phase import command_kind


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
@with_appcontext
def plan_command(last_use: str, switch_off: str, destroy_by: str | None,
                 reminder_days: int | None, escalate_days: int | None) -> None:
    """Make or change the plan and announce it to subscribers.

    \f
    :raises click.ClickException: invalid dates, or already switched off.
    """
    settings = current_app.config
    try:
        timetable = make_timetable(last_use, switch_off, destroy_by,
                                   settings["DECOMMISSION_TIME_ZONE"],
                                   settings["DECOMMISSION_SWITCH_OFF_TIME"])
        with get_db().write_transaction() as session:
            plan = save_plan(session, timetable,
                             reminder_days or settings["DECOMMISSION_REMINDER_DAYS"],
                             settings["DECOMMISSION_ESCALATE_DAYS"] if escalate_days is None
                             else escalate_days)
            text = timetable_text(view(plan))
    except GatewayError as exc:
        raise _fail(exc) from exc
    phases.forget()
    click.echo(text)


def _echo_rows(rows: list[TaskRow]) -> None:
    """Print purge Tasks as tab-separated lines."""
    for row in rows:
        click.echo("\t".join([row.client_id, row.organisation_code, row.shown, row.status,
                              str(row.children), "-" if row.purged is None else str(row.purged),
                              str(row.reminders), row.reason or ""]))


@command_kind("admin")
@decommission_group.command("status")
@with_appcontext
def status_command() -> None:
    """Print the phase, the timetable and each system's purge status."""
    with get_db().sessions() as session:
        stored = load_plan(session)
        if stored is None:
            click.echo("phase: live (no decommissioning plan)")
            return
        plan = view(stored)
        rows = task_rows(session, plan, utcnow())
    click.echo(f"phase: {plan.phase}")
    click.echo(timetable_text(plan))
    for label, moment in (("run-down began", plan.run_down_started),
                          ("switched off", plan.switched_off), ("destroyed", plan.destroyed)):
        if moment:
            click.echo(f"{label}: {local_text(moment, plan.timetable.time_zone)}")
    _echo_rows(rows)


@command_kind("admin")
@decommission_group.command("advance")
@click.option("--now", "force", is_flag=True, help="Advance now, before the date (drills).")
@with_appcontext
def advance_command(force: bool) -> None:
    """Move to the next phase when its time has come (run it from cron every minute).

    \f
    :raises click.ClickException: no plan, or the next phase is not due.
    """
    try:
        done = advance(get_db(), utcnow(), force)
    except GatewayError as exc:
        raise _fail(exc) from exc
    click.echo(f"{done.before} -> {done.after}"
               + (f"; {done.tasks} purge tasks issued" if done.after == "switched-off" else ""))


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
        sent = remind(session, _switched_off_plan(session), utcnow(), force)
    click.echo(f"{sent} reminders sent")


@command_kind("purge")
@decommission_group.command("escalation")
@with_appcontext
def escalation_command() -> None:
    """Print the owners not completed by the escalation threshold (and record them)."""
    with get_db().write_transaction() as session:
        rows = escalate(session, _switched_off_plan(session), utcnow())
    _echo_rows(rows)
    click.echo(f"{len(rows)} escalated", err=True)


@command_kind("purge")
@decommission_group.command("destroy")
@click.option("--yes", is_flag=True, help="Confirm: every personal datum is destroyed.")
@click.option("--override-drill", is_flag=True, help="Destroy before destroy-by (drills only).")
@with_appcontext
def destroy_command(yes: bool, override_drill: bool) -> None:
    """Destroy every personal datum, scrub the storage and issue the signed certificate.

    \f
    :raises click.ClickException: not confirmed, not switched off, or before destroy-by.
    """
    if not yes:
        raise click.ClickException("Destruction cannot be undone: confirm with --yes.")
    instance, db, now = current_app.config["INSTANCE_PATH"], get_db(), utcnow()
    try:
        done = destroy(db, instance, now, override_drill)
        done.finished = utcnow()
        document = issue_certificate(db, instance, done, done.finished)
    except GatewayError as exc:
        raise _fail(exc) from exc
    click.echo(f"destroyed; certificate {document['certificate']['certificateId']} in "
               f"{certificate_folder(instance)}")


def _key(jwks_file: str | None) -> ECKey:
    """Return the public key to verify with: from ``jwks_file``, else the service key.

    :raises click.ClickException: the file holds no EC key.
    """
    if jwks_file is None:
        return service_key(current_app.config["INSTANCE_PATH"])
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
        current_app.config["INSTANCE_PATH"]) / "certificate.json"
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
