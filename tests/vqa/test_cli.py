"""``mm vqa IMAGE "question" [--budget ...] [--stream]`` through typer's CliRunner and mm's main()."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import mm.cli
from mm.cli import app


@pytest.fixture(scope="module")
def runner():
    mm.cli._load_commands()
    return CliRunner()


@pytest.fixture(scope="module")
def png(tmp_path_factory, img_512):
    path = tmp_path_factory.mktemp("cli") / "img.png"
    img_512.save(path)
    return path


def test_answer_with_budget(runner, tiny_vl, png, vqa):
    args = ["vqa", str(png), "What is this?", "--model", str(tiny_vl), "--dtype", "float32",
            "--max-new-tokens", "4", "--budget", "fast", "-v"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    expected = vqa(str(png), "What is this?", max_new_tokens=4, image_tokens="fast")
    assert result.stdout.splitlines()[0] == expected.answer
    assert "image tokens: [64]" in result.stderr


def test_stream_and_two_images(runner, tiny_vl, png, vqa):
    args = ["vqa", str(png), str(png), "Compare them.", "--model", str(tiny_vl), "--dtype", "float32",
            "--max-new-tokens", "4", "--stream", "-v"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    expected = vqa([str(png), str(png)], "Compare them.", max_new_tokens=4)
    assert result.stdout.rstrip("\n") == expected.answer
    assert "image tokens: [256, 256]" in result.stderr


def test_bad_budget_is_a_usage_error(runner, tiny_vl, png):
    result = runner.invoke(app, ["vqa", str(png), "Q", "--model", str(tiny_vl), "--budget", "huge"])
    assert result.exit_code == 2
    assert "huge" in result.output


def test_bad_image_is_one_red_line(tiny_vl, tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    with pytest.raises(SystemExit) as exit_info:
        mm.cli.main(["vqa", str(broken), "Q", "--model", str(tiny_vl), "--dtype", "float32"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "could not decode" in err and "Traceback" not in err
