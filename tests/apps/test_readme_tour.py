"""The README's ten-line tour runs as written, on tiny checkpoints in place of the real ones.

Only the checkpoint paths and the generation lengths (``max_new_tokens``, kept short: tiny random
models never stop on their own) are changed.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def tour_code() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## A ten-line tour", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "the README's tour has no python block"
    return match.group(1)


def test_the_tour_is_ten_lines():
    assert len([line for line in tour_code().splitlines() if line.strip()]) <= 10


def test_the_readme_tour_runs(tiny_lfm2, tiny_vl, tiny_audio, tiny_index, tmp_path, monkeypatch, capsys):
    import soundfile as sf
    from PIL import Image

    code = tour_code()
    for placeholder, real in {"path/to/LFM2-350M": tiny_lfm2, "path/to/LFM2-VL-450M": tiny_vl,
                              "path/to/LFM2-Audio-1.5B": tiny_audio, "my-index": tiny_index}.items():
        assert f'"{placeholder}"' in code, placeholder
        code = code.replace(f'"{placeholder}"', repr(str(real)))
    code, lengths = re.subn(r"max_new_tokens=\d+", "max_new_tokens=24", code)  # interleaved: audio after 6 text steps
    assert lengths == 3  # chat, vqa and speech-to-speech
    Image.new("RGB", (64, 48), (200, 40, 40)).save(tmp_path / "photo.jpg")
    t = np.arange(16000) / 16000
    sf.write(tmp_path / "question.wav", (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
    monkeypatch.chdir(tmp_path)

    exec(compile(code, "README.md (tour)", "exec"), {})

    printed = capsys.readouterr().out
    assert printed.count("\n") >= 3, printed  # chat, vqa and search each printed their answer
    assert (tmp_path / "answer.wav").stat().st_size > 44  # a WAV header and samples
