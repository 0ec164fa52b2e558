"""The decommissioning plan: its timetable from the announced dates (docs/domain.md "The
decommissioning timetable": last use the day before switch-off, switch-off at noon, every copy
destroyed within two months), stored once, changed only before switch-off, and announced to
subscribers as a decommission notice each time it (or the phase) changes."""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.orm import Session

from adapter.errors import Conflict, Invalid
from adapter.models import DecommissionPlan
from adapter.models.base import utcnow
from adapter.security import audit

# docs/domain.md: "all existing data removed and destroyed within two months of the go-dead date".
DESTROY_WITHIN_MONTHS = 2


@dataclass(frozen=True)
class Timetable:
    """The announced dates as instants (UTC, aware) and the day of last use."""

    last_use: dt.date
    run_down_at: dt.datetime
    switch_off_at: dt.datetime
    destroy_by_at: dt.datetime
    time_zone: str


@dataclass(frozen=True)
class PlanView:
    """A read-only copy of the plan (what requests and the access layer look at)."""

    phase: str
    timetable: Timetable
    reminder_days: int
    escalate_days: int
    version: int
    last_updated: dt.datetime
    run_down_started: dt.datetime | None
    switched_off: dt.datetime | None
    destroyed: dt.datetime | None
    drill: bool = False


def aware(moment: dt.datetime) -> dt.datetime:
    """Return ``moment`` as an aware UTC datetime (SQLite hands back naive ones)."""
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def zone(name: str) -> ZoneInfo:
    """Return the time zone ``name``.

    :raises Invalid: unknown time zone.
    """
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise Invalid(f"Unknown time zone {name!r}.") from exc


def add_months(moment: dt.datetime, months: int) -> dt.datetime:
    """Return the same local time ``months`` calendar months later (the last day of a shorter
    month when the day does not exist: 31 December + 2 months is 28 or 29 February)."""
    year, month = divmod(moment.month - 1 + months, 12)
    year, month = moment.year + year, month + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def parse_moment(text: str, tz: ZoneInfo, default_time: str, what: str) -> dt.datetime:
    """Return ``text`` (``YYYY-MM-DD`` at ``default_time``, or ``YYYY-MM-DDTHH:MM[:SS]``, local
    unless it carries an offset) as an aware local datetime.

    :raises Invalid: not a date or date and time.
    """
    try:
        if "T" in text or " " in text.strip():
            moment = dt.datetime.fromisoformat(text.strip())
        else:
            day = dt.date.fromisoformat(text.strip())
            moment = dt.datetime.combine(day, dt.time.fromisoformat(default_time))
    except ValueError as exc:
        raise Invalid(f"{what}: expected YYYY-MM-DD or YYYY-MM-DDTHH:MM, got {text!r}.") from exc
    return moment.replace(tzinfo=tz) if moment.tzinfo is None else moment.astimezone(tz)


def make_timetable(last_use: str, switch_off: str, destroy_by: str | None, time_zone: str,
                   default_time: str) -> Timetable:
    """Return the timetable of the announced dates: run-down from the first moment of the day of
    last use, switch-off at its time, destroy-by by default two calendar months after it.

    :raises Invalid: a date is malformed or the dates are out of order or too far apart.
    """
    tz = zone(time_zone)
    try:
        last_day = dt.date.fromisoformat(last_use.strip())
    except ValueError as exc:
        raise Invalid(f"last use: expected YYYY-MM-DD, got {last_use!r}.") from exc
    run_down = dt.datetime.combine(last_day, dt.time(0, 0), tzinfo=tz)
    off = parse_moment(switch_off, tz, default_time, "switch-off")
    latest = add_months(off, DESTROY_WITHIN_MONTHS)
    destroy = parse_moment(destroy_by, tz, default_time, "destroy-by") if destroy_by else latest
    if off.date() <= last_day:
        raise Invalid("The switch-off must fall after the day of last use (last use is the day "
                      "before switch-off).")
    if not off < destroy <= latest:
        raise Invalid("Destroy-by must come after the switch-off and at most two calendar "
                      f"months after it ({latest.isoformat()}).")
    return Timetable(last_day, aware(run_down), aware(off), aware(destroy), time_zone)


def holders_time_problems(timetable: Timetable, now: dt.datetime, min_days: int,
                          run_down_started: bool) -> list[str]:
    """Return why ``timetable`` would not give holders their time (empty: it does): a phase
    not yet entered whose date is past (``advance`` from cron would enter it at once), or
    fewer than ``min_days`` between switch-off and destroy-by (README "Decommissioning")."""
    problems = []
    if not run_down_started and timetable.run_down_at <= now:
        problems.append(f"the day of last use ({timetable.last_use.isoformat()}) has begun "
                        "already")
    if timetable.switch_off_at <= now:
        problems.append(f"the switch-off ({timetable.switch_off_at.isoformat()}) is past")
    window = timetable.destroy_by_at - timetable.switch_off_at
    if window < dt.timedelta(days=min_days):
        problems.append(f"holders get {window.days} days between switch-off and destroy-by to "
                        f"purge their copies, fewer than the minimum of {min_days} "
                        "(GATEWAY_DECOMMISSION_MIN_PURGE_DAYS)")
    return problems


def check_holders_time(timetable: Timetable, now: dt.datetime, min_days: int,
                       run_down_started: bool, drill: bool) -> None:
    """Refuse a timetable that does not give holders their time, unless it is a drill.

    :raises Invalid: it does not, and ``drill`` is not set.
    """
    problems = holders_time_problems(timetable, now, min_days, run_down_started)
    if problems and not drill:
        raise Invalid("This timetable does not protect the holders: " + "; ".join(problems)
                      + ". Choose later dates, or mark the plan a drill with --drill.")


def view(plan: DecommissionPlan) -> PlanView:
    """Return a read-only copy of ``plan``."""
    timetable = Timetable(plan.last_use, aware(plan.run_down_at), aware(plan.switch_off_at),
                          aware(plan.destroy_by_at), plan.time_zone)
    return PlanView(plan.phase, timetable, plan.reminder_days, plan.escalate_days, plan.version,
                    aware(plan.last_updated),
                    aware(plan.run_down_started) if plan.run_down_started else None,
                    aware(plan.switched_off) if plan.switched_off else None,
                    aware(plan.destroyed) if plan.destroyed else None, bool(plan.drill))


def load_plan(session: Session, lock: bool = False) -> DecommissionPlan | None:
    """Return the plan (locked for update on PostgreSQL when ``lock``), if one was made."""
    from sqlalchemy import select

    query = select(DecommissionPlan).where(DecommissionPlan.id == 1)
    return session.scalar(query.with_for_update() if lock else query)


def save_plan(session: Session, timetable: Timetable, reminder_days: int, escalate_days: int,
              now: dt.datetime | None = None, *, base: str, min_days: int = 0,
              drill: bool = False) -> DecommissionPlan:
    """Make or change the plan, record it in the audit trail and announce it to subscribers
    (the notice's codes under the canonical ``base``).

    :raises Conflict: the service is already switched off (the timetable is then history).
    :raises Invalid: the reminder or escalation interval is out of range, or the timetable
        does not give holders their time (``check_holders_time``) and it is not a drill.
    """
    if reminder_days < 1 or escalate_days < 0:
        raise Invalid("Reminders need an interval of at least one day, escalation zero or more.")
    moment = now or utcnow()
    plan = load_plan(session, lock=True)
    if plan is not None and plan.phase in ("switched-off", "destroyed"):
        raise Conflict(f"The service is {plan.phase}: its timetable can no longer change.")
    check_holders_time(timetable, moment, min_days,
                       plan is not None and plan.phase == "run-down", drill)
    created = plan is None
    if plan is None:
        plan = DecommissionPlan(id=1, phase="live", version=0, planned_at=moment)
        session.add(plan)
    plan.last_use, plan.time_zone = timetable.last_use, timetable.time_zone
    plan.run_down_at, plan.switch_off_at = timetable.run_down_at, timetable.switch_off_at
    plan.destroy_by_at, plan.drill = timetable.destroy_by_at, drill
    plan.reminder_days, plan.escalate_days = reminder_days, escalate_days
    plan.version, plan.last_updated = plan.version + 1, moment
    session.flush()
    audit.record(session, "decommission-plan", resource_type="PlanDefinition",
                 resource_id="decommission-plan",
                 detail=f"version {plan.version}: run-down {timetable.run_down_at.isoformat()}, "
                        f"switch-off {timetable.switch_off_at.isoformat()}, destroy-by "
                        f"{timetable.destroy_by_at.isoformat()}"
                        + ("; a drill" if drill else ""))
    from adapter.decommission.notices import announce

    announce(session, plan, base, "create" if created else "update")
    return plan
