"""The layer check (scripts/check_layers.py, run by ``make lint``): the package passes it, and on
a copy of the package it catches an import up a layer, a cycle within a layer, Flask below the
web layer, a package without a layer and a known violation that is gone."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import REPO

CHECK = REPO / "scripts" / "check_layers.py"


def load_checker() -> ModuleType:
    """Import the checker script as a module (it is a script, not part of a package)."""
    spec = importlib.util.spec_from_file_location("check_layers", CHECK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building
    spec.loader.exec_module(module)
    return module


checker = load_checker()
# A known violation the tests list: codes importing the models.
ENTRY = ("adapter/codes.py", "adapter.models", "its fix")


def run_check(root: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the checker as ``make lint`` does (on ``root`` when given)."""
    args = [sys.executable, str(CHECK)] + (["--root", str(root)] if root else [])
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """Return the root of a copy of the package's Python files (which the tests then edit)."""
    shutil.copytree(REPO / "adapter", tmp_path / "adapter",
                    ignore=shutil.ignore_patterns("__pycache__", "*.txt", "*.html", "*.css"))
    return tmp_path


def append(root: Path, path: str, text: str) -> int:
    """Append ``text`` to a module of the copy; return the line number of its first line."""
    file = root / path
    lines = file.read_text(encoding="utf-8").count("\n")
    with file.open("a", encoding="utf-8") as out:
        out.write(text)
    return lines + 1


def test_the_package_keeps_its_layers() -> None:
    result = run_check()
    assert result.returncode == 0, result.stdout
    assert result.stdout == ""


def test_the_unchanged_copy_passes(copy: Path) -> None:
    result = run_check(copy)
    assert (result.returncode, result.stdout) == (0, "")


def test_an_import_up_a_layer_fails_with_its_line(copy: Path) -> None:
    # Inside a function: a deferred import is a dependency all the same.
    line = append(copy, "adapter/models/base.py",
                  "\n\ndef _route() -> object:\n    from adapter.fhir import routes\n\n"
                  "    return routes\n") + 3
    result = run_check(copy)
    assert result.returncode == 1
    assert (f"adapter/models/base.py:{line}: models imports adapter.fhir.routes, a higher layer"
            in result.stdout.splitlines())


def test_a_cycle_within_a_layer_fails_on_each_of_its_imports(copy: Path) -> None:
    first = append(copy, "adapter/codes.py", "\nimport adapter.retention  # noqa: E402\n") + 1
    result = run_check(copy)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert (f"adapter/codes.py:{first}: codes imports adapter.retention, closing a cycle within "
            "its layer") in lines
    assert any(line.startswith("adapter/retention.py:") and "retention imports adapter.codes, "
               "closing a cycle within its layer" in line for line in lines)


def test_flask_below_the_web_layer_fails(copy: Path) -> None:
    line = append(copy, "adapter/models/canonical.py", "\nfrom flask import current_app\n") + 1
    result = run_check(copy)
    assert result.returncode == 1
    assert (f"adapter/models/canonical.py:{line}: imports Flask below the web layer "
            "(adapter.models.canonical)") in result.stdout.splitlines()


def test_a_package_without_a_layer_fails(copy: Path) -> None:
    (copy / "adapter" / "newcomer.py").write_text("from adapter import codes\n", encoding="utf-8")
    result = run_check(copy)
    assert result.returncode == 1
    assert "adapter/newcomer: no layer declared for 'newcomer'" in result.stdout


def test_a_known_violation_is_let_through_while_it_occurs(copy: Path) -> None:
    line = append(copy, "adapter/codes.py", "\nimport adapter.models  # noqa: E402\n") + 1
    shown = f"adapter/codes.py:{line}: codes imports adapter.models, a higher layer"
    assert shown in checker.problems(copy)
    assert checker.problems(copy, checker.KNOWN + (ENTRY,)) == []


def test_a_known_violation_that_is_gone_must_leave_the_list(copy: Path) -> None:
    found = checker.problems(copy, checker.KNOWN + (ENTRY,))
    assert found == ["adapter/codes.py: known violation 'adapter.models' (its fix) no longer "
                     "occurs: remove it from KNOWN in scripts/check_layers.py"]
