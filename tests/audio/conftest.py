"""Fixtures of the LFM2-Audio tests: the shared golden bundle, its checkpoint, and a tiny factory checkpoint."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import find_shared

REPO = Path(__file__).resolve().parents[2]
FIXTURE = "fixtures/lfm2_audio_tiny"


@pytest.fixture(scope="session")
def audio_fixture_dir() -> Path:
    shared = find_shared(FIXTURE)
    if shared is None:
        pytest.skip(f"shared fixtures not found at {REPO.parent / 'shared'} or $MM_SHARED_DIR")
    return shared / FIXTURE


@pytest.fixture(scope="session")
def fixture_checkpoint(audio_fixture_dir: Path) -> Path:
    return audio_fixture_dir / "checkpoint"


@pytest.fixture(scope="session")
def goldens(audio_fixture_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(audio_fixture_dir / "goldens.safetensors"))


@pytest.fixture(scope="session")
def goldens_json(audio_fixture_dir: Path) -> dict:
    import json

    return json.loads((audio_fixture_dir / "goldens.json").read_text())


@pytest.fixture(scope="session")
def bundle(fixture_checkpoint: Path):
    """The golden checkpoint loaded in float32 (shared by the golden and pipeline tests)."""
    from mm.models.lfm2_audio import LFM2Audio

    return LFM2Audio.load(fixture_checkpoint, dtype="float32")


@pytest.fixture(scope="session")
def input_wav(audio_fixture_dir: Path) -> Path:
    return audio_fixture_dir / "input.wav"


@pytest.fixture(scope="session")
def tiny_audio(tmp_path_factory) -> Path:
    """A tiny random LFM2-Audio checkpoint written by mm.testing (official layout)."""
    from mm.testing import make_tiny_lfm2_audio

    return make_tiny_lfm2_audio(tmp_path_factory.mktemp("tiny_lfm2_audio"), seed=3)


@pytest.fixture()
def ckpt_copy(fixture_checkpoint: Path, tmp_path: Path) -> Path:
    """A writable copy of the golden checkpoint (for corrupting it)."""
    target = tmp_path / "ckpt"
    shutil.copytree(fixture_checkpoint, target)
    for path in target.iterdir():
        path.chmod(0o644)
    return target


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory) -> Path:
    """Real speech from espeak-ng (16 kHz wav), or skip when espeak-ng is missing."""
    import subprocess

    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.skip("espeak-ng is not installed (apt-get install -y espeak-ng)")
    out = tmp_path_factory.mktemp("speech") / "speech.wav"
    subprocess.run([exe, "-v", "en-us", "-s", "170", "-w", str(out),
                    "Hello. What is the weather like in Paris today?"], check=True, capture_output=True)
    return out


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread (thread wake-ups dominate); restore the count afterwards."""
    import torch

    from mm import runtime

    before = torch.get_num_threads()
    runtime.configure_torch(1)
    yield
    torch.set_num_threads(before)
