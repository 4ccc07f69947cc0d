"""docs/api.md's options table is the declarations: every option, stage and default as the code has them."""

from __future__ import annotations

from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
COLUMNS = ("chat", "vqa", "speech-to-speech", "asr", "tts", "search")


def pipeline_classes():
    from mm.pipelines.chat import ChatPipeline
    from mm.pipelines.search import SearchPipeline
    from mm.pipelines.speech import ASRPipeline, SpeechToSpeechPipeline, TTSPipeline
    from mm.pipelines.vqa import VQAPipeline

    return dict(zip(COLUMNS, (ChatPipeline, VQAPipeline, SpeechToSpeechPipeline, ASRPipeline, TTSPipeline,
                              SearchPipeline), strict=True))


def documented() -> dict[str, tuple[str, list[str]]]:
    rows = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 + len(COLUMNS) and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = (cells[1], cells[2:2 + len(COLUMNS)])
    return rows


def test_the_options_table_matches_the_declarations():
    rows = documented()
    classes = pipeline_classes()
    declared_names = {name for cls in classes.values() for name in cls.declared_options()}
    assert set(rows) == declared_names
    for name, (stage, defaults) in rows.items():
        for column, cell in zip(COLUMNS, defaults, strict=True):
            declared = classes[column].declared_options().get(name)
            if declared is None:
                assert cell == "-", (name, column)
            else:
                assert declared.stage == stage, (name, column)
                assert cell == repr(declared.default), (name, column, cell)
