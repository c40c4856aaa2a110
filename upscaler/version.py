"""The package's version: pyproject.toml's `version`, as its installed metadata says it.

A source tree run without installing it (PYTHONPATH=.), or beside an editable install of
another checkout, reads pyproject.toml next to the package, so `upscale --version` names the
code that runs.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

_PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def _from_pyproject() -> str | None:
    try:
        import tomllib
    except ImportError:  # Python 3.10: the metadata is enough there
        return None
    try:
        with open(_PYPROJECT, "rb") as f:
            project = tomllib.load(f).get("project", {})
    except (OSError, tomllib.TOMLDecodeError):
        return None
    return project.get("version") if project.get("name") == "upscaler" else None


def _version() -> str:
    found = _from_pyproject()
    if found:
        return found
    try:
        return metadata.version("upscaler")
    except metadata.PackageNotFoundError:
        return "0+unknown"


__version__ = _version()
