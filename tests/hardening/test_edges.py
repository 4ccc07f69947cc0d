"""The escapes listed in issue 16, one test each (the fuzz suite covers their neighbourhoods)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from mm.index import create_index, open_index

from mm.errors import IndexDamagedError, IndexFormatError, InvalidInputError


@pytest.fixture()
def dense(tmp_path):
    path = tmp_path / "idx"
    index = create_index(path, kind="dense", dim=4, encoder_info={})
    index.add([f"d{i}" for i in range(5)], np.eye(5, 4, dtype=np.float32) + 0.1)
    return path


def test_nan_vectors_never_return_a_document_twice(dense):
    vectors = next(dense.glob("seg-*.vectors.npy"))
    array = np.load(vectors)
    array[1:4] = np.nan
    np.save(vectors, array)
    hits = open_index(dense).search(np.ones(4, np.float32), k=5)
    ids = [h.id for h in hits]
    assert len(ids) == len(set(ids)) and set(ids) <= {"d0", "d4"}


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_damaged_npy_names_the_file(dense, damage):
    vectors = next(dense.glob("seg-*.vectors.npy"))
    vectors.write_bytes(b"" if damage == "empty" else vectors.read_bytes()[:-3])
    with pytest.raises(IndexDamagedError, match=vectors.name) as info:
        open_index(dense)
    assert "mm index build" in str(info.value)


def test_manifest_schema_and_depth(dense):
    manifest = dense / "manifest.json"
    data = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**data, "dim": "4"}))
    with pytest.raises(IndexDamagedError, match="'dim' must be int"):
        open_index(dense)
    manifest.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(IndexFormatError, match="deeper than 64"):
        open_index(dense)


def test_tombstones_out_of_range(dense):
    index = open_index(dense)
    index.delete(["d1"])
    tomb = next(dense.glob("seg-*.del-*.npy"))
    np.save(tomb, np.array([99], np.int32))
    with pytest.raises(IndexDamagedError, match="outside"):
        open_index(dense)


def test_document_id_that_looks_like_a_chunk(tmp_path):
    index = create_index(tmp_path / "i", kind="dense", dim=2, encoder_info={})
    index.add(["a#0"], np.ones((1, 2), np.float32))
    with pytest.raises(InvalidInputError, match="chunk 0 of the long document 'a'"):
        index.add(["a#0"], np.ones((1, 2), np.float32), metadata=[{"_doc": "a", "_chunk": 0}])


@pytest.mark.parametrize("argv", [["--bogus"], ["nosuch"], ["search", "-k", "abc", "q"],
                                  ["chat", "--max-new-tokens", "0", "hi"]])
def test_cli_usage_errors_are_one_line(argv, capsys):
    from mm.cli import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err and err.strip().startswith("error:")
