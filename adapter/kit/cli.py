"""``contactpoint-gateway validate FILE|DIR...``: the conformance kit on the command line
(docs/vendors.md "Checking files before you send them").

Each file's kind is detected (a FHIR resource in JSON or XML, a Bundle, NDJSON, a directory
XML batch or record; a folder stands for its .xml, .json and .ndjson files) and each record is
checked offline, without a database, as an inbound write checks it (``adapter.kit.check``).
Every finding is printed with its file, position, path, severity and message (never a value of
the record), then a summary per file and in all, and the checks only the live gateway makes.

Exit codes (for CI): 0 every record valid (warnings and information allowed); 1 an error in
some record; 2 a usage error, or a file that cannot be read or is none of these kinds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import click
from flask.cli import with_appcontext

from adapter.findings import FAILING, KIND_NAMES, FileReport, live_checks
from adapter.kit.check import check_file, dumps, report_json
from adapter.security.policy.phase import command_kind

EXIT_VALID, EXIT_INVALID, EXIT_UNUSABLE = 0, 1, 2
SEVERITIES: Final = ("fatal", "error", "warning", "information")


def files_of(names: tuple[str, ...]) -> list[Path]:
    """Return the files named, a folder standing for its .xml, .json and .ndjson files."""
    from adapter.directory.cli import expand

    return expand(names)


def exit_code(reports: list[FileReport]) -> int:
    """Return the exit code of a run: 2 a file unusable, else 1 an error, else 0."""
    if any(r.unusable for r in reports):
        return EXIT_UNUSABLE
    return EXIT_INVALID if any(r.errors for r in reports) else EXIT_VALID


def print_text(reports: list[FileReport], code: int, shown: frozenset[str]) -> None:
    """Print each finding, a summary per file and in all, and what was not checked."""
    for report in reports:
        if report.unusable:
            click.echo(f"{report.name}: unusable: {report.unusable}")
            continue
        for found in report.findings:
            if found.severity not in shown:
                continue
            path = f" [{found.path}]" if found.path else ""
            click.echo(f"{report.name}: {report.position(found)}: {found.severity}: "
                       f"{found.message}{path}")
        click.echo(f"{report.name}: {KIND_NAMES.get(report.kind, report.kind)}, "
                   f"{report.records} record(s), {report.bad_records} with errors "
                   f"({report.errors} error(s), {report.warnings} warning(s))")
    records = sum(r.records for r in reports)
    errors = sum(r.errors for r in reports)
    unusable = sum(1 for r in reports if r.unusable)
    click.echo(f"checked {len(reports)} file(s), {records} record(s): {errors} error(s), "
               f"{sum(r.warnings for r in reports)} warning(s), {unusable} unusable file(s); "
               f"exit {code}")
    kinds = {r.kind for r in reports if not r.unusable}
    for family, label in (("fhir", "FHIR"), ("directory", "directory XML")):
        checks = [c for k in kinds if (k.startswith("directory")) == (family == "directory")
                  for c in live_checks(k)]
        if checks:
            click.echo(f"Not checked offline ({label}; the live gateway checks these when the "
                       "records are sent):")
            for check in dict.fromkeys(checks):
                click.echo(f"  - {check}")


def print_json(reports: list[FileReport], code: int) -> None:
    """Print the whole run as one JSON document."""
    kinds = {r.kind for r in reports if not r.unusable}
    not_checked = {k: list(live_checks(k)) for k in sorted(kinds)}
    click.echo(dumps({
        "exitCode": code,
        "files": [report_json(r) for r in reports],
        "summary": {"files": len(reports), "records": sum(r.records for r in reports),
                    "errors": sum(r.errors for r in reports),
                    "warnings": sum(r.warnings for r in reports),
                    "unusable": sum(1 for r in reports if r.unusable)},
        "notCheckedOffline": not_checked,
    }).decode())


@command_kind("meta")  # reads only the files given: never a child's stored data, no database
@click.command("validate")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Output: lines of text, or one JSON document.")
@click.option("--errors-only", is_flag=True,
              help="Text output: leave out warnings and information (what is not kept).")
@with_appcontext
def validate_command(paths: tuple[str, ...], fmt: str, errors_only: bool) -> None:
    """Check FHIR resources, Bundles, NDJSON and directory XML files offline, record by
    record, as the gateway checks what it receives.

    Exit code 0: every record valid; 1: an error in some record; 2: a usage error or a file
    that cannot be read or is not one of these kinds.
    """
    from adapter.directory.cli import cli_caller

    caller = cli_caller(None)
    files = files_of(paths)
    if not files:
        raise click.UsageError("no .xml, .json or .ndjson file in the folders given")
    reports = [check_file(path, caller) for path in files]
    code = exit_code(reports)
    if fmt == "json":
        print_json(reports, code)
    else:
        shown = FAILING if errors_only else frozenset(SEVERITIES)
        print_text(reports, code, shown)
    click.get_current_context().exit(code)
