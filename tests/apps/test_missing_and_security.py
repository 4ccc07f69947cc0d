"""Pages without (working) models explain themselves; nothing outside the upload area is reachable."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from tests.apps import ui


@pytest.fixture(scope="module")
def unconfigured(serve_in_process, tmp_path_factory):
    """The combined app with a VQA model folder that cannot load and no speech model or index."""
    from mm.apps.combined import build_combined_app

    broken = tmp_path_factory.mktemp("not_a_checkpoint")
    (broken / "config.json").write_text("{ this is not json")
    return serve_in_process(build_combined_app(broken, None, None))


@pytest.mark.browser
def test_missing_models_are_explained_in_the_page(unconfigured, page, samples, artifacts_dir):
    ui.open_app(page, unconfigured.url, "#vqa-image")
    vqa_status = ui.wait_status(page, "vqa-model-status", "error")
    assert "The vqa model could not be loaded" in vqa_status
    ui.upload(page, "vqa-image", samples["image"])
    ui.wait_status(page, "vqa-image-status", "ok")
    ui.fill(page, "vqa-question", "What is this?")
    page.locator("#vqa-ask").click()
    toasts = ui.toast_texts(page)
    assert any("The vqa model could not be loaded" in t for t in toasts), toasts
    assert not any("Traceback" in t for t in toasts)
    ui.screenshot(page, artifacts_dir, "missing-model-vqa")

    ui.open_tab(page, "Speech")
    assert "No speech model is configured" in ui.wait_status(page, "speech-model-status", "error")
    assert "--speech-model" in page.locator("#speech-model-status").inner_text()
    ui.open_tab(page, "Search")
    assert "No search model is configured" in ui.wait_status(page, "search-model-status", "error")


def _get_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_files_outside_the_upload_area_are_not_served(unconfigured, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("do not serve me")
    for path in ("/etc/passwd", str(secret), str(unconfigured.url)):
        assert _get_status(f"{unconfigured.url}gradio_api/file={path}") in {403, 404}


def test_inputs_naming_server_paths_are_refused(unconfigured, tmp_path):
    """A client cannot make the app read a server file by sending its path instead of uploading it."""
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG secret")
    body = {"data": [{"path": str(secret), "meta": {"_type": "gradio.FileData"}}, "q", "fast", 8]}
    request = urllib.request.Request(f"{unconfigured.url}gradio_api/call/vqa", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        event_id = json.loads(response.read())["event_id"]
    with urllib.request.urlopen(f"{unconfigured.url}gradio_api/call/vqa/{event_id}", timeout=30) as response:
        stream = response.read().decode()
    assert "event: error" in stream
    assert "PNG secret" not in stream


def test_server_binds_loopback_only(unconfigured):
    assert unconfigured.blocks.server_name == "127.0.0.1"
    assert unconfigured.blocks.allowed_paths == []


def test_uploads_above_the_size_limit_are_refused(serve_in_process):
    import uuid

    from mm.apps.common import AppLimits
    from mm.apps.vqa import build_vqa_app

    limits = AppLimits(max_file_size="1kb")
    served = serve_in_process(build_vqa_app(None, limits=limits), limits)

    def upload(size: int) -> tuple[int, bytes]:
        boundary = uuid.uuid4().hex
        body = (f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="x.png"\r\n'
                "Content-Type: image/png\r\n\r\n").encode() + b"\0" * size + f"\r\n--{boundary}--\r\n".encode()
        request = urllib.request.Request(f"{served.url}gradio_api/upload", data=body,
                                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    assert upload(500)[0] == 200
    status, body = upload(5000)
    assert status == 413 and b"maximum allowed size of 1024 bytes" in body
