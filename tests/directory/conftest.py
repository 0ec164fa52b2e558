"""Fixtures of the directory XML tests: demo batch files (exported once per session) and the
API fixtures (``demo``, ``callers``) shared with tests/api."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.api.conftest import callers, demo  # noqa: F401 - fixtures shared with tests/api
from tests.directory.batches import Batch, demo_batches

DEMO_CHILDREN = 2000


@pytest.fixture(scope="session")
def demo_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Batch, Batch, str]:
    """The live entries of 2,000 demo children of one authority and their assessment
    references, as batches the gateway exported, and the authority's GSS code."""
    folder: Path = tmp_path_factory.mktemp("demo-batches")
    entries, references, gss = demo_batches(folder, DEMO_CHILDREN)
    return entries.live(), references, gss
