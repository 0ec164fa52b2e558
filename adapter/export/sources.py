"""What bulk $export reads for an exportable type that is not a child's data, named by its
spec in the registry (``adapter/registry.py``, ``export_source``): the mapped rows, paged by
their internal ``id`` and filtered by ``resource_id`` and ``last_updated``, and how one row is
rendered, exactly as its REST read renders it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from adapter.models import Organisation, Practitioner
from adapter.store.organisations import render_organisation, render_practitioner

Resource = dict[str, Any]


@dataclass(frozen=True)
class ExportSource:
    """The rows of one type (a mapped class with ``id``, ``resource_id`` and
    ``last_updated``) and the rendering of one."""

    model: Any
    render: Callable[[Any], Resource]


ORGANIZATION: Final = ExportSource(Organisation, lambda row: render_organisation(row).resource)
PRACTITIONER: Final = ExportSource(Practitioner, lambda row: render_practitioner(row).resource)
