"""Regenerate the screenshots of the demo apps in docs/apps.md (tiny random checkpoints, headless Chromium).

    python docs/screenshots/make_screenshots.py

Builds tiny LFM2-VL / LFM2-Audio checkpoints and a five-document index, serves the combined app
on loopback, drives each tab like a user and saves one small PNG per app next to this file. The
checkpoints have random weights, so the answers and speech are noise: the pictures show the apps.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update"]
DOCS = [
    {"_id": "eiffel", "text": "The Eiffel Tower in Paris was completed in 1889 for the World's Fair.", "lang": "en"},
    {"_id": "dom", "text": "Der Kölner Dom ist eine der größten Kathedralen der Welt.", "lang": "de"},
    {"_id": "louvre", "text": "Le Louvre à Paris est le musée d'art le plus visité au monde.", "lang": "fr"},
    {"_id": "fuji", "text": "Mount Fuji is the highest mountain in Japan, near Tokyo.", "lang": "en"},
    {"_id": "sagrada", "text": "La Sagrada Família de Barcelona sigue en construcción.", "lang": "es"},
]


def _small_png(path: Path) -> None:
    """Quantize to a 128-colour palette: a few tens of KB instead of hundreds."""
    from PIL import Image

    with Image.open(path) as img:
        img.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def main() -> None:
    import soundfile as sf
    from mm.apps.combined import build_combined_app
    from mm.apps.common import launch
    from PIL import Image, ImageDraw
    from playwright.sync_api import sync_playwright

    import mm.testing

    work = Path(tempfile.mkdtemp(prefix="mm-shots-"))
    vl = mm.testing.make_tiny_lfm2_vl(work / "vl")
    audio = mm.testing.make_tiny_lfm2_audio(work / "audio")
    corpus = work / "docs.jsonl"
    corpus.write_text("\n".join(json.dumps(d, ensure_ascii=False) for d in DOCS) + "\n", encoding="utf-8")
    subprocess.run([sys.executable, "-m", "mm", "index", "build", str(corpus), "--index", str(work / "idx")],
                   check=True, cwd=ROOT)
    image = Image.new("RGB", (320, 240), (235, 240, 250))
    draw = ImageDraw.Draw(image)
    draw.rectangle((40, 60, 150, 170), fill=(220, 40, 40))
    draw.ellipse((180, 70, 290, 180), fill=(40, 120, 220))
    image.save(work / "shapes.png")
    t = np.arange(16000 * 2) / 16000
    sf.write(work / "hello.wav", (0.3 * np.sin(2 * np.pi * 220 * t) * np.sin(np.pi * t)).astype(np.float32), 16000)

    app = build_combined_app(vl, audio, work / "idx")
    launch(app, port=7899, block=False, quiet=True)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1200, "height": 860})
            page.set_default_timeout(120_000)
            page.goto("http://127.0.0.1:7899/")
            page.locator("#vqa-image input[type=file]").set_input_files(str(work / "shapes.png"))
            page.locator("#vqa-image-status .mm-status-ok").wait_for()
            page.locator("#vqa-question textarea").fill("What shapes are in the picture?")
            page.locator("#vqa-max-new input[type=number]").fill("24")
            page.locator("#vqa-ask").click()
            page.locator("#vqa-stats .mm-status-ok").wait_for()
            page.screenshot(path=str(HERE / "vqa.png"), full_page=True)

            page.get_by_role("tab", name="Speech", exact=True).click()
            page.locator("#speech-input input[type=file]").set_input_files(str(work / "hello.wav"))
            page.locator("#speech-input audio").first.wait_for(state="attached")
            page.locator("#speech-max-new input[type=number]").fill("32")
            page.locator("#speech-send").click()
            page.locator("#speech-stats .mm-status-ok").wait_for()
            page.wait_for_timeout(1000)
            page.screenshot(path=str(HERE / "speech.png"), full_page=True)

            page.get_by_role("tab", name="Search", exact=True).click()
            page.locator("#search-query textarea").fill("famous tower in Paris")
            page.locator("#search-k input[type=number]").fill("3")
            page.locator("#search-run").click()
            page.locator("#search-stats .mm-status-ok").wait_for()
            page.screenshot(path=str(HERE / "search.png"), full_page=True)
            browser.close()
    finally:
        app.close()
    for name in ("vqa", "speech", "search"):
        _small_png(HERE / f"{name}.png")
        print(HERE / f"{name}.png", (HERE / f"{name}.png").stat().st_size // 1024, "KB")


if __name__ == "__main__":
    main()
