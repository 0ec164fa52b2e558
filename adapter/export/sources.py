"""What bulk $export reads for an exportable type that is not a child's data, named by its
spec in the registry (``adapter/registry.py``, ``export_source``): the mapped rows, paged by
their internal ``id`` and filtered by ``resource_id`` and ``last_updated``, and how one row is
rendered (under the canonical base), exactly as its REST read renders it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from adapter.fhir.providers.organization import render_organisation
from adapter.fhir.providers.practitioner import render_practitioner
from adapter.models import Organisation, Practitioner

Resource = dict[str, Any]


@dataclass(frozen=True)
class ExportSource:
    """The rows of one type (a mapped class with ``id``, ``resource_id`` and
    ``last_updated``) and the rendering of one under a canonical base (row, base)."""

    model: Any
    render: Callable[[Any, str], Resource]


ORGANIZATION: Final = ExportSource(
    Organisation, lambda row, base: render_organisation(row, base).resource)
PRACTITIONER: Final = ExportSource(
    Practitioner, lambda row, base: render_practitioner(row, base).resource)
