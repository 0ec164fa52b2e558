"""The dashboard in a real headless Chromium (Debian's, installed by scripts/install-chromium.sh
from ``make test``; driven by Playwright's Python package): after a drill up to escalation it
shows the phase, each system's status and the escalation list; it is reached by signing in with
an admin token, used with the keyboard alone, keeps its colours' contrast, runs no script, and a
screenshot is saved under tests/artefacts/."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from playwright.sync_api import Page, sync_playwright

from adapter.db import Database
from tests.conftest import REPO
from tests.decommission.drill import Drill, export_as_la_four, read_as_sub_b, start
from tests.decommission.test_drill import (
    PLAN,
    acknowledge,
    check_switched_off,
    rekey_as_sub_c,
)
from tests.notify.receivers import Receiver

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTEFACTS = REPO / "tests" / "artefacts"
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


def drill_to_escalation(drill: Drill) -> None:
    """Run the drill through switch-off, the answers and the escalation."""
    assert drill.cli(*PLAN).exit_code == 0
    assert drill.cli("advance", "--now").exit_code == 0
    read_as_sub_b(drill)
    export_as_la_four(drill)
    rekey_as_sub_c(drill)
    assert drill.cli("advance", "--now").exit_code == 0
    acknowledge(drill, check_switched_off(drill))
    assert drill.cli("escalation").exit_code == 0


def sign_in(page: Page, base: str, token: str) -> None:
    """Open the dashboard, get sent to the login form, sign in with the keyboard."""
    page.goto(f"{base}/admin/decommission")
    assert page.url.startswith(f"{base}/admin/login")
    page.get_by_label("Access token of an admin client").fill(token)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/admin/decommission")


def check_content(page: Page) -> None:
    """The phase, each system's status and the escalation list are shown."""
    assert page.locator("#phase").inner_text() == "Switched off (purge traffic only)"
    rows = {r.locator("th").inner_text().split("\n")[-1]: r.locator(".status").inner_text()
            for r in page.locator("#systems tbody tr").all()}
    assert {k: v.lower() for k, v in rows.items()} == {
        "la-four": "silent", "sub-a": "completed", "sub-b": "completed", "sub-c": "rejected"}
    escalated = page.locator("#escalation tbody tr th").all_inner_texts()
    assert sorted(t.split("\n")[-1] for t in escalated) == ["la-four", "sub-c"]
    assert "Destroy-by" in page.locator("#countdown").inner_text()
    assert "<script" not in page.content()


def check_keyboard_and_contrast(page: Page, base: str) -> None:
    """The skip link comes first; the filters work from the keyboard; contrast >= 4.5:1."""
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to main content"
    ratios: list[float] = page.evaluate(CONTRAST_JS)
    assert ratios and min(ratios) >= 4.5, min(ratios)
    page.get_by_label("Status", exact=True).focus()
    page.keyboard.press("End")  # the last option: silent
    page.get_by_role("button", name="Filter").focus()
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/admin/decommission?status=silent&q=")
    statuses = page.locator("#systems tbody .status").all_inner_texts()
    assert [s.lower() for s in statuses] == ["silent"]


# One browser run is enough: the page reads the same service on either database.
@pytest.mark.parametrize("backend", ["sqlite"])
def test_dashboard_in_chromium(app: Flask, client: FlaskClient, db: Database,
                               receiver: Receiver, served: str, tmp_path: Path) -> None:
    """Sign in, read the drill's state, filter with the keyboard, save a screenshot."""
    drill = start(app, client, db, receiver)
    drill_to_escalation(drill)
    token = drill.headers["admin"]["Authorization"].removeprefix("Bearer ")
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True,
            args=FLAGS, viewport={"width": 1366, "height": 768})
        try:
            page = context.new_page()
            sign_in(page, served, token)
            check_content(page)
            page.screenshot(path=str(ARTEFACTS / "decommission-dashboard.png"), full_page=True)
            check_keyboard_and_contrast(page, served)
        finally:
            context.close()
    assert (ARTEFACTS / "decommission-dashboard.png").stat().st_size > 10_000

