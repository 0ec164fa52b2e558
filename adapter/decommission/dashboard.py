"""The admin dashboard ``/admin/decommission``: the phase and the timetable with
a countdown to the next step, each system's purge status with counts and filters, and the
escalation list. Server-rendered HTML with no script at all (the admin Content Security Policy
allows only the gateway's own stylesheet, ``adapter.security.headers``); every control has a
label, every table a caption and header cells, and the stylesheet keeps text contrast at or above
WCAG 2.1 AA (4.5:1) with a visible keyboard focus.

Admins reach it with an admin client's bearer token, or through the login form that turns such
a token into a session cookie (``adapter.security.admin_session``)."""

from __future__ import annotations

import datetime as dt
import functools
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Response,
    current_app,
    g,
    redirect,
    render_template,
    request,
)
from werkzeug.wrappers import Response as BaseResponse

from adapter.db import get_db
from adapter.decommission.codes import DISPLAY_STATUSES, PHASE_TITLES, STATUS_WORDS
from adapter.decommission.plan import PlanView, load_plan, view
from adapter.decommission.resources import local_text, timetable_text
from adapter.decommission.tasks import TaskRow, task_rows
from adapter.errors import Forbidden, Unauthorized
from adapter.http import handle_gateway_error, public_base
from adapter.models.base import utcnow
from adapter.security import audit
from adapter.security.access import authenticated, client_caller, public, token_audience
from adapter.security.admin_session import (
    COOKIE,
    COOKIE_PATH,
    CSRF_COOKIE,
    CSRF_FIELD,
    csrf_token,
    csrf_valid,
    in_admin_pages,
    issue_session,
    new_csrf_nonce,
    session_audience,
)
from adapter.security.caller import Caller
from adapter.security.tokens import TokenError, read_access_token

STATIC: Final = Path(__file__).resolve().parent / "static"
DASHBOARD: Final = "/admin/decommission"
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
blueprint = Blueprint("admin_decommission", __name__, template_folder="templates")


class CsrfRefused(Forbidden):
    """A form that changes state came without the token of this gateway's own page."""


def secure_cookies() -> bool:
    """Return True when the dashboard's cookies must be ``Secure``: the public URL is https
    (or the request came over TLS)."""
    return public_base().startswith("https://") or request.is_secure


def form_token() -> str:
    """Return the CSRF token of the forms on this page (a CSRF cookie is set with the page
    when the browser holds none yet)."""
    nonce = g.get("csrf_nonce") or request.cookies.get(CSRF_COOKIE)
    if not nonce:
        nonce = g.csrf_nonce = new_csrf_nonce()
    return csrf_token(nonce, current_app.config["INSTANCE_PATH"])


@blueprint.context_processor
def _form_helpers() -> dict[str, Any]:
    """Give the templates ``csrf_token()`` (the hidden field of every POST form)."""
    return {"csrf_token": form_token, "csrf_field": CSRF_FIELD}


@blueprint.before_app_request
def check_csrf() -> None:
    """Refuse a request that changes state on the admin pages without the CSRF token of a
    form this gateway served to the same browser (every such route, present and future).

    :raises CsrfRefused: no token, or not the one that goes with the browser's CSRF cookie.
    """
    if request.method in SAFE_METHODS or request.endpoint is None \
            or not in_admin_pages(request.path):
        return
    if not csrf_valid(request.cookies.get(CSRF_COOKIE), request.form.get(CSRF_FIELD),
                      current_app.config["INSTANCE_PATH"]):
        raise CsrfRefused("This form has expired or was not sent from this gateway's own "
                          "page: open the page again and resend it.")


@blueprint.after_request
def _set_csrf_cookie(response: BaseResponse) -> BaseResponse:
    """Send the CSRF cookie chosen while rendering the page, if a new one was chosen."""
    nonce = g.get("csrf_nonce")
    if nonce:
        response.set_cookie(CSRF_COOKIE, nonce, path=COOKIE_PATH, httponly=True,
                            samesite="Strict", secure=secure_cookies())
    return response


def countdown(target: dt.datetime, now: dt.datetime) -> str:
    """Return how far ``target`` is from ``now`` in days, hours and minutes, in words."""
    seconds = int((target - now).total_seconds())
    days, rest = divmod(abs(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    parts = [f"{n} {unit}{'' if n == 1 else 's'}" for n, unit in
             ((days, "day"), (hours, "hour"), (minutes, "minute")) if n] or ["less than a minute"]
    text = ", ".join(parts)
    return f"in {text}" if seconds >= 0 else f"{text} ago"


def next_step(plan: PlanView) -> tuple[str, dt.datetime] | None:
    """Return the next milestone of the timetable (title, when), None once destroyed."""
    t = plan.timetable
    return {"live": ("Run-down begins", t.run_down_at),
            "run-down": ("Switch-off", t.switch_off_at),
            "switched-off": ("Destroy-by", t.destroy_by_at)}.get(plan.phase)


@dataclass
class Board:
    """What the dashboard shows."""

    plan: PlanView | None
    now: dt.datetime
    rows: list[TaskRow] = field(default_factory=list)
    shown: list[TaskRow] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    escalated: list[TaskRow] = field(default_factory=list)
    certificate: dict[str, Any] | None = None
    escalation_at: dt.datetime | None = None


def escalation_threshold(plan: PlanView) -> dt.datetime | None:
    """Return when owners not completed are escalated (None before switch-off)."""
    if plan.phase == "destroyed":
        return plan.destroyed
    if plan.phase != "switched-off":
        return None
    return (plan.switched_off or plan.timetable.switch_off_at) + \
        dt.timedelta(days=plan.escalate_days)


def certificate_issued(certificate: dict[str, Any] | None) -> dt.datetime | None:
    """Return when the certificate was issued, as an instant (shown like every other date)."""
    issued = (certificate or {}).get("issued")
    return dt.datetime.fromisoformat(str(issued).replace("Z", "+00:00")) if issued else None


def _matches(row: TaskRow, status: str, text: str) -> bool:
    """Return True when ``row`` passes the status and text filters."""
    haystack = (f"{row.client_id} {row.client_name} {row.organisation_code} "
                f"{row.organisation_name or ''}").lower()
    return (status in ("", "all") or row.shown == status) and text.lower() in haystack


def build_board(status: str, text: str, now: dt.datetime) -> Board:
    """Return the dashboard's content for the filters ``status`` and ``text``."""
    with get_db().sessions() as session:
        stored = load_plan(session)
        if stored is None:
            return Board(None, now)
        plan = view(stored)
        rows = task_rows(session, plan, now)
        certificate = (stored.certificate or {}).get("certificate")
    counts = Counter(r.shown for r in rows)
    return Board(plan, now, rows, [r for r in rows if _matches(r, status, text)],
                 {s: counts.get(s, 0) for s in DISPLAY_STATUSES},
                 [r for r in rows if r.escalated], certificate, escalation_threshold(plan))


def _when(moment: dt.datetime | None, plan: PlanView) -> str:
    """Return an instant in the plan's time zone in words ("-" for none)."""
    return local_text(moment, plan.timetable.time_zone) if moment else "-"


@blueprint.get(DASHBOARD)
@authenticated("admin", right="admin")
def dashboard() -> str:
    """Render the dashboard (filters: ``status``, ``q``)."""
    status = request.args.get("status", "all")
    status = status if status in DISPLAY_STATUSES else "all"
    text = request.args.get("q", "")[:100]
    board = build_board(status, text, utcnow())
    step = next_step(board.plan) if board.plan else None
    return render_template(
        "decommission.html", board=board, status=status, text=text,
        statuses=DISPLAY_STATUSES, words=STATUS_WORDS, titles=PHASE_TITLES, when=_when,
        step=step, issued=certificate_issued(board.certificate),
        countdown=countdown(step[1], board.now) if step else None,
        summary=timetable_text(board.plan) if board.plan else None,
        caller=g.caller.client_id)


@blueprint.errorhandler(Unauthorized)
def to_login(error: Unauthorized) -> BaseResponse:
    """Send a browser without a valid token or session to the login form (a caller that sent
    a bearer token gets the usual 401 OperationOutcome)."""
    if request.headers.get("Authorization"):
        return handle_gateway_error(error)
    response = redirect(f"/admin/login?next={DASHBOARD}", 303)
    response.headers["Cache-Control"] = "no-store"
    return response


@blueprint.errorhandler(CsrfRefused)
def csrf_refused(error: CsrfRefused) -> BaseResponse:
    """Answer a refused form with the sign-in page again, its reason and a valid token (403);
    a caller that sent a bearer token, or that does not accept HTML (a script, not a browser
    submitting the form), gets the usual OperationOutcome."""
    if request.headers.get("Authorization") or not request.accept_mimetypes.accept_html:
        return handle_gateway_error(error)
    response = _login_page(error.message, DASHBOARD)
    response.status_code = 403
    return response


def safe_next(target: str | None) -> str:
    """Return ``target`` when it is a path of the admin pages, else the dashboard."""
    parts = urlsplit(target or "")
    ok = not parts.scheme and not parts.netloc and parts.path.startswith("/admin/")
    return target if ok and target else DASHBOARD


@blueprint.get("/admin/static/decommission.css")
@public("admin")
def stylesheet() -> Response:
    """Serve the dashboard's stylesheet (the only resource its CSP lets it load)."""
    return Response(stylesheet_bytes(), mimetype="text/css",
                    headers={"Cache-Control": "public, max-age=3600"})


@functools.lru_cache(maxsize=1)
def stylesheet_bytes() -> bytes:
    """Return the stylesheet (read once)."""
    return (STATIC / "decommission.css").read_bytes()


def _login_page(error: str | None, target: str) -> Response:
    """Return the login form (with an error summary when ``error``)."""
    return Response(render_template("login.html", error=error, next=target),
                    content_type="text/html; charset=utf-8")


@blueprint.get("/admin/login")
@public("admin")
def login_form() -> Response:
    """Render the login form."""
    return _login_page(None, safe_next(request.args.get("next")))


@blueprint.post("/admin/login")
@public("admin")
def login() -> BaseResponse:
    """Open a session for the admin client whose access token was pasted in the form (its
    CSRF token was checked first: ``check_csrf``)."""
    target = safe_next(request.form.get("next"))
    try:
        claims, who = check_admin_token(request.form.get("token", "").strip())
    except Unauthorized as exc:  # the form again, with the reason (a page, not an API error)
        return _login_page(exc.message, target)
    instance, lifetime = current_app.config["INSTANCE_PATH"], \
        int(current_app.config["ADMIN_SESSION_SECONDS"])
    cookie = issue_session(claims, instance, session_audience(public_base()), lifetime)
    with get_db().write_transaction() as session:
        audit.record(session, "admin-login", detail="dashboard session opened", caller=who)
    g.csrf_nonce = new_csrf_nonce()  # a new session, a new CSRF value (OWASP)
    response = redirect(target, 303)
    response.set_cookie(COOKIE, cookie, max_age=lifetime, path=COOKIE_PATH, httponly=True,
                        samesite="Strict", secure=secure_cookies())
    return response


def check_admin_token(token: str) -> tuple[dict[str, Any], Caller]:
    """Return the claims and caller of a pasted access token of an admin client.

    :raises Unauthorized: not a valid access token of an active admin client.
    """
    if not token:
        raise Unauthorized("Paste the access token of an admin client.")
    try:
        claims = read_access_token(token, current_app.config["INSTANCE_PATH"],
                                   token_audience())
    except TokenError as exc:
        raise Unauthorized(f"That token is not accepted: {exc.description}.") from exc
    who, _limits = client_caller(claims)
    if not who.has_right("admin"):
        raise Unauthorized("That client has no admin right.")
    return claims, who


@blueprint.post("/admin/logout")
@public("admin")
def logout() -> BaseResponse:
    """End the session (the cookie is removed)."""
    response = redirect("/admin/login", 303)
    response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="Strict",
                           secure=secure_cookies())
    return response
