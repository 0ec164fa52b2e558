"""The dashboard in a real headless Chromium (Debian's, installed by scripts/install-chromium.sh
from ``make test``; driven by Playwright's Python package): after a drill up to escalation it
shows the phase, each system's status and the escalation list; it is reached by signing in with
an admin token, used with the keyboard alone, keeps its colours' contrast, runs no script, and a
screenshot is saved under tests/artefacts/."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from playwright.sync_api import Page, sync_playwright

from adapter.db import Database
from adapter.security.ledger import record_deliveries
from tests.api.conftest import bearer
from tests.conftest import REPO
from tests.decommission.drill import Drill, export_as_la_four, read_as_sub_b, start
from tests.decommission.test_drill import acknowledge, answer, rekey_as_sub_c, tasks_by_client
from tests.notify.helpers import dispatch
from tests.notify.receivers import Receiver

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTEFACTS = REPO / "tests" / "artefacts"
# Every date on the page is written one way: "6 August 2099 12:00 BST".
DATE = re.compile(r"\d{1,2} [A-Z][a-z]+ \d{4} \d{2}:\d{2} [A-Z]{2,4}")
# WCAG 2.1 contrast ratio of two CSS rgb() colours (success criterion 1.4.3, "relative
# luminance" as defined there), computed in the page for every status badge and the phase.
CONTRAST_JS = """() => {
  const lum = (c) => { const [r, g, b] = c.match(/\\d+/g).slice(0, 3).map(Number).map(v => {
    v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  return [...document.querySelectorAll('.status, .phase, th, td, label, button')].map(e => {
    const s = getComputedStyle(e); let bg = s.backgroundColor, n = e;
    while (bg === 'rgba(0, 0, 0, 0)' && n.parentElement) {
      n = n.parentElement; bg = getComputedStyle(n).backgroundColor; }
    if (bg === 'rgba(0, 0, 0, 0)') bg = 'rgb(255, 255, 255)';
    const [a, b] = [lum(s.color), lum(bg)].sort((x, y) => y - x);
    return (a + 0.05) / (b + 0.05); });
}"""


# A plan with a fortnight before escalation, marked a drill: until destruction nobody is
# overdue, so every state but "silent" shows; after it, everyone who had not completed does.
BOARD_PLAN = ("plan", "--last-use", "2099-08-05", "--switch-off", "2099-08-06",
              "--escalate-days", "14", "--drill")
BEFORE = {"la-five": "never sent", "la-four": "instructed", "la-six": "accepted",
          "sub-a": "completed", "sub-b": "completed", "sub-c": "rejected"}
AFTER = {**BEFORE, "la-four": "silent"}


def drill_to_answers(drill: Drill) -> None:
    """Run the drill through switch-off and the answers: la-five never hears of its Task,
    la-four reads it and stays quiet, la-six accepts it, the subscribers answer."""
    assert drill.cli(*BOARD_PLAN).exit_code == 0
    assert drill.cli("advance", "--now").exit_code == 0
    read_as_sub_b(drill)
    export_as_la_four(drill)
    rekey_as_sub_c(drill)
    for name in ("la-five", "la-six"):
        drill.headers[name] = bearer(drill.client, drill.app, name, "E09000002",
                                     scopes="system/Task.rus")
    with drill.db.write_transaction() as session:
        for name in ("la-five", "la-six"):
            record_deliveries(session, name, sorted(drill.received["sub-a"]), "read")
    assert drill.cli("advance", "--now").exit_code == 0
    tasks = tasks_by_client(drill)
    acknowledge(drill, tasks)
    assert drill.get("la-four", f"/fhir/Task/{tasks['la-four']['id']}").status_code == 200
    assert answer(drill, "la-six", tasks["la-six"], "accepted").status_code == 200
    dispatch(drill.app)


def sign_in(page: Page, base: str, token: str) -> None:
    """Open the dashboard, get sent to the login form, sign in with the keyboard."""
    page.goto(f"{base}/admin/decommission")
    assert page.url.startswith(f"{base}/admin/login")
    page.get_by_label("Access token of an admin client").fill(token)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/admin/decommission")


def statuses(page: Page, table: str) -> dict[str, str]:
    """Return the status each system shows in a table (by client id)."""
    return {r.locator("th").inner_text().split("\n")[-1]:
            r.locator(".status").inner_text().lower()  # (shown capitalised by the stylesheet)
            for r in page.locator(f"#{table} tbody tr").all()}


def check_switched_off(page: Page) -> None:
    """The phase, the drill, each system's true state and names, the escalation summary."""
    assert page.locator("#phase").inner_text() == "Switched off (purge traffic only)"
    assert "This plan is a drill" in page.locator("#drill").inner_text()
    assert statuses(page, "systems") == BEFORE
    assert "escalated; 0 so far" in page.locator("#escalation-summary").inner_text()
    assert page.locator("#escalation").count() == 0
    assert "Destroy-by" in page.locator("#countdown").inner_text()
    assert "<script" not in page.content()


def check_destroyed(page: Page, base: str) -> None:
    """After destruction: everyone who had not completed is escalated, the final notice and
    the certificate are shown, every date written alike."""
    page.goto(f"{base}/admin/decommission")
    assert page.locator("#phase").inner_text() == "Destroyed"
    assert statuses(page, "systems") == AFTER
    assert statuses(page, "escalation") == {k: v for k, v in AFTER.items()
                                            if v != "completed"}
    assert page.locator("#escalation-summary").inner_text().startswith(
        "4 of 6 systems had not completed by the destruction")
    assert page.locator("#final-notice").inner_text() == "delivered to 3 of 3 subscriptions"
    dates = page.locator("dd time, td time").all_inner_texts() + [
        t for t in page.locator("#systems td").all_inner_texts() if re.search(r"\d{4} \d", t)]
    assert dates and all(DATE.fullmatch(d.strip()) for d in dates if d.strip() != "-"), dates
    for link in ("Certificate (JSON)", "Certificate (XML)", "Public key"):
        href = page.get_by_role("link", name=link).get_attribute("href")
        assert page.request.get(f"{base}{href}").status == 200


def check_keyboard_and_contrast_only(page: Page) -> None:
    """The skip link comes first and every text keeps a contrast of at least 4.5:1."""
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to main content"
    ratios: list[float] = page.evaluate(CONTRAST_JS)
    assert ratios and min(ratios) >= 4.5, min(ratios)


def check_keyboard_and_contrast(page: Page, base: str) -> None:
    """The skip link comes first; the filters work from the keyboard; contrast >= 4.5:1."""
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to main content"
    ratios: list[float] = page.evaluate(CONTRAST_JS)
    assert ratios and min(ratios) >= 4.5, min(ratios)
    page.get_by_label("Status", exact=True).focus()
    page.keyboard.press("Home")
    page.keyboard.press("ArrowDown")  # the first state: never sent
    page.get_by_role("button", name="Filter").focus()
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/admin/decommission?status=never-sent&q=")
    shown = page.locator("#systems tbody .status").all_inner_texts()
    assert [s.lower() for s in shown] == ["never sent"]


# One browser run is enough: the page reads the same service on either database.
@pytest.mark.parametrize("backend", ["sqlite"])
def test_dashboard_in_chromium(app: Flask, client: FlaskClient, db: Database,
                               receiver: Receiver, served: str, tmp_path: Path) -> None:
    """Sign in, read each holder's state, filter with the keyboard, destroy, read the
    outcome; save screenshots."""
    drill = start(app, client, db, receiver)
    drill_to_answers(drill)
    token = drill.headers["admin"]["Authorization"].removeprefix("Bearer ")
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True,
            args=FLAGS, viewport={"width": 1366, "height": 768})
        try:
            page = context.new_page()
            sign_in(page, served, token)
            check_switched_off(page)
            page.screenshot(path=str(ARTEFACTS / "decommission-dashboard.png"), full_page=True)
            check_keyboard_and_contrast(page, served)
            destroyed = drill.cli("destroy", "--yes", "--override", "browser drill")
            assert destroyed.exit_code == 0, destroyed.output
            check_destroyed(page, served)
            page.screenshot(path=str(ARTEFACTS / "decommission-destroyed.png"), full_page=True)
            check_keyboard_and_contrast_only(page)
        finally:
            context.close()
    assert (ARTEFACTS / "decommission-dashboard.png").stat().st_size > 10_000

