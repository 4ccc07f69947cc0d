"""Model resolution: local dirs, offline failures, the shared model cache."""

from __future__ import annotations

import time

import pytest

import mm
from mm import hub
from mm.errors import InvalidInputError, ModelNotFoundError


def test_local_directory_resolves(tiny_lfm2):
    assert hub.resolve_model(tiny_lfm2) == tiny_lfm2.resolve()
    assert hub.resolve_model(str(tiny_lfm2)) == tiny_lfm2.resolve()


def test_missing_local_directory_fails_fast_with_guidance(tmp_path):
    start = time.perf_counter()
    with pytest.raises(ModelNotFoundError) as info:
        mm.pipeline("chat", model=str(tmp_path / "nope"))
    assert time.perf_counter() - start < 2
    message = str(info.value)
    assert "nope" in message and "local checkpoint directory" in message


def test_directory_without_config_is_named(tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"missing config\.json"):
        hub.resolve_model(tmp_path)


def test_missing_hub_id_offline_fails_at_once(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    start = time.perf_counter()
    with pytest.raises(ModelNotFoundError) as info:
        hub.resolve_model("LiquidAI/Not-A-Real-Model")
    assert time.perf_counter() - start < 2
    message = str(info.value)
    assert "LiquidAI/Not-A-Real-Model" in message and "HF cache" in message and "offline" in message


def test_default_model_of_a_task_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="LiquidAI/LFM2-350M"):
        mm.pipeline("chat")


def test_empty_model_name_is_invalid():
    with pytest.raises(InvalidInputError):
        hub.resolve_model("  ")


def test_hf_cache_entry_resolves_offline(monkeypatch, tmp_path, tiny_lfm2):
    cache = tmp_path / "hub"
    snapshot = cache / "models--acme--tiny" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    for f in tiny_lfm2.iterdir():
        (snapshot / f.name).symlink_to(f)
    (cache / "models--acme--tiny" / "refs").mkdir()
    (cache / "models--acme--tiny" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "cache_dir", lambda: cache)
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    assert hub.resolve_model("acme/tiny") == snapshot


def test_two_pipelines_share_one_model(tiny_lfm2):
    a = mm.pipeline("chat", model=tiny_lfm2, dtype="float32")
    b = mm.pipeline("chat", model=str(tiny_lfm2), dtype="float32")
    assert a.backbone is b.backbone
    assert a.backbone.model is b.backbone.model
