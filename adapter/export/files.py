"""The NDJSON files of one export job: one file per resource type and one of OperationOutcomes,
each line one resource, lines counted as they are written so that the manifest's ``count`` is
the number of lines of its file (FHIR Bulk Data Access IG v2, export.html "Response - Complete
Status" and "Response - Output File"; docs/architecture.md "The outside contract")."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any, Final

import orjson

from adapter.registry import export_types

OUTCOME: Final = "OperationOutcome"
ERROR_FILE: Final = "errors.ndjson"


def file_name(resource_type: str) -> str:
    """Return the name of the file holding ``resource_type``."""
    return ERROR_FILE if resource_type == OUTCOME else f"{resource_type}.ndjson"


def ndjson_line(resource: dict[str, Any]) -> bytes:
    """Return one resource as an NDJSON line (orjson never writes a raw newline)."""
    return orjson.dumps(resource) + b"\n"


class NdjsonFiles:
    """The files of one job, opened on their first line (a type without lines has no file)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.counts: Counter[str] = Counter()
        self._handles: dict[str, IO[bytes]] = {}

    def write(self, resource_type: str, lines: Iterable[bytes]) -> None:
        """Append ``lines`` to the file of ``resource_type``.

        :raises FileNotFoundError: the job's folder was deleted meanwhile (job deleted).
        """
        handle = self._handles.get(resource_type)
        if handle is None:
            handle = open(self.folder / file_name(resource_type), "xb")
            self._handles[resource_type] = handle
        for line in lines:
            handle.write(line)
            self.counts[resource_type] += 1

    def close(self) -> None:
        """Flush and close every file."""
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()

    def outputs(self) -> list[dict[str, Any]]:
        """Return the manifest items of the resource files, in the order of the types."""
        return [{"type": t, "file": file_name(t), "count": self.counts[t]}
                for t in export_types() if self.counts[t]]

    def errors(self) -> list[dict[str, Any]]:
        """Return the manifest item of the OperationOutcome file, if any was written."""
        count = self.counts[OUTCOME]
        return [{"type": OUTCOME, "file": ERROR_FILE, "count": count}] if count else []
