"""Run every benchmark module of this package (``make bench``), or those named on the command
line (``python -m bench mapping http``)."""

from __future__ import annotations

import importlib
import pkgutil
import platform
import sys
import time
from pathlib import Path

# Order: cheapest first, so a run interrupted late still printed the quick figures.
ORDER = ["mapping", "fhir_xml", "directory_xml", "bulk_import", "search", "http", "notify",
         "scale"]


def modules(names: list[str]) -> list[str]:
    """Return the benchmark modules to run, in order."""
    found = {m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])
             if not m.name.startswith("_")}
    chosen = names or sorted(found, key=lambda n: (ORDER.index(n) if n in ORDER else 99, n))
    unknown = [n for n in chosen if n not in found]
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {', '.join(unknown)}; have {sorted(found)}")
    return chosen


def main() -> None:
    """Run the benchmarks and say where and when."""
    print(f"# benchmarks {time.strftime('%Y-%m-%d %H:%M')} on {platform.machine()}, "
          f"Python {platform.python_version()}, {len(__import__('os').sched_getaffinity(0))} "
          "cores")
    for name in modules(sys.argv[1:]):
        module = importlib.import_module(f"bench.{name}")
        if hasattr(module, "main"):
            print(f"\n## {name}", flush=True)
            module.main()


if __name__ == "__main__":
    main()
