"""mm's native MaxSim-from-lookup-tables kernel (``mm/kernels/adc_maxsim.cpp``) against the torch path."""

from __future__ import annotations

import numpy as np
import pytest
from mm.index import layout, plaid
from mm.index.maxsim import ranges_index

from mm.kernels import adc
from tests.search.test_index_basic import clustered_docs
from tests.search.test_plaid_stages import build

needs_kernel = pytest.mark.skipif(not adc.available(), reason="no C++ compiler: the native kernel cannot build")


def segment(rng: np.random.Generator, n_cent: int, n_bytes: int, cid_dtype: type, with_norms: bool):
    doclens = rng.integers(1, 40, 30)
    n_tok = int(doclens.sum())
    tok_off = np.concatenate([[0], np.cumsum(doclens)])
    seg = {"cids": rng.integers(0, n_cent, n_tok).astype(cid_dtype),
           "codes": rng.integers(0, 256, (n_tok, n_bytes)).astype(np.uint8),
           "norms": None, "inv_norm": None, "inverse_norms": None}
    if with_norms:
        inv = (0.5 + rng.random(256)).astype(np.float32)
        norms = rng.integers(0, 256, n_tok).astype(np.uint8)
        seg.update(norms=norms, inv_norm=inv, inverse_norms=lambda idx: inv[norms[idx]])
    return seg, tok_off


def torch_maxsim(st, tables, seg, tok_off, rows) -> np.ndarray:
    idx, starts = ranges_index(tok_off[rows], tok_off[rows + 1])
    norms = seg["inverse_norms"](idx) if seg["inverse_norms"] is not None else None
    sims = plaid.token_scores(st, tables, seg["cids"][idx], seg["codes"][idx], norms)
    return np.maximum.reduceat(sims, starts, axis=0).sum(axis=1)


@needs_kernel
@pytest.mark.parametrize("q", [1, 7, 8, 13, 32, 33, 70])
@pytest.mark.parametrize(("cid_dtype", "with_norms", "dtype"), [(np.uint16, True, "float32"),
                                                               (np.int32, False, "float32"),
                                                               (np.uint16, True, "float16")])
def test_kernel_equals_the_torch_lookup(q, cid_dtype, with_norms, dtype):
    """Every column-block width (1-7 partial, 8, 32, more than 32) and both id, table and norm variants."""
    rng = np.random.default_rng(q)
    n_cent, n_bytes = 50, 12
    seg, tok_off = segment(rng, n_cent, n_bytes, cid_dtype, with_norms)
    st = rng.normal(size=(n_cent, q)).astype(np.float32)
    tables = plaid.lookup_tables(rng.normal(size=(n_bytes * 256, q)).astype(np.float32),
                                 rng.normal(size=q).astype(np.float32), dtype)
    rows = np.array([0, 1, 2, 5, 17, 29])
    want = torch_maxsim(st, tables, seg, tok_off, rows)
    for threads in (1, 2):
        got = adc.adc_maxsim(st, tables.bias, tables.table.numpy(), seg["cids"], seg["codes"], seg["norms"],
                             seg["inv_norm"], tok_off[rows], tok_off[rows + 1], threads, tables.unscale)
        # the same sums in another order; float16 tables: the torch path rounds its sums to float16 too
        np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == "float32" else 2e-3)


@needs_kernel
def test_empty_documents_score_zero_and_bad_arrays_are_refused():
    rng = np.random.default_rng(0)
    seg, _ = segment(rng, 10, 4, np.uint16, False)
    st, table, bias = np.ones((10, 3), np.float32), np.zeros((4 * 256, 3), np.float32), np.zeros(3, np.float32)
    args = (seg["cids"], seg["codes"], None, None)
    got = adc.adc_maxsim(st, bias, table, *args, np.array([0, 5]), np.array([3, 5]))
    assert got.tolist() == [3.0, 0.0]
    with pytest.raises(ValueError, match="out of range"):
        adc.adc_maxsim(st, bias, table, *args, np.array([0]), np.array([len(seg["codes"]) + 1]))
    with pytest.raises(ValueError, match="codes must be"):
        adc.adc_maxsim(st, bias, table, seg["cids"], seg["codes"].astype(np.int16), None, None, [0], [1])
    with pytest.raises(ValueError, match="tables do not fit"):
        adc.adc_maxsim(st, bias, table[:256], *args, [0], [1])
    with pytest.raises(ValueError, match="float32 or float16"):
        adc.adc_maxsim(st, bias, table.astype(np.float64), *args, [0], [1])
    with pytest.raises(ValueError, match="go together"):
        adc.adc_maxsim(st, bias, table, seg["cids"], seg["codes"], np.zeros(len(seg["cids"]), np.uint8), None, [0], [1])


def test_search_without_the_kernel_finds_the_same(tmp_path, monkeypatch):
    """No C++ compiler: the torch path answers, with the same documents and scores."""
    docs = clustered_docs(150, seed=3)
    index = build(tmp_path / "ix", docs)
    queries = [docs[i][:6] for i in range(0, 150, 29)]
    native, stages_native = index.search_timed(queries, k=10)
    assert adc.available() == ("maxsim" not in stages_native)  # the kernel takes the maxima inside the lookup
    monkeypatch.setattr(adc, "library", lambda name="adc_maxsim": None)
    fallback, stages = index.search_timed(queries, k=10)
    assert stages["maxsim"] > 0  # the torch path ran: it times the per-document maxima apart
    for a, b in zip(native, fallback, strict=True):
        assert [h.id for h in a] == [h.id for h in b]
        np.testing.assert_allclose([h.score for h in a], [h.score for h in b], rtol=1e-5)


@pytest.mark.parametrize("cid_dtype", [np.uint16, np.int32])
def test_centroid_interaction_is_the_same_with_and_without_the_kernel(cid_dtype, monkeypatch):
    rng = np.random.default_rng(7)
    doclens = rng.integers(1, 30, 80)
    lay = layout.bags_and_lists(doclens, rng.integers(0, 300, doclens.sum()).astype(cid_dtype), 300)
    assert lay["bags"].dtype == cid_dtype
    st = rng.normal(size=(300, 19)).astype(np.float32)
    rows = np.sort(rng.choice(80, 50, replace=False))
    native = plaid.centroid_interaction(lay["bags"], lay["bag_off"], rows, st, threads=2)
    monkeypatch.setattr(adc, "library", lambda name="adc_maxsim": None)
    numpy_path = plaid.centroid_interaction(lay["bags"], lay["bag_off"], rows, st)
    np.testing.assert_allclose(native, numpy_path, rtol=1e-5)
