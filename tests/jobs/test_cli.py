"""``mm index build`` as a job: dry run, build, refusal without --resume, incremental --resume, search."""

from __future__ import annotations

import json

import pytest

from mm.cli import main
from tests.jobs.conftest import write_corpus


def run_cli(capsys, *args) -> tuple[int, str, str]:
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.slow
def test_index_build_job_cycle_with_minilm(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "c.jsonl", 20)
    idx = tmp_path / "idx"
    build = ("index", "build", corpus, "--index", idx, "--model", "minilm", "--workers", "1")
    code, out, err = run_cli(capsys, *build, "--dry-run", "--json")
    assert code == 0, err
    assert json.loads(out)["docs_new"] == 20 and not idx.exists()
    code, out, err = run_cli(capsys, *build)
    assert code == 0, err
    assert "indexed 20 documents" in out and "docs/s" in out and "20 new" in out
    code, _, err = run_cli(capsys, *build)
    assert code == 2 and "not empty" in err and "--resume" in err
    write_corpus(corpus, 21, changed={"d4": "protein folding in the cell"})
    code, out, err = run_cli(capsys, *build, "--resume", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert (report["docs_new"], report["docs_changed"], report["docs_unchanged"]) == (1, 1, 19)
    code, out, err = run_cli(capsys, "search", "--index", idx, "protein folding cell", "-k", "1", "--json")
    assert code == 0, err
    assert json.loads(out)["hits"][0]["id"] == "d4"
