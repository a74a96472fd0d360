"""Print the requirements of pyproject.toml (its dependencies plus the named extras), one a line.

The image installs these before it copies the code, so that the dependency layer is rebuilt only when
pyproject.toml or constraints.txt change:  python3 requirements.py pyproject.toml gpu > requirements.txt
Standard library only (it runs before anything is installed).
"""

from __future__ import annotations

import sys

import tomllib


def requirements(pyproject: str, extras: list[str]) -> list[str]:
    with open(pyproject, "rb") as f:
        project = tomllib.load(f)["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [e for e in extras if e not in optional]
    if unknown:
        raise SystemExit(f"{pyproject}: no extra named {', '.join(unknown)} (has: {', '.join(optional)})")
    return list(project["dependencies"]) + [r for e in extras for r in optional[e]]


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit("usage: requirements.py PYPROJECT [EXTRA ...]")
    print("\n".join(requirements(sys.argv[1], sys.argv[2:])))
