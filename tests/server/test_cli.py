"""`mm serve --api` flag checks (no server is started)."""

from __future__ import annotations

import socket
import subprocess
import sys

from tests.server.conftest import REPO


def run_mm(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "mm", *args], capture_output=True, text=True, timeout=120,
                          cwd=REPO, env=env)
    proc.stderr = " ".join(proc.stderr.split())
    return proc


def test_api_flag_errors(tmp_path):
    proc = run_mm("serve", "--api")
    assert proc.returncode == 2 and "--api needs at least one of --chat-model" in proc.stderr
    proc = run_mm("serve", "--api", "--task", "vqa", "--embedding-model", "minilm")
    assert proc.returncode == 2 and "--task only apply to the Gradio apps" in proc.stderr
    proc = run_mm("serve", "--chat-model", str(tmp_path), "--search-index", str(tmp_path))
    assert proc.returncode == 2 and "--chat-model only apply with --api" in proc.stderr
    proc = run_mm("serve", "--api", "--chat-model", str(tmp_path / "missing"))
    assert proc.returncode == 2 and "is not a directory" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_public_bind_without_key_warns(tmp_path):
    import os

    with socket.socket() as busy:  # a busy port: the command warns, then refuses to start
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if k != "MM_API_KEY"}
        proc = run_mm("serve", "--api", "--host", "0.0.0.0", "--port", str(port), "--embedding-model", "minilm",
                      env=env)
        keyed = run_mm("serve", "--api", "--host", "0.0.0.0", "--port", str(port), "--embedding-model", "minilm",
                       env={**env, "MM_API_KEY": "from-the-environment"})
    assert "WITHOUT an API key" in proc.stderr
    assert proc.returncode == 2 and f"cannot listen on 0.0.0.0:{port}" in proc.stderr
    assert "WITHOUT an API key" not in keyed.stderr and keyed.returncode == 2  # MM_API_KEY counts as --api-key
