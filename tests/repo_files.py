"""The repository's own files, found without git (the suite also runs on a plain copy of the
repository, as `.ci/run` makes): everything under the project folder but what .gitignore
keeps out of it (the virtual environment, instance data, caches, test artefacts)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import REPO

# The folders .gitignore names, and git's own.
IGNORED = frozenset({".git", ".venv", "instance", "__pycache__", ".pytest_cache", ".mypy_cache",
                     ".ruff_cache", ".hypothesis", "build", "artefacts"})


def project_files(*tops: str) -> list[str]:
    """Return the repository files under ``tops`` (files or folders; all when none), relative."""
    found: list[str] = []
    for top in tops or (".",):
        path = REPO / top
        paths = [path] if path.is_file() else path.rglob("*")
        found += [str(p.relative_to(REPO)) for p in paths if p.is_file() and not _ignored(p)]
    return sorted(found)


def _ignored(path: Path) -> bool:
    """Return True when ``path`` is git's or lies in a folder the repository does not hold."""
    *folders, name = path.relative_to(REPO).parts
    return name == ".git" or any(part in IGNORED or part.endswith(".egg-info") for part in folders)
