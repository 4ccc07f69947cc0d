"""mm's native MaxSim-from-lookup-tables kernel (``mm/kernels/late_interaction.cpp``) against the torch path."""

from __future__ import annotations

import numpy as np
import pytest
from mm.index import layout, plaid
from mm.index.maxsim import ranges_index

from mm.kernels import late_interaction
from tests.search.test_index_basic import clustered_docs
from tests.search.test_plaid_stages import build

needs_kernel = pytest.mark.skipif(not late_interaction.available(), reason="no C++ compiler: the native kernel cannot build")


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
        got = late_interaction.adc_maxsim(st, tables.bias, tables.table.numpy(), seg["cids"], seg["codes"], seg["norms"],
                             seg["inv_norm"], tok_off[rows], tok_off[rows + 1], threads, tables.unscale)
        # the same sums in another order; float16 tables: the torch path rounds its sums to float16 too
        np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == "float32" else 2e-3)


@needs_kernel
def test_empty_documents_score_zero_and_bad_arrays_are_refused():
    rng = np.random.default_rng(0)
    seg, _ = segment(rng, 10, 4, np.uint16, False)
    st, table, bias = np.ones((10, 3), np.float32), np.zeros((4 * 256, 3), np.float32), np.zeros(3, np.float32)
    args = (seg["cids"], seg["codes"], None, None)
    got = late_interaction.adc_maxsim(st, bias, table, *args, np.array([0, 5]), np.array([3, 5]))
    assert got.tolist() == [3.0, 0.0]
    with pytest.raises(ValueError, match="out of range"):
        late_interaction.adc_maxsim(st, bias, table, *args, np.array([0]), np.array([len(seg["codes"]) + 1]))
    with pytest.raises(ValueError, match="codes must be"):
        late_interaction.adc_maxsim(st, bias, table, seg["cids"], seg["codes"].astype(np.int16), None, None, [0], [1])
    with pytest.raises(ValueError, match="tables do not fit"):
        late_interaction.adc_maxsim(st, bias, table[:256], *args, [0], [1])
    with pytest.raises(ValueError, match="float32 or float16"):
        late_interaction.adc_maxsim(st, bias, table.astype(np.float64), *args, [0], [1])
    with pytest.raises(ValueError, match="go together"):
        late_interaction.adc_maxsim(st, bias, table, seg["cids"], seg["codes"], np.zeros(len(seg["cids"]), np.uint8), None, [0], [1])


def test_search_without_the_kernel_finds_the_same(tmp_path, monkeypatch):
    """No C++ compiler: the torch path answers, with the same documents and scores."""
    docs = clustered_docs(150, seed=3)
    index = build(tmp_path / "ix", docs)
    queries = [docs[i][:6] for i in range(0, 150, 29)]
    native, stages_native = index.search_timed(queries, k=10)
    assert late_interaction.available() == ("maxsim" not in stages_native)  # the kernel takes the maxima inside the lookup
    monkeypatch.setattr(late_interaction, "library", lambda name="late_interaction": None)
    fallback, stages = index.search_timed(queries, k=10)
    assert stages["maxsim"] > 0  # the torch path ran: it times the per-document maxima apart
    for a, b in zip(native, fallback, strict=True):
        assert [h.id for h in a] == [h.id for h in b]
        np.testing.assert_allclose([h.score for h in a], [h.score for h in b], rtol=1e-5)


@needs_kernel
@pytest.mark.parametrize("cid_dtype", [np.uint16, np.int32])
def test_centroid_interaction_is_the_same_with_and_without_the_kernel(cid_dtype, monkeypatch):
    rng = np.random.default_rng(7)
    doclens = rng.integers(1, 30, 80)
    lay = layout.bags_and_lists(doclens, rng.integers(0, 300, doclens.sum()).astype(cid_dtype), 300)
    assert lay["bags"].dtype == cid_dtype
    st = rng.normal(size=(300, 19)).astype(np.float32)
    rows = np.sort(rng.choice(80, 50, replace=False))
    native = plaid.centroid_interaction(lay["bags"], lay["bag_off"], rows, st, threads=2)
    monkeypatch.setattr(late_interaction, "library", lambda name="late_interaction": None)
    numpy_path = plaid.centroid_interaction(lay["bags"], lay["bag_off"], rows, st)
    np.testing.assert_allclose(native, numpy_path, rtol=1e-5)


@needs_kernel
@pytest.mark.parametrize("ivf_dtype", [np.uint16, np.int32])
@pytest.mark.parametrize("threshold", [-1e9, 0.3])
def test_probe_candidates_equal_the_numpy_stages(ivf_dtype, threshold):
    rng = np.random.default_rng(11)
    n_docs, n_cent, q = 200, 60, 9
    doclens = rng.integers(1, 25, n_docs)
    lay = layout.bags_and_lists(doclens, rng.integers(0, n_cent, doclens.sum()).astype(np.uint16), n_cent)
    ivf = lay["ivf"].astype(ivf_dtype)
    st = rng.normal(size=(n_cent, q)).astype(np.float32)
    allowed = rng.random(n_docs) < 0.8
    ranked = plaid.probe_ranked(st, 4)
    rows, scores = late_interaction.probe_candidates(ivf, lay["ivf_off"], ranked, st, threshold, allowed)
    want_rows = plaid.candidates(ivf, lay["ivf_off"], np.unique(ranked), allowed)
    assert rows.tolist() == want_rows.tolist() and 0 < len(rows) < n_docs
    np.testing.assert_allclose(scores, plaid.probe_scores(ivf, lay["ivf_off"], st, ranked, rows, threshold), rtol=1e-5)
    with pytest.raises(ValueError, match="out of range"):
        late_interaction.probe_candidates(ivf, lay["ivf_off"], ranked + n_cent, st, threshold, allowed)
    with pytest.raises(ValueError, match="uint16 or int32"):
        late_interaction.probe_candidates(ivf.astype(np.int64), lay["ivf_off"], ranked, st, threshold, allowed)


@needs_kernel
def test_shortlists_are_the_same_with_and_without_the_kernels(tmp_path, monkeypatch):
    """Small ``ncandidates`` and ``nrerank``: every stage cuts, natively and on the numpy/torch paths."""
    docs = clustered_docs(200, seed=4)
    index = build(tmp_path / "ix", docs)
    queries = [docs[i][:6] for i in range(0, 200, 23)]
    options = {"ncandidates": 30, "nrerank": 12, "nprobe": 2}
    native, stages = index.search_timed(queries, k=5, **options)
    assert {"probe_scores", "interaction", "lookup"} <= set(stages)  # both shortlists cut
    monkeypatch.setattr(late_interaction, "library", lambda name="late_interaction": None)
    fallback, _ = index.search_timed(queries, k=5, **options)
    for a, b in zip(native, fallback, strict=True):
        assert [h.id for h in a] == [h.id for h in b]
        np.testing.assert_allclose([h.score for h in a], [h.score for h in b], rtol=1e-5)


@needs_kernel
@pytest.mark.parametrize("nprobe", [1, 4, 40])
def test_top_centroids_equal_numpy_ties_included(nprobe, monkeypatch):
    rng = np.random.default_rng(nprobe)
    st = rng.integers(-5, 5, size=(40, 13)).astype(np.float32)  # many exact ties: the lower id goes first
    native = plaid.probe_ranked(st, nprobe)
    assert native.shape == (min(nprobe, 40), 13)
    monkeypatch.setattr(late_interaction, "library", lambda name="late_interaction": None)
    assert native.tolist() == plaid.probe_ranked(st, nprobe).tolist()
