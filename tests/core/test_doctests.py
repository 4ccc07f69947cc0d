"""The test command collects every docstring example of the package, under the installed mm.* names.

The examples themselves run as part of ``pytest`` (pyproject: ``--doctest-modules`` over the package
folders); these tests check that the collection is complete and imports the right modules.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = re.compile(r"^\s*>>> ", re.MULTILINE)


def package_folders() -> dict[str, str]:
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["setuptools"]["package-dir"]


def expected_name(path: Path) -> str:
    for package, folder in sorted(package_folders().items(), key=lambda kv: -len(Path(kv[1]).parts)):
        root = REPO / folder
        if path.is_relative_to(root):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            return ".".join([package, *parts])
    raise AssertionError(path)


def run_pytest(*args: str, prelude: str = "") -> str:
    code = f"{prelude}\nimport sys, pytest\nsys.exit(pytest.main(sys.argv[1:]))"
    done = subprocess.run([sys.executable, "-c", code, "-p", "no:cacheprovider", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, 5), done.stdout[-4000:] + done.stderr[-4000:]
    return done.stdout


def test_test_command_covers_every_package_folder():
    with open(REPO / "pyproject.toml", "rb") as f:
        pytest_options = tomllib.load(f)["tool"]["pytest"]["ini_options"]
    assert "--doctest-modules" in pytest_options["addopts"].split()
    assert set(package_folders().values()) <= set(pytest_options["testpaths"])


def test_every_module_with_examples_is_collected_under_its_mm_name():
    folders = sorted(set(package_folders().values()))
    out = run_pytest("--collect-only", "-q", *folders)
    collected = {line.split("::")[1] for line in out.splitlines() if "::" in line}
    modules_with_examples = {}
    for folder in folders:
        for path in sorted((REPO / folder).rglob("*.py")):
            if path.name != "__main__.py" and EXAMPLE.search(path.read_text(encoding="utf-8")):
                modules_with_examples[expected_name(path)] = path
    assert len(modules_with_examples) > 40
    missing = [name for name in modules_with_examples
               if not any(item == name or item.startswith(name + ".") for item in collected)]
    assert not missing, f"modules with examples that the test command does not collect: {missing}"
    strays = [item for item in collected if item != "mm" and not item.startswith("mm.")]
    assert not strays, f"doctests collected under a name other than mm.*: {strays[:5]}"


def test_module_of_a_missing_extra_is_skipped_with_its_name():
    block_gradio = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'gradio':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
    )
    out = run_pytest("-q", "-rs", "apps/vqa.py", "mm/errors.py", prelude=block_gradio)
    assert "mm.apps.vqa needs the [apps] extra (gradio is not installed)" in out, out
    assert re.search(r"\d+ passed", out), out  # the other module's examples still ran
