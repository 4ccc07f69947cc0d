"""Small Playwright helpers shared by the browser tests (element ids are set by the apps)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


def open_app(page: Any, url: str, ready: str) -> None:
    """Load ``url`` and wait for the element ``ready`` (a CSS selector) to be visible."""
    page.goto(url)
    page.wait_for_selector(ready, state="visible")


def open_tab(page: Any, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()


def upload(page: Any, elem_id: str, path: Path) -> None:
    """Put ``path`` into the upload field of the component ``#elem_id``, once the component is shown.

    A component inside an accordion that was just opened may still be rendering: a file set on its input
    before then can be lost (the file name then never shows), so wait until it is visible first.
    """
    page.locator(f"#{elem_id}").wait_for(state="visible")
    page.locator(f"#{elem_id} input[type=file]").set_input_files(str(path))


def fill(page: Any, elem_id: str, text: str) -> None:
    page.locator(f"#{elem_id} textarea, #{elem_id} input[type=text]").first.fill(text)


def wait_status(page: Any, elem_id: str, kind: str = "ok", timeout: float = 60_000) -> str:
    """Wait for a status box of ``kind`` in ``#elem_id`` and return its text."""
    box = page.locator(f"#{elem_id} .mm-status-{kind}")
    box.wait_for(state="visible", timeout=timeout)
    return box.inner_text()


def toast_texts(page: Any, timeout: float = 30_000) -> list[str]:
    """The texts of the error toasts Gradio shows (waits for at least one)."""
    toast = page.locator("[data-testid='toast-body']")
    toast.first.wait_for(state="visible", timeout=timeout)
    return toast.all_inner_texts()


def audio_duration(page: Any, elem_id: str, timeout: float = 60_000) -> float:
    """The duration (s) of the audio loaded in the player ``#elem_id``, once it has some.

    Gradio's player keeps its ``<audio>`` inside a shadow root: Playwright's locators reach it,
    ``document.querySelectorAll`` does not.
    """
    deadline = time.monotonic() + timeout / 1000
    while True:
        durations = page.locator(f"#{elem_id} audio").evaluate_all(
            "els => els.filter(e => e.src && isFinite(e.duration) && e.duration > 0).map(e => e.duration)")
        if durations:
            return float(max(durations))
        if time.monotonic() > deadline:
            raise AssertionError(f"no audio with a duration in #{elem_id} after {timeout / 1000:.0f} s")
        page.wait_for_timeout(250)


def screenshot(page: Any, artifacts: Path, name: str) -> Path:
    path = artifacts / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def set_number(page: Any, elem_id: str, value: float) -> None:
    """Set a slider / number component ``#elem_id`` by typing into its number box."""
    box = page.locator(f"#{elem_id} input[type=number]").first
    box.fill(str(value))
    box.press("Enter")


def choose(page: Any, elem_id: str, label: str) -> None:
    """Pick the radio option ``label`` of ``#elem_id``."""
    page.locator(f"#{elem_id}").get_by_label(label, exact=True).check()
