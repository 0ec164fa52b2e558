"""The operator's exports (README "Decommissioning"): the ``export`` command run without
``--as`` acts as the gateway's own operator, which is no holder in the delivery ledger, so no
purge Task covers what it writes. Each such export's files are recorded as it finishes, and
destruction removes them (and the folders they leave empty); the certificate says how many."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from sqlalchemy import select

from adapter.db import Database
from adapter.models import OperatorExport
from adapter.models.base import utcnow
from adapter.security import audit


def files_in(folder: Path) -> set[Path]:
    """Return every file under ``folder`` (absolute paths)."""
    return {p.resolve() for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()


def record_operator_export(db: Database, authority: str, fmt: str, folder: Path,
                           before: set[Path]) -> int:
    """Record the files an operator's export wrote into ``folder`` (those not there
    ``before``); return how many."""
    written = sorted(str(p) for p in files_in(folder) - before)
    if not written:
        return 0
    with db.write_transaction() as session:
        session.add(OperatorExport(authority=authority.strip().upper()[:9], format=fmt,
                                   folder=str(folder.resolve()), files=written,
                                   created=utcnow()))
        audit.record(session, "operator-export", detail=f"{len(written)} files ({fmt}) in "
                                                        "a folder destruction will clear")
    return len(written)


def _remove(paths: list[str], folder: Path) -> tuple[int, int]:
    """Delete ``paths`` and the folders under ``folder`` they leave empty; return (removed,
    missing)."""
    removed = missing = 0
    for name in paths:
        path = Path(name)
        if path.is_file():
            path.unlink()
            removed += 1
        else:
            missing += 1
        for parent in path.parents:
            if not parent.is_relative_to(folder) or not parent.exists() or any(parent.iterdir()):
                break
            parent.rmdir()
    return removed, missing


def remove_operator_exports(db: Database, now: dt.datetime) -> dict[str, Any]:
    """Remove every recorded operator export not removed yet; return the certificate's
    account: exports, files removed, files already gone, and the folders."""
    account: dict[str, Any] = {"exports": 0, "filesRemoved": 0, "filesMissing": 0,
                               "folders": []}
    with db.write_transaction() as session:
        for export in session.scalars(select(OperatorExport).where(
                OperatorExport.removed.is_(None)).order_by(OperatorExport.id)):
            removed, missing = _remove(list(export.files), Path(export.folder))
            export.removed = now
            account["exports"] += 1
            account["filesRemoved"] += removed
            account["filesMissing"] += missing
            if export.folder not in account["folders"]:
                account["folders"].append(export.folder)
    return account
