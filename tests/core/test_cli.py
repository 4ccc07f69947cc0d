"""The ``mm`` command line: speed of --help, core commands, clean errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def run_mm(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mm", *args], capture_output=True, text=True, env=ENV,
                          timeout=timeout)


def test_help_is_fast_and_lists_commands():
    start = time.perf_counter()
    out = run_mm("--help")
    elapsed = time.perf_counter() - start
    assert out.returncode == 0, out.stderr
    assert elapsed < 2.0, f"mm --help took {elapsed:.2f}s"
    for command in ("tasks", "info", "chat"):
        assert command in out.stdout


def test_tasks_table_and_json():
    out = run_mm("tasks")
    assert out.returncode == 0
    assert "speech-to-speech" in out.stdout
    out = run_mm("tasks", "--json")
    rows = {row["task"]: row for row in json.loads(out.stdout)}
    assert rows["vqa"]["default_model"] == "LiquidAI/LFM2-VL-450M"
    assert "s2s" in rows["speech-to-speech"]["aliases"]


def test_info_reports_runtime():
    out = run_mm("info")
    assert out.returncode == 0, out.stderr
    for key in ("torch", "dtype (auto)", "threads", "hf cache"):
        assert key in out.stdout


def test_chat_one_prompt(tiny_lfm2):
    out = run_mm("chat", "Hello", "--model", str(tiny_lfm2), "--max-new-tokens", "5", "--dtype", "float32")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip()


def test_missing_model_is_one_clear_line_not_a_traceback(tmp_path):
    out = run_mm("chat", "Hello", "--model", str(tmp_path / "missing"))
    assert out.returncode == 2
    assert "error:" in out.stderr and "Traceback" not in out.stderr
