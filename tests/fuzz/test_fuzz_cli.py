"""Fuzz ``mm`` command lines (in-process): every run ends with exit 0, or one error line and exit 2
(exit 1 only when the operating system refused something) - never a traceback or an 'unexpected ...' error."""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
import tempfile

import pytest
from hypothesis import strategies as st

from tests.fuzz.harness import any_text, fuzz_tests

COMMANDS = [["tasks"], ["chat"], ["vqa"], ["s2s"], ["asr"], ["tts"], ["search"], ["index", "build"],
            ["index", "add"], ["index", "delete"], ["index", "info"], ["index", "compact"], ["nosuch"], [],
            ["index"], ["--help"]]
OPTIONS = ["--model", "-m", "--index", "-i", "-k", "--k", "--json", "--max-new-tokens", "--temperature",
           "--system", "--dtype", "--quantize", "--stream", "--no-stream", "--run", "--queries", "--filter", "-f",
           "--output", "-o", "--voice", "--seed", "--mode", "--kind", "--nbits", "--codec", "--workers",
           "--threads", "--batch-docs", "--long-docs", "--engine", "--resume", "--prune", "--dry-run",
           "--skip-bad", "--budget", "--tiling", "--exact", "--hybrid", "--tag", "--bogus", "-x", "--", "--debug2"]
PATHS: dict[str, str] = {}


def _tokens():
    paths = st.sampled_from(["index", "tiny-lfm2", "corpus", "queries", "folder", "missing", "run-in-folder",
                             "unwritable", "file-as-index"]).map(lambda key: PATHS[key])
    numbers = st.sampled_from(["0", "1", "-1", "2", "1.5", "nan", "inf", "abc", "99999999999999999999", "", "3"])
    return st.one_of(st.sampled_from(OPTIONS), paths, numbers, any_text.filter(lambda t: "\x00" not in t),
                     st.sampled_from(["minilm", "dense", "multivector", "float32", "int8", "balanced", "lang=en",
                                      "US male", "interleaved", "local", "ray", "chunk", "drop"]))


ARGV = st.tuples(st.sampled_from(COMMANDS), st.lists(_tokens(), max_size=7)).map(lambda t: [*t[0], *t[1]])


@pytest.fixture(scope="module", autouse=True)
def _paths(tmp_path_factory, index_templates):
    from mm.index import build_job

    import mm.testing

    root = tmp_path_factory.mktemp("fuzz-cli")
    corpus = root / "corpus.jsonl"
    corpus.write_text("\n".join(json.dumps({"_id": f"d{i}", "text": f"document {i} about rivers"}) for i in range(6)))
    build_job(corpus, root / "index", encoder="minilm", workers=1, progress=False)
    (root / "folder").mkdir()
    (root / "locked").mkdir()
    (root / "file-as-index").write_text("not an index")
    PATHS.update(index=str(root / "index"), corpus=str(corpus), queries=str(corpus), folder=str(root / "folder"),
                 missing=str(root / "missing" / "x"), **{"run-in-folder": str(root / "folder")},
                 unwritable="/proc/mm-fuzz/run.trec", **{"file-as-index": str(root / "file-as-index")},
                 **{"tiny-lfm2": str(mm.testing.make_tiny_lfm2(root / "lfm2"))})
    yield
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(autouse=True)
def _sandbox(monkeypatch, capsys):
    global CAPSYS
    CAPSYS = capsys
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("COLUMNS", "2000")
    monkeypatch.chdir(tempfile.mkdtemp(prefix="mm-fuzz-cli-"))
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))


CAPSYS = None


class CliEscape(Exception):
    """The command line ended with a traceback, an 'unexpected' error or an odd exit code."""


def check_cli(argv: list[str]) -> None:
    from mm.cli import main

    CAPSYS.readouterr()
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    captured = CAPSYS.readouterr()
    err = captured.err
    explained = err.strip() or "Usage" in captured.out  # a bare `mm` / `mm index` prints its help
    if "Traceback" in err or "rerun with --debug" in err or code not in (0, 1, 2) or (code and not explained):
        raise CliEscape(f"exit {code}: {err[-600:]}")
    if code == 1 and not os.environ.get("MM_FUZZ_ALLOW_EXIT1"):
        raise CliEscape(f"exit 1 (an OSError reached the user): {err[-300:]}")


test_cli, test_cli_long = fuzz_tests("CLI arguments", ARGV, check_cli, fast=40, long=600)
