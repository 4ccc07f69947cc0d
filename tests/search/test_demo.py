"""`mm demo` (the README's main job) indexes the bundled multilingual corpus offline and answers queries."""

from __future__ import annotations

import time

import pytest

from mm.cli import main


@pytest.mark.slow
def test_demo_answers_multilingual_queries(capsys):
    t0 = time.perf_counter()
    main(["demo"])
    seconds = time.perf_counter() - t0
    out = capsys.readouterr().out
    assert "indexed 240 XQuAD passages in 12 languages" in out
    blocks = out.split("query: ")[1:]
    assert len(blocks) == 3
    for block, expected in zip(blocks, ["xquad-000-en", "xquad-001-es", "xquad-002-de"], strict=True):
        first_hit = block.splitlines()[1]
        assert expected in first_hit, block
    with capsys.disabled():
        print(f"\nmm demo took {seconds:.1f} s")


def test_cli_lists_search_commands(capsys):
    main(["index", "--help"])  # standalone_mode=False: help returns instead of exiting
    out = capsys.readouterr().out
    for command in ("build", "add", "delete", "info", "compact"):
        assert command in out
