"""Product-quantised residual codes (``codec="pq"``): budget, round trip, lookup tables, search, layout refusal."""

from __future__ import annotations

import json

import numpy as np
import pytest
from mm.index import open_index
from mm.index.codec import ResidualCodec, allocate_groups, eigen_allocation

from mm.errors import IndexFormatError
from tests.search.test_index_basic import DIM, clustered_docs
from tests.search.test_plaid_stages import build


@pytest.fixture(scope="module")
def tokens() -> np.ndarray:
    return np.concatenate(clustered_docs(200, seed=7))


@pytest.mark.parametrize("nbits", [1.5, 1.75, 2])
def test_pq_budget_groups_and_round_trip(tokens, nbits):
    codec = ResidualCodec.train(tokens, nbits=nbits, n_centroids=32, scheme="pq", seed=0)
    sizes = np.asarray(codec.tables["group_sizes"])
    # every code byte addresses one group; the norm byte of unit-norm vectors is part of the budget
    assert codec.normalize and codec.n_bytes == int(DIM * nbits) // 8 - 1 == len(sizes)
    assert sizes.sum() == DIM and sizes.max() - sizes.min() <= 1
    np.testing.assert_allclose(codec.rotation @ codec.rotation.T, np.eye(DIM), atol=1e-4)
    cids, codes = codec.encode(tokens)
    assert codes.shape == (len(tokens), codec.n_bytes) and codes.dtype == np.uint8
    restored = ResidualCodec.from_arrays(codec.arrays(), codec.normalize, codec.scheme)
    assert np.mean(restored.encode(tokens)[1] == codes) > 0.99  # centroids are stored as float16: a few near-ties move
    np.testing.assert_allclose(restored.decode(cids, codes), codec.decode(cids, codes), atol=2e-3)


def test_pq_lookup_tables_equal_decoded_inner_products(tokens):
    codec = ResidualCodec.train(tokens, nbits=1.75, n_centroids=32, scheme="pq", seed=0)
    _, codes = codec.encode(tokens[:300])
    q = codec.rotate(tokens[-7:])
    table, bias = codec.query_tables(q)
    looked_up = table[codes.astype(np.intp) + 256 * np.arange(codec.n_bytes)].sum(axis=1) + bias
    np.testing.assert_allclose(looked_up, codec.decode_residuals(codes) @ q.T, atol=1e-4)


def test_pq_codes_beat_scalar_codes_at_equal_bytes(tokens):
    """Vector quantisation of groups of rotated axes has a lower error than per-axis buckets of the same bytes."""
    errors = {}
    for scheme in ("scalar", "pq"):
        codec = ResidualCodec.train(tokens, nbits=2, n_centroids=32, scheme=scheme, seed=0)
        cids, codes = codec.encode(tokens)
        errors[scheme] = float(np.mean(np.sum((codec.decode(cids, codes) - codec.rotate(tokens)) ** 2, axis=1)))
    assert errors["pq"] < 0.9 * errors["scalar"], errors


def test_groups_balance_variance():
    """Eigenvalue allocation: every group gets a similar product of variances, not the top axes together."""
    variances = np.geomspace(1.0, 1e-4, DIM)
    sizes = allocate_groups(variances, DIM // 4)
    members = eigen_allocation(variances, sizes)
    assert sorted(a for m in members for a in m) == list(range(DIM)) and [len(m) for m in members] == sizes.tolist()
    logs = np.array([np.log(variances[m]).sum() for m in members])
    consecutive = np.log(variances).reshape(-1, 4).sum(axis=1)  # plain PCA order: top axes together
    assert logs.max() - logs.min() < 0.3 * (consecutive.max() - consecutive.min())
    uneven = allocate_groups(variances, 10)
    assert uneven.sum() == DIM and uneven.max() - uneven.min() == 1


def test_pq_index_scores_equal_decoded_maxsim(tmp_path):
    docs = clustered_docs(200, seed=5)
    index = build(tmp_path / "ix", docs, codec="pq")
    assert index.codec.scheme == "pq"
    n = len(index)
    index = open_index(tmp_path / "ix")
    for i in range(0, 200, 41):
        q = docs[i][:5]
        full = index.search(q, k=10, nprobe=10**6, ncandidates=n, nrerank=n, threshold=-1e9)
        exact = index.search(q, k=10, exact=True)  # decoded vectors, every document
        assert [h.id for h in full] == [h.id for h in exact]
        np.testing.assert_allclose([h.score for h in full], [h.score for h in exact], rtol=1e-5)
        assert full[0].id == f"d{i}"


def test_older_layout_is_refused_with_a_rebuild_message(tmp_path):
    build(tmp_path / "ix", clustered_docs(80, seed=6), train_tokens=1000)
    path = tmp_path / "ix" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["codec"]["layout"] = 3
    path.write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match=r"layout 3, this mm reads 4\); rebuild it"):
        open_index(tmp_path / "ix")
