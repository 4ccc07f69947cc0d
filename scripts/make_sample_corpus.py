"""Regenerate mm/data/sample_corpus.jsonl from XQuAD (CC BY-SA 4.0): 240 short passages, 20 in each of 12 languages.

Usage: python scripts/make_sample_corpus.py [XQUAD_DIR]   (default: ../shared/data/xquad)
Paragraph i (in XQuAD's order) is taken in language LANGS[i % 12], so every language covers
all 48 articles' topics in turn; the metadata keep the language, the article title and the
paragraph number. Each passage is the paragraph's first sentences up to MAX_CHARS characters
(so the demo indexes in seconds on a laptop CPU); the queries file keeps the questions, in the
same language, whose answer lies inside the kept passage.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

MAX_CHARS = 320
SENTENCE_ENDS = (". ", "。", "? ", "! ", "। ", "؟ ", "; ")
LANGS = ["en", "es", "de", "el", "ru", "tr", "ar", "vi", "th", "zh", "hi", "ro"]
REPO = Path(__file__).resolve().parents[1]


def first_sentences(text: str, limit: int = MAX_CHARS) -> str:
    """The longest prefix of whole sentences within ``limit`` characters (at least the first sentence)."""
    cuts = sorted({i + len(end) for end in SENTENCE_ENDS for i in range(len(text)) if text.startswith(end, i)})
    inside = [c for c in cuts if c <= limit]
    cut = inside[-1] if inside else (cuts[0] if cuts else len(text))
    return text[:cut].strip()


def main(xquad: Path) -> None:
    data = {lang: json.loads((xquad / f"xquad.{lang}.json").read_text(encoding="utf-8"))["data"] for lang in LANGS}
    titles = [a["title"] for a in data["en"]]
    docs, queries, n = [], [], 0
    for a, article in enumerate(data["en"]):
        for p in range(len(article["paragraphs"])):
            lang = LANGS[n % len(LANGS)]
            para = data[lang][a]["paragraphs"][p]
            doc_id = f"xquad-{n:03d}-{lang}"
            text = first_sentences(para["context"])
            docs.append({"_id": doc_id, "text": text, "lang": lang,
                         "article": titles[a].replace("_", " "), "paragraph": n})
            queries.extend({"_id": f"{qa['id']}-{lang}", "text": qa["question"], "lang": lang, "answer_doc": doc_id}
                           for qa in para["qas"]
                           if qa["answers"][0]["answer_start"] + len(qa["answers"][0]["text"]) <= len(text))
            n += 1
    out = REPO / "mm" / "data"
    with (out / "sample_corpus.jsonl").open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(d, ensure_ascii=False) + "\n" for d in docs)
    with (out / "sample_queries.jsonl").open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(q, ensure_ascii=False) + "\n" for q in queries)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO.parent / "shared" / "data" / "xquad")
