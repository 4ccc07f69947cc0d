"""The app builders: public endpoints, one queue limit per model, the streamed-audio option."""

from __future__ import annotations

import pytest
from mm.apps.combined import build_combined_app
from mm.apps.search import build_search_app
from mm.apps.speech import build_speech_app
from mm.apps.vqa import build_vqa_app

from mm.errors import MissingDependencyError


def endpoints(app):
    return {fn.api_name: fn for fn in app.fns.values() if fn.api_visibility == "public"}


def test_each_model_has_one_queue_limit_shared_by_its_events():
    app = build_combined_app(concurrency_limit=2)
    public = endpoints(app)
    assert set(public) == {"vqa", "speech_to_speech", "asr", "tts", "search", "add_documents"}
    groups = {}
    for fn in app.fns.values():
        if fn.queue:
            groups.setdefault(fn.concurrency_id, set()).add(fn.api_name)
            assert fn.concurrency_limit == 2
    assert groups["model:speech"] == {"speech_to_speech", "asr", "tts"}
    assert {"vqa"} <= groups["model:vqa"] and {"search", "add_documents"} <= groups["model:search"]


def test_single_apps_expose_their_own_endpoints_and_send_no_analytics():
    apps = {"vqa": build_vqa_app(), "speech": build_speech_app(), "search": build_search_app()}
    assert set(endpoints(apps["vqa"])) == {"vqa"}
    assert set(endpoints(apps["speech"])) == {"speech_to_speech", "asr", "tts"}
    assert set(endpoints(apps["search"])) == {"search", "add_documents"}
    assert not any(app.analytics_enabled for app in apps.values())


def test_stream_audio_needs_ffmpeg(monkeypatch):
    monkeypatch.setattr("mm.apps.speech.ffmpeg_available", lambda: False)
    with pytest.raises(MissingDependencyError, match="ffmpeg"):
        build_speech_app(stream_audio=True)
    monkeypatch.setattr("mm.apps.speech.ffmpeg_available", lambda: True)
    app = build_speech_app(stream_audio=True)
    reply = next(b for b in app.blocks.values() if getattr(b, "elem_id", None) == "speech-reply")
    assert reply.streaming and reply.autoplay
    reply = next(b for b in build_speech_app().blocks.values() if getattr(b, "elem_id", None) == "speech-reply")
    assert not reply.streaming
