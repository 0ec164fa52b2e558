"""The layers of the ``adapter`` package: no import goes up a layer, no import cycle between its
packages, and no Flask below the web layer (docs/architecture.md "Layers").

A node is each package ``adapter/<name>/`` and each top-level module ``adapter/<name>.py``
(``adapter/__init__.py`` itself, the app factory, is the node ``adapter``). Every import counts:
at the top of a module, inside a function, under ``TYPE_CHECKING``. An import of a node in a
lower layer is fine; one in a higher layer, or one that closes a cycle among the nodes of one
layer, is reported with its file and line.

Run it from the repository root: ``python scripts/check_layers.py`` (``make lint`` does);
``--root DIR`` checks another copy. Exit code 0: clean; 1: problems, each on its own line.
Standard library only, so it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

# Bottom to top: (nodes, why they sit there). A node may import its own layer (no cycle) and
# every layer below it.
LAYERS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("codes", "identifiers", "identity", "systems", "config", "settings", "errors", "xmlsafe",
      "vendored", "retention", "registry", "wellformed", "findings"),
     "values and rules that need nothing else of the gateway: code lists, identifier and "
     "identity rules, FHIR system URIs, settings, error types, hardened XML parsing, "
     "well-formed FHIR content rules, the declaration of every FHIR resource type (providers "
     "and maps named, not imported)"),
    (("models",), "the canonical model and its ORM tables, built from those values"),
    (("db", "http", "runtime"),
     "infrastructure every route uses: database sessions; negotiation and OperationOutcome "
     "rendering (the FHIR XML writer is handed in by the app factory)"),
    (("mapping",), "canonical <-> FHIR maps: functions of the model, no storage, no request"),
    (("security",),
     "who is asking and what they may see (the policy), the audit trail and the delivery "
     "ledger: the store asks and feeds them on every read and write"),
    (("store",), "storage of the canonical model: loads, writes, history, behind the policy"),
    (("imports",), "bulk imports taking canonical records into the store"),
    (("fhir",), "the FHIR dialect: REST routes, parsing, validation, search, transactions"),
    (("export",), "bulk $export and the NDJSON and directory XML exporters, on FHIR rendering"),
    (("directory",), "the directory XML dialect: routes and CLI, over imports and exports"),
    (("notify",),
     "subscriptions and notifications: FHIR resources about what the store changed"),
    (("decommission",),
     "the decommissioning: plan, phase gate, purge Tasks, destruction; drives notify and the "
     "dialects (and hands the access layer and notify its hooks at start-up)"),
    (("kit", "holder", "demo", "health", "server", "cli", "__main__", "migrations", "adapter"),
     "entry points over everything: the app factory, CLI, server, conformance kit, holder "
     "agent, demo data, health check, schema migrations"),
)

# Packages and modules that must not import Flask: below the web layer nothing knows of a
# request or an app (settings are passed in).
NO_FLASK: tuple[str, ...] = (
    "codes", "identifiers", "identity", "systems", "config", "settings", "errors", "xmlsafe",
    "vendored", "retention", "registry", "wellformed", "findings", "models", "mapping", "store",
    "imports",
    "security.policy", "security.ledger", "security.scopes", "security.keys", "security.tokens",
    "security.clients",
)

# Violations let through while a change removes them: (file, imported module or "flask", the
# work that removes it). Each must still occur — a stale entry is reported too — so the list
# only shrinks. It is empty: keep it so.
KNOWN: tuple[tuple[str, str, str], ...] = ()


@dataclass(frozen=True)
class Import:
    """One import of an ``adapter`` module (or of Flask) by a file of the package."""

    path: str  # relative to the root, with "/"
    line: int
    source: str  # the importing module's node
    module: str  # the imported module, dotted
    target: str  # its node ("flask" for Flask)


def layer_of() -> dict[str, int]:
    """Return each declared node's layer number (0: bottom)."""
    return {node: index for index, (nodes, _why) in enumerate(LAYERS) for node in nodes}


def module_name(root: Path, path: Path) -> str:
    """Return the dotted module name of ``path`` (``adapter.fhir.xml``; ``adapter``)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def node_of(module: str, root: Path) -> str:
    """Return the node of a dotted ``adapter`` module: its package or top-level module under
    ``adapter``, or ``adapter`` for the package itself (and names it defines)."""
    parts = module.split(".")
    if len(parts) == 1:
        return "adapter"
    name = parts[1]
    if (root / "adapter" / name).is_dir() or (root / "adapter" / f"{name}.py").is_file():
        return name
    return "adapter"  # a name defined in adapter/__init__.py (create_app)


def imported(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """Yield (line, module) for every import in ``tree``, relative ones resolved; for
    ``from X import y`` both ``X`` and ``X.y`` (``y`` may be a submodule)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([node.module] if node.module else []))
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"
            yield node.lineno, base


def imports(root: Path) -> list[Import]:
    """Return every import of another node, or of Flask, in ``root/adapter``."""
    found: list[Import] = []
    for path in sorted((root / "adapter").rglob("*.py")):
        module = module_name(root, path)
        source = node_of(module, root)
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        seen: set[tuple[int, str]] = set()
        for line, name in imported(tree, module, path.name == "__init__.py"):
            top = name.split(".")[0]
            if top == "flask" and name.count(".") <= 1:
                target, name = "flask", "flask"
            elif top == "adapter" and name != "adapter":
                target = node_of(name, root)
            else:
                continue
            if target == source or (line, target) in seen:
                continue
            seen.add((line, target))
            rel = path.relative_to(root).as_posix()
            found.append(Import(rel, line, source, _shown(name, target, root), target))
    return found


def _shown(name: str, target: str, root: Path) -> str:
    """Return the imported module as shown: the longest prefix that is a module or package."""
    if target == "flask":
        return "flask"
    parts = name.split(".")
    while len(parts) > 2:
        path = root.joinpath(*parts)
        if path.is_dir() or path.with_suffix(".py").is_file():
            break
        parts.pop()
    return ".".join(parts)


def dotted(path: str) -> str:
    """Return the module of a file path: ``adapter/store/records.py`` is
    ``adapter.store.records``."""
    return path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


def flask_banned(path: str) -> bool:
    """Return whether the file at ``path`` may not import Flask."""
    name = dotted(path).removeprefix("adapter.")
    return any(name == banned or name.startswith(banned + ".") for banned in NO_FLASK)


def cycles(edges: list[Import], layer: dict[str, int]) -> set[tuple[str, str]]:
    """Return the (source, target) node pairs of same-layer imports that lie on a cycle
    (Tarjan's strongly connected components over the same-layer edges)."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        if edge.target != "flask" and layer.get(edge.source) == layer.get(edge.target):
            graph.setdefault(edge.source, set()).add(edge.target)
            graph.setdefault(edge.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    component: dict[str, int] = {}

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt not in component:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            while True:
                member = stack.pop()
                component[member] = index[node]
                if member == node:
                    break

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return {(source, target) for source, targets in graph.items() for target in targets
            if component[source] == component[target]}


def problems(root: Path, known_violations: Iterable[tuple[str, str, str]] = KNOWN) -> list[str]:
    """Return every layering problem under ``root`` (empty: clean), ``known_violations``
    aside (each of which must still occur)."""
    layer = layer_of()
    edges = imports(root)
    found: list[tuple[str, str, str]] = []  # (path, module, message)
    nodes = {edge.source for edge in edges} | {node_of(module_name(root, path), root)
                                              for path in (root / "adapter").rglob("*.py")}
    for node in sorted(nodes - set(layer)):
        found.append((f"adapter/{node}", "", f"adapter/{node}: no layer declared for "
                      f"'{node}' (scripts/check_layers.py LAYERS)"))
    cyclic = cycles(edges, layer)
    for edge in edges:
        where = f"{edge.path}:{edge.line}"
        if edge.target == "flask":
            if flask_banned(edge.path):
                found.append((edge.path, "flask", f"{where}: imports Flask below the web layer "
                              f"({dotted(edge.path)})"))
            continue
        if edge.source not in layer or edge.target not in layer:
            continue
        if layer[edge.target] > layer[edge.source]:
            found.append((edge.path, edge.module,
                          f"{where}: {edge.source} imports {edge.module}, a higher layer"))
        elif (edge.source, edge.target) in cyclic:
            found.append((edge.path, edge.module,
                          f"{where}: {edge.source} imports {edge.module}, closing a cycle "
                          "within its layer"))
    listed = tuple(known_violations)
    known = {(path, module) for path, module, _who in listed}
    messages = [message for path, module, message in found if (path, module) not in known]
    present = {(path, module) for path, module, _message in found}
    messages += [f"{path}: known violation '{module}' ({who}) no longer occurs: remove it "
                 "from KNOWN in scripts/check_layers.py"
                 for path, module, who in listed if (path, module) not in present]
    return messages


def main(argv: list[str] | None = None) -> int:
    """Check the layers; print each problem; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent,
                        help="the repository root holding adapter/ (default: this one)")
    args = parser.parse_args(argv)
    found = problems(args.root)
    for message in found:
        sys.stdout.write(message + "\n")
    if found:
        sys.stdout.write(f"{len(found)} layering problem(s)\n")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
