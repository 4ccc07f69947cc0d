"""Doctest collection under the installed module names.

The package's folders sit at the top of the repository but install as one namespace
(pyproject's ``package-dir``: ``encoders/`` -> ``mm.encoders``, ``apps/`` -> ``mm.apps`` ...).
Left alone, ``pytest --doctest-modules`` would import ``encoders/vision.py`` a second time
as a top-level ``encoders.vision``: a different module object from the ``mm.encoders.vision``
the code itself imports. Here every package file is imported by its ``mm.*`` name instead.

A module whose optional extra is not installed (e.g. ``gradio`` for ``mm.apps``) is
skipped with the extra named; any other import error fails the collection.
"""

from __future__ import annotations

import importlib
import tomllib
from functools import cache
from pathlib import Path

import pytest
from _pytest.doctest import DoctestModule

ROOT = Path(__file__).resolve().parent


@cache
def _package_dirs() -> tuple[tuple[Path, str], ...]:
    """(folder, package name) pairs from pyproject's package-dir, longest folder first."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        mapping = tomllib.load(f)["tool"]["setuptools"]["package-dir"]
    pairs = [((ROOT / folder).resolve(), package) for package, folder in mapping.items()]
    return tuple(sorted(pairs, key=lambda pair: len(pair[0].parts), reverse=True))


@cache
def _optional_modules() -> dict[str, str]:
    """Top-level import name -> the extra that provides it (the project's optional dependencies)."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        extras = tomllib.load(f)["project"]["optional-dependencies"]
    import_names = {"pillow": "PIL", "faiss-cpu": "faiss", "silero-vad": "silero_vad",
                    "gradio-client": "gradio_client", "ray[data]": "ray", "ray": "ray"}
    found = {}
    for extra, requirements in extras.items():
        for requirement in requirements:
            name = requirement.split(">")[0].split("<")[0].split("=")[0].split(";")[0].strip().lower()
            if name.startswith("mm["):
                continue
            found.setdefault(import_names.get(name, name.replace("-", "_")), extra)
    return found


def module_name(path: Path) -> str | None:
    """The installed name of a package file, or None for files outside the package.

    >>> module_name(ROOT / "encoders" / "vision.py")
    'mm.encoders.vision'
    >>> module_name(ROOT / "apps" / "__init__.py")
    'mm.apps'
    >>> module_name(ROOT / "tests" / "conftest.py") is None
    True
    """
    path = Path(path).resolve()
    for folder, package in _package_dirs():
        if path.is_relative_to(folder):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts and parts[-1] == "__init__":
                parts.pop()
            return ".".join([package, *parts])
    return None


class PackageDoctestModule(DoctestModule):
    """A DoctestModule that imports its file by the name the package installs it under."""

    def _getobj(self):
        name = module_name(self.path)
        try:
            module = importlib.import_module(name)
        except ImportError as error:
            top = (error.name or "").split(".")[0]
            extra = _optional_modules().get(top)
            if extra is None:
                raise
            pytest.skip(f"{name} needs the [{extra}] extra ({top} is not installed)")
        if Path(module.__file__).resolve() != self.path.resolve():
            raise ImportError(f"{name} resolves to {module.__file__}, not {self.path}: "
                              "is mm installed (editable) from this checkout?")
        return module


@pytest.hookimpl(wrapper=True)
def pytest_collect_file(file_path, parent):
    """Package files hold no tests, only examples: collect their doctests, by their mm.* name, and
    nothing else (a file named on the command line would otherwise also be imported as a test module)."""
    collected = yield
    if module_name(file_path) is None:
        return collected
    return [PackageDoctestModule.from_parent(parent, path=file_path)
            for node in collected if type(node) is DoctestModule]
