"""Fuzz index folders: damage one file of a committed index, then open, read, search and write it.

Every case must end in a result or an MMError (:class:`mm.errors.IndexFormatError` for a damaged
folder, naming the file) - never a bare exception, a hang or a wrong answer such as the same
document twice.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import strategies as st

from tests.fuzz.harness import any_value, fuzz_tests

KINDS = st.sampled_from(["dense", "multivector", "multivector-originals"])
FILE_PICK = st.sampled_from(["manifest.json", "entries.npy", "text.npy", "text_off.npy", "vectors.npy", "doclens.npy",
                             "cids.npy", "codes.npy", "ivf.npy", "ivf_off.npy", "bags.npy", "bag_off.npy",
                             "rnorm.npy", "centroids.npy", "del-", "any"])
MUTATION = st.sampled_from(["delete", "truncate", "empty", "random", "flip", "reshape", "retype", "json-field",
                            "json-deep", "json-drop", "nan", "range"])


def _json_paths(obj, prefix=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield (*prefix, k)
            yield from _json_paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield (*prefix, i)
            yield from _json_paths(v, (*prefix, i))


@st.composite
def damage(draw):
    return draw(KINDS), draw(FILE_PICK), draw(MUTATION), draw(st.integers(0, 2**32 - 1)), draw(any_value)


def apply_damage(folder: Path, pick: str, mutation: str, seed: int, value) -> str:
    rng = np.random.default_rng(seed)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name != "index.lock")
    matches = [p for p in files if pick in p.name] if pick != "any" else files
    if not matches:
        return "no such file"
    target = matches[int(rng.integers(len(matches)))]
    data = target.read_bytes()
    if mutation == "delete":
        target.unlink()
    elif mutation == "truncate":
        target.write_bytes(data[: int(rng.integers(max(len(data), 1)))])
    elif mutation == "empty":
        target.write_bytes(b"")
    elif mutation == "random":
        target.write_bytes(rng.bytes(int(rng.integers(1, 300))))
    elif mutation == "flip":
        buf = bytearray(data)
        for _ in range(int(rng.integers(1, 8))):
            if buf:
                buf[int(rng.integers(len(buf)))] = int(rng.integers(256))
        target.write_bytes(bytes(buf))
    elif target.suffix == ".npy" and mutation in ("reshape", "retype", "nan", "range"):
        array = np.load(target)
        if mutation == "reshape":
            array = np.resize(array, (int(rng.integers(0, 20)), *array.shape[1:]))
        elif mutation == "retype":
            array = array.astype(rng.choice(["float64", "int8", "uint64", "float16", "bool"]))
        elif mutation == "nan" and array.dtype.kind == "f" and array.size:
            array = array.copy()
            array.flat[int(rng.integers(array.size))] = np.nan
        elif mutation == "range" and array.dtype.kind in "iu" and array.size:
            array = array.copy()
            array.flat[int(rng.integers(array.size))] = np.iinfo(array.dtype).max
        np.save(target, array)
    elif target.suffix == ".json" and mutation.startswith("json"):
        try:
            obj = json.loads(data)
        except ValueError:
            return "unparsable json"
        paths = list(_json_paths(obj))
        if mutation == "json-deep":
            target.write_text("[" * 100000 + "]" * 100000)
            return f"{target.name}: deep"
        if not paths:
            return "empty json"
        path = paths[int(rng.integers(len(paths)))]
        parent = obj
        for key in path[:-1]:
            parent = parent[key]
        if mutation == "json-drop":
            del parent[path[-1]]
        else:
            parent[path[-1]] = value
        target.write_text(json.dumps(obj, ensure_ascii=False, default=str), encoding="utf-8", errors="surrogatepass")
    return f"{target.name}: {mutation}"


TEMPLATES: dict = {}


def check_index(case) -> None:
    from mm.index import open_index

    kind, pick, mutation, seed, value = case
    folder = Path(tempfile.mkdtemp(prefix="mm-fuzz-index-")) / "index"
    shutil.copytree(TEMPLATES[kind], folder)
    apply_damage(folder, pick, mutation, seed, value)
    try:
        index = open_index(folder, lock_timeout=2)
        rng = np.random.default_rng(seed)
        query = rng.standard_normal(8 if kind == "dense" else (3, 8)).astype(np.float32)
        hits = index.search(query, k=20)
        ids = [h.id for h in hits]
        assert len(ids) == len(set(ids)), f"a document came back twice: {ids}"
        for hit in hits:
            assert isinstance(hit.text, str) and np.isfinite(hit.score)
        for doc_id in ("d0", "d5", "d11"):
            index.get(doc_id)
        vectors = rng.standard_normal((1, 8) if kind == "dense" else (4, 8)).astype(np.float32)
        index.add(["new"], vectors if kind == "dense" else [vectors], texts=["new text"])
        index.delete(["d1"])
        assert open_index(folder).get("new") is not None
    finally:
        shutil.rmtree(folder.parent, ignore_errors=True)


test_index_folders, test_index_folders_long = fuzz_tests("index folders", damage(), check_index, fast=60, long=1500)


@pytest.fixture(autouse=True)
def _templates(index_templates):
    TEMPLATES.update(index_templates)
