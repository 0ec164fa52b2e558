"""The UK Core resources the server ships are the official ones, unchanged."""

from __future__ import annotations

import hashlib

from tests.conftest import CONFORMANCE, REPO


def _digests(folder: object) -> dict[str, str]:
    """Return sha256 of every XML file under ``folder`` by relative path."""
    from pathlib import Path

    root = Path(str(folder))
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.xml"))}


def test_vendored_uk_core_is_byte_identical() -> None:
    """schemas/uk-core holds exactly the shared UK Core files."""
    shipped = _digests(REPO / "schemas" / "uk-core")
    official = _digests(CONFORMANCE / "uk-core")
    assert len(official) > 300
    assert shipped == official
