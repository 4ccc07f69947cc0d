"""PLAID stages of the multi-vector index: layout round trips, codec, pruning vs exhaustive, merges, open time."""

from __future__ import annotations

import time

import numpy as np
import pytest
from mm.index import create_index, layout, open_index, plaid
from mm.index.codec import ResidualCodec, split_bits

from tests.search.test_index_basic import DIM, clustered_docs


def brute_interaction(bags: list[set[int]], st: np.ndarray, keep: np.ndarray | None) -> np.ndarray:
    out = []
    for bag in bags:
        cents = [c for c in bag if keep is None or keep[c]]
        out.append(sum(max([st[c, i] for c in cents], default=0.0) for i in range(st.shape[1])))
    return np.array(out)


def test_centroid_interaction_matches_brute_force():
    rng = np.random.default_rng(0)
    n_docs, n_cent = 60, 40
    doclens = rng.integers(1, 30, n_docs)
    cids = rng.integers(0, n_cent, doclens.sum()).astype(np.uint16)
    lay = layout.bags_and_lists(doclens, cids, n_cent)
    off = layout.offsets(doclens)
    bags = [set(cids[off[d]:off[d + 1]].tolist()) for d in range(n_docs)]
    st = rng.normal(size=(n_cent, 7)).astype(np.float32)
    keep = st.max(axis=1) >= 0.8
    rows = np.sort(rng.choice(n_docs, 25, replace=False))
    for k in (None, keep):
        got = plaid.centroid_interaction(lay["bags"], lay["bag_off"], rows, st, k)
        np.testing.assert_allclose(got, brute_interaction([bags[r] for r in rows], st, k), rtol=1e-5)
        every = plaid.centroid_interaction(lay["bags"], lay["bag_off"], np.arange(n_docs), st, k)
        np.testing.assert_allclose(every, brute_interaction(bags, st, k), rtol=1e-5)
        mixed = np.array([0, 1, 2, 3, 9, 10, 30, 31, 32, 59])  # runs of consecutive documents and gaps
        got = plaid.centroid_interaction(lay["bags"], lay["bag_off"], mixed, st, k)
        np.testing.assert_allclose(got, brute_interaction([bags[r] for r in mixed], st, k), rtol=1e-5)
    # empty bags (first, middle, last) score 0 and leave their neighbours alone
    flat, off = np.array([1, 3, 2]), np.array([0, 0, 2, 2, 3, 3])
    want = brute_interaction([set(), {1, 3}, set(), {2}, set()], st, None)
    np.testing.assert_allclose(plaid.centroid_interaction(flat, off, np.arange(5), st), want, rtol=1e-5)
    np.testing.assert_allclose(plaid.centroid_interaction(flat, off, np.array([0, 2, 4]), st), [0, 0, 0])
    # inverted lists hold exactly the documents whose bag has the centroid
    allowed = np.ones(n_docs, dtype=bool)
    allowed[::5] = False
    probe = np.array([3, 17])
    want = [d for d in range(n_docs) if allowed[d] and bags[d] & {3, 17}]
    assert plaid.candidates(lay["ivf"], lay["ivf_off"], probe, allowed).tolist() == want


def test_probe_scores_match_brute_force():
    rng = np.random.default_rng(10)
    n_docs, n_cent, q = 80, 30, 6
    doclens = rng.integers(1, 25, n_docs)
    cids = rng.integers(0, n_cent, doclens.sum()).astype(np.uint16)
    lay = layout.bags_and_lists(doclens, cids, n_cent)
    off = layout.offsets(doclens)
    bags = [set(cids[off[d]:off[d + 1]].tolist()) for d in range(n_docs)]
    st = rng.normal(size=(n_cent, q)).astype(np.float32)
    for nprobe, threshold in ((1, -9.0), (3, 0.2), (n_cent, -9.0)):
        ranked = plaid.probe_ranked(st, nprobe)
        assert ranked.shape == (min(nprobe, n_cent), q)
        assert np.all(np.diff(st[ranked, np.arange(q)], axis=0) <= 0)  # best first
        allowed = np.ones(n_docs, dtype=bool)
        allowed[::4] = False
        rows = plaid.candidates(lay["ivf"], lay["ivf_off"], np.unique(ranked), allowed)
        got = plaid.probe_scores(lay["ivf"], lay["ivf_off"], st, ranked, rows, threshold)
        want = [sum(max([st[c, i] for c in ranked[:, i] if c in bags[d] and st[c, i] >= threshold], default=0.0)
                    for i in range(q)) for d in rows]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # every centroid probed, no threshold: the probe score is the full centroid interaction
    every = np.arange(n_docs)
    np.testing.assert_allclose(plaid.probe_scores(lay["ivf"], lay["ivf_off"], st, plaid.probe_ranked(st, n_cent), every,
                                                  -np.inf),
                               plaid.centroid_interaction(lay["bags"], lay["bag_off"], every, st), rtol=1e-5)


@pytest.mark.parametrize("magnitude", [1e-6, 1.0, 1e6])
def test_float16_lookup_keeps_digits_at_any_magnitude(magnitude):
    """Sums of float16 table rows stay within 1e-3 of float32's, for tiny and huge vectors alike."""
    rng = np.random.default_rng(1)
    n_bytes, q = 48, 7
    table = (rng.normal(size=(n_bytes * 256, q)) * magnitude).astype(np.float32)
    bias = rng.normal(size=q).astype(np.float32) * magnitude
    st = (rng.normal(size=(20, q)) * magnitude).astype(np.float32)
    cids = rng.integers(0, 20, 500)
    codes = rng.integers(0, 256, (500, n_bytes)).astype(np.uint8)
    want = plaid.token_scores(st, plaid.lookup_tables(table, bias, "float32"), cids, codes, None)
    got = plaid.token_scores(st, plaid.lookup_tables(table, bias, "float16"), cids, codes, None)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-3 * np.abs(want).max())
    assert not np.array_equal(got, want)  # float16 was used: the check above is not vacuous
    with pytest.raises(ValueError, match="dtype"):
        plaid.lookup_tables(table, bias, "int8")


def test_encoded_segment_holds_the_codec_output(tmp_path):
    docs = clustered_docs(120, seed=11)
    index = build(tmp_path / "ix", docs, batch=120, train_tokens=100)  # one add: trains and encodes in one segment
    seg = index._segments[0]
    x = np.concatenate(docs)
    cids, codes = index.codec.encode(x)  # the stored codec's centroids are float16: a few rounding flips
    stored_cids, stored_codes = np.asarray(seg.arrays["cids"]), np.asarray(seg.arrays["codes"])
    assert stored_cids.shape == cids.shape and stored_codes.shape == codes.shape
    assert np.mean(stored_cids == cids) > 0.99 and np.mean(np.all(stored_codes == codes, axis=1)) > 0.95
    norm_diff = np.abs(np.asarray(seg.arrays["norms"], np.int32) - index.codec.norm_codes(stored_cids, stored_codes))
    assert np.mean(norm_diff <= 1) > 0.99
    assert np.asarray(seg.arrays["doclens"]).tolist() == [len(d) for d in docs]
    lay = layout.bags_and_lists(np.array([len(d) for d in docs]), stored_cids, index.codec.n_centroids)
    for key in ("bags", "bag_off", "ivf", "ivf_off"):
        np.testing.assert_array_equal(np.asarray(seg.arrays[key]), lay[key], err_msg=key)


def test_merged_layout_equals_layout_of_concatenation():
    rng = np.random.default_rng(1)
    parts, whole_lens, whole_cids, whole_codes = [], [], [], []
    for n_docs in (7, 11):
        doclens = rng.integers(1, 9, n_docs).astype(np.int32)
        cids = rng.integers(0, 16, doclens.sum()).astype(np.uint16)
        codes = rng.integers(0, 256, (doclens.sum(), 3)).astype(np.uint8)
        arrays = {"doclens": doclens, "cids": cids, "codes": codes, "rnorm": rng.random(n_docs).astype(np.float32),
                  "post": np.zeros(n_docs, np.uint8), **layout.bags_and_lists(doclens, cids, 16)}
        rows = np.array([r for r in range(n_docs) if r % 3 != 1])  # drop some rows (deleted)
        parts.append((arrays, rows))
        off = layout.offsets(doclens)
        for r in rows:
            whole_lens.append(doclens[r])
            whole_cids.append(cids[off[r]:off[r + 1]])
            whole_codes.append(codes[off[r]:off[r + 1]])
    merged = layout.gather_rows(parts, 16)
    expect = layout.bags_and_lists(np.array(whole_lens), np.concatenate(whole_cids), 16)
    assert merged["doclens"].tolist() == [int(x) for x in whole_lens]
    np.testing.assert_array_equal(merged["codes"], np.concatenate(whole_codes))
    for key in ("bags", "bag_off", "ivf", "ivf_off"):
        np.testing.assert_array_equal(merged[key], expect[key], err_msg=key)


def test_split_bits_stays_within_budget_and_prefers_high_variance():
    rng = np.random.default_rng(2)
    var = np.sort(rng.random(64) * 3)[::-1]
    mse = var[:, None] * np.array([2.0 ** -8, 2.0 ** -4, 2.0 ** -2, 1.0])[None]
    for budget in (64, 96, 128, 200):
        bits = split_bits(mse, budget)
        assert bits.sum() <= budget and np.all(np.diff(bits.astype(int)) <= 0)
        assert {int(b) for b in bits} <= {0, 1, 2, 4}


def test_codec_rotation_keeps_inner_products_and_more_bits_cut_error():
    docs = clustered_docs(300, seed=3)
    x = np.concatenate(docs)
    errors = []
    for nbits in (1, 2, 4):
        codec = ResidualCodec.train(x, nbits=nbits, n_centroids=32, seed=0)
        assert codec.normalize and codec.n_bytes == DIM * nbits // 8 - 1  # one byte of the budget: the norm
        assert codec.nbits == nbits
        np.testing.assert_allclose(codec.rotation @ codec.rotation.T, np.eye(DIM), atol=1e-4)
        q = x[:5]
        np.testing.assert_allclose(codec.rotate(q) @ codec.rotate(x[5:50]).T, q @ x[5:50].T, atol=1e-4)
        cids, codes = codec.encode(x)
        restored = ResidualCodec.from_arrays(codec.arrays(), codec.normalize, codec.scheme)
        np.testing.assert_allclose(restored.decode(cids, codes), codec.decode(cids, codes), atol=2e-3)
        errors.append(float(np.linalg.norm(codec.decode(cids, codes) - codec.rotate(x), axis=1).mean()))
    assert errors[0] > errors[1] > errors[2]


def test_fractional_bits_split_dimensions():
    x = np.concatenate(clustered_docs(300, seed=4))
    codec = ResidualCodec.train(x, nbits=1.5, n_centroids=32, seed=0)
    assert codec.n_bytes == DIM * 3 // 16 - 1 and int(codec.bits.sum()) <= DIM * 1.5 - 8
    assert codec.bits[0] >= codec.bits[-1]


def build(path, docs, batch=40, **kw):
    index = create_index(path, kind="multivector", dim=DIM, encoder_info={}, nbits=2,
                         train_tokens=kw.pop("train_tokens", 2000), **kw)
    for s in range(0, len(docs), batch):
        index.add([f"d{i}" for i in range(s, min(s + batch, len(docs)))], docs[s:s + batch])
    return index


def test_unpruned_stages_equal_exhaustive_search_on_decoded_vectors(tmp_path):
    docs = clustered_docs(300, seed=5)
    index = build(tmp_path / "ix", docs)
    n = len(index)
    for i in range(0, 300, 37):
        q = docs[i][:5]
        full = index.search(q, k=10, nprobe=10**6, ncandidates=n, nrerank=n, threshold=-1e9)
        exact = index.search(q, k=10, exact=True)  # decoded vectors, every document
        assert [h.id for h in full] == [h.id for h in exact]
        np.testing.assert_allclose([h.score for h in full], [h.score for h in exact], rtol=1e-5)
        half = index.search(q, k=10, nprobe=10**6, ncandidates=n, nrerank=n, threshold=-1e9, lookup_dtype="float16")
        # float16 tables (plaid.lookup_tables): about 1e-5 of a score
        np.testing.assert_allclose([h.score for h in half], [h.score for h in exact], rtol=1e-4)
        # pruning and shortlists only drop documents: every score returned is the exact decoded score
        fast = index.search(q, k=10, ncandidates=40, nrerank=12)
        scores = {h.id: h.score for h in index.search(q, k=n, exact=True)}
        for h in fast:
            assert h.score == pytest.approx(scores[h.id], rel=1e-5)


def test_segments_are_merged_and_results_unchanged(tmp_path):
    docs = clustered_docs(400, seed=6)
    many = build(tmp_path / "many", docs, batch=10, train_tokens=800)
    info = many.info()
    assert info["trained"] and info["segments"] < 8  # 37 adds after training, merged in tiers of 4
    one = build(tmp_path / "one", docs, batch=400, train_tokens=800)
    one.compact()
    for i in range(0, 400, 50):
        q = docs[i][:6]
        a = many.search(q, k=10, exact=True)
        assert [h.id for h in a][:1] == [f"d{i}"]
    many.delete([f"d{i}" for i in range(0, 400, 2)])
    many.compact()
    assert many.info()["segments"] == 1 and len(many) == 200
    assert all(int(h.id[1:]) % 2 == 1 for h in many.search(docs[4][:6], k=20))


def test_open_is_memory_mapped_and_fast(tmp_path):
    index = build(tmp_path / "ix", clustered_docs(300, seed=7))
    del index
    t = time.perf_counter()
    index = open_index(tmp_path / "ix")
    assert time.perf_counter() - t < 1.0
    seg = index._segments[0]
    assert seg.entry["compressed"]
    for key in ("codes", "cids", "norms", "bags", "ivf"):
        assert isinstance(seg.arrays[key], np.memmap), key
    # one norm byte per token, inside the nbits budget (2 bits x 32 dims = 8 bytes: 7 code bytes + the norm)
    assert seg.arrays["norms"].dtype == np.uint8 and seg.arrays["norms"].shape == (seg.entry["n_tokens"],)
    assert seg.arrays["codes"].shape[1] + 1 == DIM * 2 // 8
    assert seg.arrays["ivf"].dtype == np.uint16  # rows of a segment of < 65,536 documents


def test_bad_search_options(tmp_path):
    from mm.errors import InvalidInputError

    index = build(tmp_path / "ix", clustered_docs(100, seed=8))
    for bad in ({"nrerank": 0}, {"ncandidates": -1}, {"nprobe": 1.5}, {"threshold": float("nan")},
                {"lookup_dtype": "bfloat16"}, {"lookup_dtype": None}):
        with pytest.raises(InvalidInputError):
            index.search(np.ones((2, DIM), np.float32), k=3, **bad)
