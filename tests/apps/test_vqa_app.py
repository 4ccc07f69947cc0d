"""The VQA app on a tiny random LFM2-VL checkpoint, in headless Chromium and through the Gradio client."""

from __future__ import annotations

import re

import pytest

from tests.apps import ui

QUESTION = "What colour is the square?"
MAX_NEW = 6


@pytest.fixture(scope="module")
def vqa_pipe(tiny_vl):
    import mm

    return mm.pipeline("vqa", model=str(tiny_vl))


@pytest.fixture(scope="module")
def vqa_server(serve_in_process, vqa_pipe):
    from mm.apps.vqa import build_vqa_app

    return serve_in_process(build_vqa_app(vqa_pipe))


def expected_answer(vqa_pipe, image_path, preset="fast"):
    from PIL import Image

    with Image.open(image_path) as img:
        return vqa_pipe(img.convert("RGB"), QUESTION, image_tokens=preset, max_new_tokens=MAX_NEW)


@pytest.mark.browser
def test_upload_and_ask_shows_the_streamed_answer(vqa_server, vqa_pipe, page, samples, artifacts_dir):
    ui.open_app(page, vqa_server.url, "#vqa-image")
    ui.wait_status(page, "vqa-model-status", "ok")
    ui.upload(page, "vqa-image", samples["image"])
    assert "96x64" in ui.wait_status(page, "vqa-image-status", "ok")
    ui.fill(page, "vqa-question", QUESTION)
    ui.choose(page, "vqa-preset", "fast")
    ui.set_number(page, "vqa-max-new", MAX_NEW)
    page.locator("#vqa-ask").click()
    stats = ui.wait_status(page, "vqa-stats", "ok")
    expected = expected_answer(vqa_pipe, samples["image"])
    tokens = expected.image_tokens if isinstance(expected.image_tokens, int) else sum(expected.image_tokens)
    assert f"image tokens: {tokens}" in stats
    assert re.search(r"latency: \d", stats)
    assert page.locator("#vqa-answer textarea").input_value() == expected.answer
    ui.screenshot(page, artifacts_dir, "vqa-answer")


@pytest.mark.browser
def test_corrupt_image_shows_an_error_in_the_page(vqa_server, page, samples, artifacts_dir):
    ui.open_app(page, vqa_server.url, "#vqa-image")
    ui.upload(page, "vqa-image", samples["corrupt_image"])
    assert "could not be read as an image" in ui.wait_status(page, "vqa-image-status", "error")
    ui.fill(page, "vqa-question", QUESTION)
    page.locator("#vqa-ask").click()
    toasts = ui.toast_texts(page)
    assert any("corrupt.png could not be read as an image" in t for t in toasts), toasts
    assert not any("Traceback" in t for t in toasts)
    ui.screenshot(page, artifacts_dir, "vqa-corrupt-image")


def test_ten_concurrent_requests_all_succeed(vqa_server, vqa_pipe, samples):
    """Ten clients at once: the queue serves them one at a time on the one shared model, none fails."""
    from concurrent.futures import ThreadPoolExecutor

    from gradio_client import Client, handle_file

    expected = expected_answer(vqa_pipe, samples["image"])

    def one_user(_: int):
        client = Client(vqa_server.url, verbose=False)
        return client.predict(handle_file(str(samples["image"])), QUESTION, "fast", MAX_NEW, api_name="/vqa")

    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(one_user, range(10)))
    assert len(results) == 10
    for answer, stats in results:
        assert answer == expected.answer
        assert "mm-status-ok" in stats and "latency" in stats


def test_presets_change_the_image_token_count(vqa_server, samples, tmp_path):
    """Through the API: 'detailed' may spend more image tokens than 'fast' on a large image."""
    from gradio_client import Client, handle_file
    from PIL import Image

    big = tmp_path / "big.png"
    Image.new("RGB", (1024, 768), (30, 120, 200)).save(big)
    client = Client(vqa_server.url, verbose=False)
    counts = {}
    for preset in ("fast", "detailed"):
        _, stats = client.predict(handle_file(str(big)), QUESTION, preset, 2, api_name="/vqa")
        counts[preset] = int(re.search(r"image tokens: (\d+)", stats).group(1))
    assert counts["fast"] < counts["detailed"], counts
