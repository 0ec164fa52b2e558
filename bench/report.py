"""One line per figure, the same in every benchmark (README "Benchmarks"):

    figure | value | baseline | ratio | goal | of goal | met?

``ratio`` is the figure over its baseline measured in the same run; ``goal`` is the target the
figure is held to; ``of goal`` is how far the figure is from it (1.00× or more: met), whichever
way the goal points (for "at most" goals it is target ÷ figure).

    from bench.report import Goal, header, row

    header("HTTP, SQLite")
    row("read by id, req/s", 412, "/s", baseline=4100, goal=Goal.ratio_at_least(0.5))
    row("read by id, p99", 31.2, "ms", goal=Goal.below(15, "ms"))
    row("bare route, req/s (baseline)", 4100, "/s")
"""

from __future__ import annotations

from dataclasses import dataclass

WIDTHS = (64, 14, 14, 8, 25, 8, 4)
COLUMNS = ("figure", "value", "baseline", "ratio", "goal", "of goal", "met?")


@dataclass(frozen=True)
class Goal:
    """A target for one figure: ``target`` bounds the figure (or its ratio to the baseline
    when ``of_ratio``) from below when ``higher_better``, else from above."""

    target: float
    higher_better: bool
    text: str
    of_ratio: bool = False
    strict: bool = False

    @classmethod
    def at_least(cls, target: float, unit: str = "", aim: float | None = None) -> Goal:
        """The figure must reach ``target`` (e.g. records/s); ``aim``, if any, is named in
        the goal's text only (what to strive for beyond the target)."""
        text = f">= {number(target)} {unit}".rstrip()
        return cls(target, True, text if aim is None else f"{text} (aim {number(aim)})")

    @classmethod
    def at_most(cls, target: float, unit: str = "") -> Goal:
        """The figure must not exceed ``target`` (e.g. ms per Patient)."""
        return cls(target, False, f"<= {number(target)} {unit}".rstrip())

    @classmethod
    def below(cls, target: float, unit: str = "") -> Goal:
        """The figure must stay under ``target`` (e.g. a p99 in ms)."""
        return cls(target, False, f"< {number(target)} {unit}".rstrip(), strict=True)

    @classmethod
    def ratio_at_least(cls, target: float) -> Goal:
        """The figure over its baseline must reach ``target`` (0.5: half the baseline)."""
        return cls(target, True, f"ratio >= {target:.2f}×", of_ratio=True)

    def attained(self, value: float, baseline: float | None) -> float | None:
        """Return the figure as a multiple of the goal (1.0 or more: met); None when the goal
        is of a ratio and there is no baseline."""
        measured = value
        if self.of_ratio:
            if not baseline:
                return None
            measured = value / baseline
        if self.higher_better:
            return measured / self.target if self.target else float("inf")
        return self.target / measured if measured else float("inf")

    def met(self, value: float, baseline: float | None) -> bool | None:
        """Return whether the figure meets the goal (None: cannot tell)."""
        attained = self.attained(value, baseline)
        if attained is None:
            return None
        return attained > 1.0 if self.strict else attained >= 1.0


def number(value: float) -> str:
    """Return ``value`` with as many decimals as its size needs."""
    size = abs(value)
    if size >= 100:
        return f"{value:,.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 0.1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def line(label: str, value: float, unit: str = "", baseline: float | None = None,
         goal: Goal | None = None) -> str:
    """Return the uniform line of one figure."""
    ratio = f"{value / baseline:.2f}×" if baseline else "—"
    attained = goal.attained(value, baseline) if goal else None
    met = goal.met(value, baseline) if goal else None
    cells = (label, f"{number(value)} {unit}".rstrip(),
             "—" if baseline is None else f"{number(baseline)} {unit}".rstrip(), ratio,
             goal.text if goal else "—", "—" if attained is None else f"{attained:.2f}×",
             {True: "yes", False: "NO", None: "—"}[met])
    return " | ".join(_cell(text, width, first=n == 0)
                      for n, (text, width) in enumerate(zip(cells, WIDTHS, strict=True)))


def _cell(text: str, width: int, first: bool) -> str:
    """Pad a cell: the figure's name to the left, numbers to the right."""
    return f"{text:<{width}}" if first else f"{text:>{width}}"


def header(title: str = "") -> None:
    """Print a table's title and its column names."""
    if title:
        print(title, flush=True)
    print(" | ".join(_cell(text, width, first=n == 0)
                     for n, (text, width) in enumerate(zip(COLUMNS, WIDTHS, strict=True))),
          flush=True)


def row(label: str, value: float, unit: str = "", baseline: float | None = None,
        goal: Goal | None = None) -> None:
    """Print the uniform line of one figure (as it comes: a long run shows its progress)."""
    print(line(label, value, unit, baseline, goal), flush=True)
