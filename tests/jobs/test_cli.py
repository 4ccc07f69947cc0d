"""``mm index build`` options of the job (engine, workers, dry run, resume/fresh, JSON summary)."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from mm.cli.jobs import register_build
from tests.jobs.conftest import write_corpus


def app() -> typer.Typer:
    group = typer.Typer()
    register_build(group)

    @group.command("noop")
    def noop() -> None:  # a second command keeps typer from collapsing the group into `build`
        """Nothing."""

    return group


def test_build_dry_run_then_real_then_incremental(tmp_path, monkeypatch):
    monkeypatch.setattr("mm.index.jobs.encoder_spec", _tiny_spec)
    corpus = write_corpus(tmp_path / "c.jsonl", 40)
    runner = CliRunner()
    dry = runner.invoke(app(), ["build", str(corpus), str(tmp_path / "idx"), "--dry-run", "--json", "--no-progress"])
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.output)["docs_new"] == 40 and not (tmp_path / "idx").exists()
    real = runner.invoke(app(), ["build", str(corpus), str(tmp_path / "idx"), "--workers", "1", "--no-progress"])
    assert real.exit_code == 0, real.output
    assert "indexing job summary" in real.output and "40 / 0 / 0" in real.output
    again = runner.invoke(app(), ["build", str(corpus), str(tmp_path / "idx"), "--workers", "1", "--json",
                                  "--no-progress"])
    assert json.loads(again.output)["docs_unchanged"] == 40
    fresh = runner.invoke(app(), ["build", str(corpus), str(tmp_path / "idx"), "--workers", "1", "--fresh",
                                  "--json", "--no-progress"])
    assert json.loads(fresh.output)["docs_new"] == 40


def _tiny_spec(model):
    from tests.jobs.conftest import encoder

    return encoder()
