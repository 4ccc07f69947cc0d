"""PLAID-style residual codec: k-means centroids plus 2- or 4-bit per-dimension residual buckets.

A token vector ``x`` is stored as the id of its nearest centroid ``c`` and its
residual ``r = x - c`` quantised dimension by dimension: each dimension ``d`` has
``2**nbits - 1`` cutoffs (quantiles of the training residuals in that dimension)
splitting it into ``2**nbits`` buckets, and each bucket is decoded to the mean
training residual that fell into it (``weights[d, b]``). Codes are bit-packed,
``dim * nbits / 8`` bytes per token. Decoding goes through a per-byte lookup
table (one byte decodes ``8 / nbits`` dimensions at once).

Centroid count: ``2 ** round(log2(centroids_factor * sqrt(n_tokens)))`` clipped to
``[8, n_tokens / 8]`` (PLAID uses a factor of 16; 4 is the default here because
k-means on 2 CPU cores is the build's bottleneck and recall at factor 4 was as good
on SciFact, see ``benchmarks/search_index.py``).

>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=(2000, 16)).astype(np.float32)
>>> codec = ResidualCodec.train(x, nbits=4, n_centroids=16, seed=0)
>>> cids, codes = codec.encode(x)
>>> codes.shape, codes.dtype
((2000, 8), dtype('uint8'))
>>> err = np.linalg.norm(codec.decode(cids, codes) - x, axis=1).mean() / np.linalg.norm(x, axis=1).mean()
>>> bool(err < 0.3)
True
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from mm.errors import InvalidInputError

log = logging.getLogger(__name__)

#: k-means training uses at most this many points per centroid (a random sample)
MAX_POINTS_PER_CENTROID = 64
KMEANS_ITERATIONS = 12


def choose_n_centroids(n_tokens: int, factor: float = 4.0) -> int:
    """Number of centroids for ``n_tokens`` training vectors.

    >>> choose_n_centroids(1_000_000)
    4096
    >>> choose_n_centroids(100)
    12
    """
    if n_tokens <= 0:
        raise InvalidInputError("cannot train centroids on zero vectors")
    target = 2 ** round(math.log2(max(factor * math.sqrt(n_tokens), 1.0)))
    return int(max(8, min(target, max(8, n_tokens // 8))))


def kmeans(x: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Centroids of ``x`` by faiss k-means (inner-product assignment on normalised data works the same)."""
    import faiss

    k = min(k, len(x))
    km = faiss.Kmeans(x.shape[1], k, niter=KMEANS_ITERATIONS, seed=seed, verbose=False,
                      max_points_per_centroid=MAX_POINTS_PER_CENTROID, min_points_per_centroid=1, spherical=False)
    km.train(np.ascontiguousarray(x, dtype=np.float32))
    return np.asarray(km.centroids, dtype=np.float32)


def assign(x: np.ndarray, centroids: np.ndarray, batch: int = 65536) -> np.ndarray:
    """Nearest centroid (L2) of every row of ``x``."""
    import faiss

    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    out = np.empty(len(x), dtype=np.int64)
    for start in range(0, len(x), batch):
        _, ids = index.search(np.ascontiguousarray(x[start:start + batch], dtype=np.float32), 1)
        out[start:start + batch] = ids[:, 0]
    return out


@dataclass
class ResidualCodec:
    """Centroids + per-dimension residual buckets; see the module docstring."""

    centroids: np.ndarray  # (n_centroids, dim) float32
    cutoffs: np.ndarray  # (dim, 2**nbits - 1) float32
    weights: np.ndarray  # (dim, 2**nbits) float32
    nbits: int
    normalize: bool  # renormalise decoded vectors (training vectors were unit-norm)

    def __post_init__(self) -> None:
        if self.nbits not in (2, 4):
            raise InvalidInputError(f"nbits must be 2 or 4, got {self.nbits!r}")
        self.per_byte = 8 // self.nbits
        self.dim = int(self.centroids.shape[1])
        self.n_bytes = -(-self.dim // self.per_byte)
        self._lut: np.ndarray | None = None

    @property
    def n_centroids(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def cid_dtype(self) -> np.dtype:
        return np.dtype(np.uint16) if self.n_centroids <= 65536 else np.dtype(np.int32)

    # ------------------------------------------------------------------ training
    @classmethod
    def train(cls, x: np.ndarray, *, nbits: int, n_centroids: int | None = None, factor: float = 4.0,
              seed: int = 0) -> ResidualCodec:
        """Learn centroids and residual buckets from token vectors ``x`` (n x dim)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        n = len(x)
        k = n_centroids or choose_n_centroids(n, factor)
        k = min(k, n)
        centroids = kmeans(x, k, seed=seed)
        # residual statistics on (a sample of) the training vectors
        rng = np.random.default_rng(seed)
        sample = x if n <= 200_000 else x[np.sort(rng.choice(n, 200_000, replace=False))]
        residuals = sample - centroids[assign(sample, centroids)]
        n_buckets = 2 ** nbits
        qs = np.arange(1, n_buckets) / n_buckets
        cutoffs = np.quantile(residuals, qs, axis=0).T.astype(np.float32)  # (dim, n_buckets-1)
        weights = np.zeros((x.shape[1], n_buckets), dtype=np.float32)
        for d in range(x.shape[1]):
            buckets = np.searchsorted(cutoffs[d], residuals[:, d], side="right")
            sums = np.bincount(buckets, weights=residuals[:, d], minlength=n_buckets)
            counts = np.bincount(buckets, minlength=n_buckets)
            mids = np.quantile(residuals[:, d], (np.arange(n_buckets) + 0.5) / n_buckets)
            weights[d] = np.where(counts > 0, sums / np.maximum(counts, 1), mids)
        norms = np.linalg.norm(sample, axis=1)
        normalize = bool(np.all(np.abs(norms - 1.0) < 1e-3))
        log.info("trained codec: %d centroids, %d bits, on %d vectors (normalised=%s)", k, nbits, n, normalize)
        return cls(centroids, cutoffs, weights, nbits, normalize)

    # ------------------------------------------------------------------ encode / decode
    def encode(self, x: np.ndarray, batch: int = 65536) -> tuple[np.ndarray, np.ndarray]:
        """Centroid ids and packed residual codes of token vectors ``x`` (n x dim)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise InvalidInputError(f"expected vectors of shape (n, {self.dim}), got {x.shape}")
        cids = assign(x, self.centroids).astype(self.cid_dtype)
        codes = np.empty((len(x), self.n_bytes), dtype=np.uint8)
        for start in range(0, len(x), batch):
            part = x[start:start + batch] - self.centroids[cids[start:start + batch]]
            codes[start:start + batch] = self._pack(self._bucketize(part))
        return cids, codes

    def _bucketize(self, residuals: np.ndarray) -> np.ndarray:
        out = np.zeros(residuals.shape, dtype=np.uint8)
        for j in range(self.cutoffs.shape[1]):
            out += residuals >= self.cutoffs[:, j]
        return out

    def _pack(self, buckets: np.ndarray) -> np.ndarray:
        n = len(buckets)
        pad = self.n_bytes * self.per_byte - self.dim
        if pad:
            buckets = np.concatenate([buckets, np.zeros((n, pad), dtype=np.uint8)], axis=1)
        b = buckets.reshape(n, self.n_bytes, self.per_byte)
        packed = np.zeros((n, self.n_bytes), dtype=np.uint8)
        for i in range(self.per_byte):
            packed |= b[:, :, i] << (self.nbits * (self.per_byte - 1 - i))
        return packed

    @property
    def lut(self) -> np.ndarray:
        """(n_bytes * 256, per_byte) table: decoded residual values of every byte value at every byte position."""
        if self._lut is None:
            mask = (1 << self.nbits) - 1
            values = np.arange(256)
            w = np.zeros((self.n_bytes * self.per_byte, 2 ** self.nbits), dtype=np.float32)
            w[: self.dim] = self.weights
            lut = np.empty((self.n_bytes, 256, self.per_byte), dtype=np.float32)
            for i in range(self.per_byte):
                bucket = (values >> (self.nbits * (self.per_byte - 1 - i))) & mask
                dims = np.arange(self.n_bytes) * self.per_byte + i
                lut[:, :, i] = w[dims][:, bucket]
            self._lut = lut.reshape(self.n_bytes * 256, self.per_byte)
        return self._lut

    def decode(self, cids: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Reconstruct token vectors (n x dim float32) from centroid ids and codes."""
        n = len(cids)
        index = codes.astype(np.intp) + (np.arange(self.n_bytes, dtype=np.intp) * 256)
        residual = np.take(self.lut, index, axis=0).reshape(n, self.n_bytes * self.per_byte)
        out = residual[:, : self.dim]
        out += self.centroids[np.asarray(cids, dtype=np.intp)]
        if self.normalize:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    def residual_norms(self, x: np.ndarray, cids: np.ndarray) -> np.ndarray:
        """‖x - centroid‖ per token (the drift statistic)."""
        return np.linalg.norm(np.asarray(x, np.float32) - self.centroids[np.asarray(cids, np.intp)], axis=1)
