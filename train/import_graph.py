"""Print which of the project's packages imports which, and fail when an import runs against the layers.

The layers, lowest first: ``envs`` <- ``trm`` <- ``agents`` <- ``train``. A module may
import from its own package and from the packages below it, never from one above.
Imports are read from the source (``ast``), including those inside functions.

Example: ``python train/import_graph.py`` prints one line per package pair with the
number of import statements, and exits with status 1 if any arrow runs back up.
"""

from __future__ import annotations

import ast
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from train import cli

LAYERS = ("envs", "trm", "agents", "train")
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Args:
    root: str = str(ROOT)  # repository root whose packages are read


def imported_packages(path: Path) -> list[str]:
    """The top-level names of every ``import`` / ``from ... import`` statement in ``path``."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module.split(".")[0])
    return names


def graph(root: Path) -> Counter:
    """``Counter({(importer, imported): statements})`` between the project's packages."""
    edges: Counter = Counter()
    for pkg in LAYERS:
        for path in sorted((root / pkg).rglob("*.py")):
            for name in imported_packages(path):
                if name in LAYERS and name != pkg:
                    edges[(pkg, name)] += 1
    return edges


def upward(edges: Counter) -> list[tuple[str, str]]:
    """The arrows that import from a higher layer."""
    return [(a, b) for (a, b) in edges if LAYERS.index(b) > LAYERS.index(a)]


def main(argv: list[str] | None = None) -> int:
    args = cli.parse(Args, argv, description=__doc__)
    edges = graph(Path(args.root))
    for (a, b), k in sorted(edges.items(), key=lambda e: (LAYERS.index(e[0][0]), LAYERS.index(e[0][1]))):
        print(f"{a:7s} -> {b:7s} {k:3d} import statements")
    bad = upward(edges)
    verdict = "arrows back up: " + ", ".join(f"{a} -> {b}" for a, b in bad) if bad else "none back up"
    print(f"layers: {' <- '.join(LAYERS)}; {verdict}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
