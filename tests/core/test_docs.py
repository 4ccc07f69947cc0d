"""The README and docs/ pages: their Python blocks are valid code and their links point at real files.

(The README's tour is also run end to end: tests/apps/test_readme_tour.py.)
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
#: pages other branches write; linked from the index before they land
PENDING = {"api.md", "indexing.md", "search-index.md", "server.md", "hardening.md", "backbone-speed.md",
           "speech-realtime.md"}
LINK = re.compile(r"\]\(([^)\s#]+)(#[^)\s]*)?\)")


def anchors(page: Path) -> set[str]:
    """GitHub-style anchors of a page's headings."""
    out = set()
    for heading in re.findall(r"^#+ (.+)$", page.read_text(encoding="utf-8"), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        out.add(slug)
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_python_blocks_compile(page):
    for number, block in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), re.S)):
        compile(block, f"{page.name} (python block {number})", "exec")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_point_at_files(page):
    broken = []
    for target, anchor in LINK.findall(page.read_text(encoding="utf-8")):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path = (page.parent / target).resolve()
        if not path.exists():
            if path.name not in PENDING or path.parent != REPO / "docs":
                broken.append(target)
        elif anchor and path.suffix == ".md" and anchor[1:] not in anchors(path):
            broken.append(target + anchor)
    assert not broken, f"{page.name} links to missing files or headings: {broken}"


def test_the_readme_indexes_every_page():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    linked = {Path(target).name for target, _ in LINK.findall(readme) if target.startswith("docs/")}
    missing = {p.name for p in PAGES[1:]} - linked
    assert not missing, f"docs pages the README does not link: {sorted(missing)}"
