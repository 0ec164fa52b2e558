"""The directory XML dialect (``schemas/xml``, namespace ``urn:contactpoint-gateway:directory:1``):
canonical records to XML and back, single records and streamed batches.

- ``fields``: the one field table: each element and attribute with its canonical field, value
  type, cardinality and order, from which both the reader and the writer are driven.
- ``writer``: ``write_entry``/``dumps_entry``, ``write_entries`` (streamed batch), the same for
  assessment references, and ``write_import_report``.
- ``reader``: the parse stage: ``read_entry``/``loads_entry``, ``iter_entry_data`` (streamed
  batch, each record validated on its own, yielded as a canonical dict or its error with its
  position), the same for assessment references.
- ``schema``: the namespace, the compiled XSDs and schema errors as ``Invalid``.
- ``routes``: the HTTP interface at ``/directory`` (import, read, list);
  ``cli``: the ``import`` and ``export`` commands. Both parse with the reader and hand the
  canonical records to ``adapter.imports.directory``; reads and exports render what
  ``adapter.export.directory`` discloses.
"""

from adapter.directory.reader import (
    BatchHeader,
    RecordInvalid,
    iter_assessment_data,
    iter_assessments,
    iter_entries,
    iter_entry_data,
    loads_assessment,
    loads_entry,
    read_assessment,
    read_entry,
)
from adapter.directory.schema import NS
from adapter.directory.writer import (
    ImportOutcome,
    dumps_assessment,
    dumps_entry,
    write_assessment,
    write_assessments,
    write_entries,
    write_entry,
    write_import_report,
)

__all__ = [
    "NS",
    "BatchHeader",
    "ImportOutcome",
    "RecordInvalid",
    "dumps_assessment",
    "dumps_entry",
    "iter_assessment_data",
    "iter_assessments",
    "iter_entries",
    "iter_entry_data",
    "loads_assessment",
    "loads_entry",
    "read_assessment",
    "read_entry",
    "write_assessment",
    "write_assessments",
    "write_entries",
    "write_entry",
    "write_import_report",
]
