"""Real batches for ASR and TTS: several inputs decode together (left-padded, masked) and give what
each input gives alone."""

from __future__ import annotations

import numpy as np

import mm


def clips():
    rng = np.random.default_rng(4)
    t = np.linspace(0, 1, 16000, dtype=np.float32)
    return [(np.sin(2 * np.pi * f * t[: n]) * 0.3 + rng.normal(0, 0.01, n)).astype(np.float32)
            for f, n in ((220, 16000), (440, 9000), (330, 12500))]


def spy_batches(monkeypatch, calls):
    import mm.models.lfm2_audio_batch as batch_module

    original = batch_module.generate_batch

    def spy(model, histories, config, **flags):
        calls.append(len(histories))
        return original(model, histories, config, **flags)

    monkeypatch.setattr(batch_module, "generate_batch", spy)


def test_asr_batch_equals_each_alone(tiny_audio, monkeypatch):
    asr = mm.pipeline("asr", model=tiny_audio, dtype="float32")
    items = [(wave, 16000) for wave in clips()]
    alone = [asr(item, max_new_tokens=12) for item in items]
    calls: list[int] = []
    spy_batches(monkeypatch, calls)
    together = asr(items, max_new_tokens=12)
    assert calls == [3]  # one batched decode for the three recordings
    assert [r.token_ids for r in together] == [r.token_ids for r in alone]
    assert [r.text for r in together] == [r.text for r in alone]
    assert [r.stop_reason for r in together] == [r.stop_reason for r in alone]
    assert [r.usage for r in together] == [r.usage for r in alone]


def test_tts_batch_equals_each_alone(tiny_audio, monkeypatch):
    tts = mm.pipeline("tts", model=tiny_audio, dtype="float32", batch_size=2)
    texts = ["Hello there.", "A somewhat longer sentence to say out loud.", "Bye."]
    alone = [tts(text, max_new_tokens=16) for text in texts]
    calls: list[int] = []
    spy_batches(monkeypatch, calls)
    together = tts(texts, max_new_tokens=16)
    assert calls == [2]  # batch_size=2: the first two together, the last one alone
    for a, b in zip(alone, together, strict=True):
        assert a.token_ids == b.token_ids and a.audio_codes.tolist() == b.audio_codes.tolist()
        np.testing.assert_allclose(a.audio, b.audio, atol=1e-5)
        assert a.stop_reason == b.stop_reason and a.usage == b.usage


def test_seeded_sampling_in_a_batch_matches_each_alone(tiny_audio):
    tts = mm.pipeline("tts", model=tiny_audio, dtype="float32")
    options = {"max_new_tokens": 12, "do_sample": True, "temperature": 1.5, "audio_top_k": 8, "seed": 5}
    texts = ["One two three.", "Four."]
    together = tts(texts, **options)
    assert [r.audio_codes.tolist() for r in together] == [tts(t, **options).audio_codes.tolist() for t in texts]


def test_transformers_engine_decodes_one_by_one(tiny_audio, monkeypatch):
    asr = mm.pipeline("asr", model=tiny_audio, dtype="float32", engine="transformers")
    calls: list[int] = []
    spy_batches(monkeypatch, calls)
    items = [(wave, 16000) for wave in clips()[:2]]
    together = asr(items, max_new_tokens=8)
    assert calls == []
    assert [r.token_ids for r in together] == [asr(item, max_new_tokens=8).token_ids for item in items]
