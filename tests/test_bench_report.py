"""The benchmarks' uniform line (``bench/report.py``): figure, value, baseline, ratio, goal,
how far the figure is from the goal, and whether it is met."""

from __future__ import annotations

from bench.report import COLUMNS, Goal, line


def cells(text: str) -> list[str]:
    """Return the stripped cells of a report line."""
    return [cell.strip() for cell in text.split(" | ")]


def test_a_ratio_goal_is_judged_on_the_ratio_to_the_baseline() -> None:
    """Read at 1,500/s against a bare route at 4,000/s: 0.38×, short of half (0.75× of it)."""
    figure = cells(line("read by id: req/s", 1500, "/s", 4000, Goal.ratio_at_least(0.5)))
    assert len(figure) == len(COLUMNS)
    assert figure == ["read by id: req/s", "1,500 /s", "4,000 /s", "0.38×", "ratio >= 0.50×",
                      "0.75×", "NO"]
    assert cells(line("read", 2000, "/s", 4000, Goal.ratio_at_least(0.5)))[-2:] == ["1.00×",
                                                                                 "yes"]


def test_upper_bounds_turn_the_ratio_to_the_goal_around() -> None:
    """A p99 of 30 ms against "< 15 ms" is half-way (0.50×); exactly 15 ms is not under it,
    while "<= 0.5 ms" is met at 0.5 ms."""
    assert cells(line("p99", 30, "ms", None, Goal.below(15, "ms")))[3:] == [
        "—", "< 15.0 ms", "0.50×", "NO"]
    assert cells(line("p99", 15, "ms", None, Goal.below(15, "ms")))[-1] == "NO"
    assert cells(line("per Patient", 0.5, "ms", 2.0, Goal.at_most(0.5, "ms")))[3:] == [
        "0.25×", "<= 0.50 ms", "1.00×", "yes"]


def test_a_figure_without_a_goal_or_baseline_says_so() -> None:
    """No baseline: no ratio; no goal: nothing to meet; an aim is named with its target."""
    assert cells(line("bare route", 4000, "/s")) == ["bare route", "4,000 /s", "—", "—", "—",
                                                     "—", "—"]
    goal = Goal.at_least(25_000, "/s", aim=50_000)
    assert cells(line("JSON", 30_000, "/s", 20_000, goal))[3:] == [
        "1.50×", ">= 25,000 /s (aim 50,000)", "1.20×", "yes"]
    assert Goal.ratio_at_least(0.8).met(100, None) is None
