"""Residual codec of the multi-vector index: k-means centroids plus 2- or 4-bit residual codes.

A token vector ``x`` is stored as the id of its nearest centroid ``c`` and a code
of its residual ``r = x - c`` taking ``dim * nbits / 8`` bytes. Two code schemes:

* ``"scalar"`` (PLAID's, the default): each dimension ``d`` has ``2**nbits - 1`` cutoffs (quantiles of
  the training residuals in that dimension) splitting it into ``2**nbits`` buckets, each
  decoded to the mean training residual in it; codes are bit-packed.
* ``"pq"``: faiss product quantisation of the residual with one byte per group of
  ``8 / nbits`` dimensions (256 learned codewords per group). The same bytes per token and
  lower error (it is a superset of the scalar grid): on SciFact MiniLM token vectors at 2 bits,
  recall@10 of exhaustive search on decoded vectors was 0.956 vs. 0.934 for scalar; but
  training the codebooks with faiss is slow on 2 cores (minutes), hence not the default.

Both decode through one lookup table: byte ``j`` of a code with value ``b`` decodes the
``8 / nbits`` dimensions of group ``j`` to ``lut[j * 256 + b]``. When the training
vectors are unit-norm (ColBERT), decoded vectors are renormalised; the norm of each
decoded vector is stored with the codes (``norms``) so search can score
``(q·c + q·r) / |c + r|`` without materialising ``c``.

Centroid count: ``2 ** round(log2(centroids_factor * sqrt(n_tokens)))`` clipped to
``[8, n_tokens / 8]`` (PLAID uses a factor of 16; 4 is the default here: k-means on
2 CPU cores is the build's bottleneck, see ``benchmarks/search_index.py``).

>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=(2000, 16)).astype(np.float32)
>>> codec = ResidualCodec.train(x, nbits=4, n_centroids=16, seed=0)
>>> cids, codes, norms = codec.encode(x)
>>> codes.shape, codes.dtype
((2000, 8), dtype('uint8'))
>>> err = np.linalg.norm(codec.decode(cids, codes) - x, axis=1).mean() / np.linalg.norm(x, axis=1).mean()
>>> bool(err < 0.3)
True
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from mm.errors import InvalidInputError

log = logging.getLogger(__name__)

#: k-means training uses at most this many points per centroid (a random sample)
MAX_POINTS_PER_CENTROID = 32
KMEANS_ITERATIONS = 10
#: residual statistics are learned on at most this many residuals, PQ codebooks on fewer (32 per codeword)
RESIDUAL_SAMPLE = 65_536
PQ_SAMPLE = 8_192
SCHEMES = ("pq", "scalar")


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
    """Centroids of ``x`` by faiss k-means."""
    import faiss

    k = min(k, len(x))
    km = faiss.Kmeans(x.shape[1], k, niter=KMEANS_ITERATIONS, seed=seed, verbose=False,
                      max_points_per_centroid=MAX_POINTS_PER_CENTROID, min_points_per_centroid=1)
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
    """Centroids + residual code tables; see the module docstring.

    ``tables``: scalar scheme: ``cutoffs`` (dim, 2**nbits - 1) and ``weights`` (dim, 2**nbits);
    pq scheme: ``codebook`` (n_bytes, 256, 8 / nbits).
    """

    centroids: np.ndarray
    tables: dict[str, np.ndarray]
    nbits: int
    normalize: bool
    scheme: str = "scalar"
    _lut: np.ndarray | None = field(default=None, repr=False)
    _pq: object = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.nbits not in (2, 4):
            raise InvalidInputError(f"nbits must be 2 or 4, got {self.nbits!r}")
        if self.scheme not in SCHEMES:
            raise InvalidInputError(f"codec scheme must be one of {SCHEMES}, got {self.scheme!r}")
        self.per_byte = 8 // self.nbits
        self.dim = int(self.centroids.shape[1])
        self.n_bytes = -(-self.dim // self.per_byte)
        if self.scheme == "pq" and self.dim % self.per_byte:
            raise InvalidInputError(f"pq codes need dim divisible by {self.per_byte}; use scheme='scalar'")

    @property
    def n_centroids(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def cid_dtype(self) -> np.dtype:
        return np.dtype(np.uint16) if self.n_centroids <= 65536 else np.dtype(np.int32)

    # ------------------------------------------------------------------ training
    @classmethod
    def train(cls, x: np.ndarray, *, nbits: int, n_centroids: int | None = None, factor: float = 4.0,
              seed: int = 0, scheme: str = "scalar") -> ResidualCodec:
        """Learn centroids and residual code tables from token vectors ``x`` (n x dim)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        n, dim = x.shape
        if scheme == "pq" and dim % (8 // nbits):
            scheme = "scalar"
        k = min(n_centroids or choose_n_centroids(n, factor), n)
        centroids = kmeans(x, k, seed=seed)
        rng = np.random.default_rng(seed)
        sample = x if n <= RESIDUAL_SAMPLE else x[np.sort(rng.choice(n, RESIDUAL_SAMPLE, replace=False))]
        residuals = np.ascontiguousarray(sample - centroids[assign(sample, centroids)])
        if scheme == "pq":
            tables = {"codebook": cls._train_pq(residuals, nbits, seed)}
        else:
            tables = cls._train_scalar(residuals, nbits)
        norms = np.linalg.norm(sample, axis=1)
        normalize = bool(np.all(np.abs(norms - 1.0) < 1e-3))
        log.info("trained %s codec: %d centroids, %d bits, on %d vectors (normalised=%s)", scheme, k, nbits, n,
                 normalize)
        return cls(centroids, tables, nbits, normalize, scheme)

    @staticmethod
    def _train_scalar(residuals: np.ndarray, nbits: int) -> dict[str, np.ndarray]:
        n_buckets = 2 ** nbits
        cutoffs = np.quantile(residuals, np.arange(1, n_buckets) / n_buckets, axis=0).T.astype(np.float32)
        weights = np.zeros((residuals.shape[1], n_buckets), dtype=np.float32)
        for d in range(residuals.shape[1]):
            buckets = np.searchsorted(cutoffs[d], residuals[:, d], side="right")
            sums = np.bincount(buckets, weights=residuals[:, d], minlength=n_buckets)
            counts = np.bincount(buckets, minlength=n_buckets)
            mids = np.quantile(residuals[:, d], (np.arange(n_buckets) + 0.5) / n_buckets)
            weights[d] = np.where(counts > 0, sums / np.maximum(counts, 1), mids)
        return {"cutoffs": cutoffs, "weights": weights}

    @staticmethod
    def _train_pq(residuals: np.ndarray, nbits: int, seed: int) -> np.ndarray:
        import faiss

        dim = residuals.shape[1]
        m = dim * nbits // 8
        pq = faiss.ProductQuantizer(dim, m, 8)
        pq.cp.niter = 10
        pq.cp.seed = seed
        pq.cp.min_points_per_centroid = 1
        if len(residuals) > PQ_SAMPLE:
            residuals = residuals[np.random.default_rng(seed).choice(len(residuals), PQ_SAMPLE, replace=False)]
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)  # many tiny k-means: threads only add synchronisation overhead
        try:
            pq.train(np.ascontiguousarray(residuals))
        finally:
            faiss.omp_set_num_threads(threads)
        return faiss.vector_to_array(pq.centroids).reshape(m, 256, dim // m).astype(np.float32)

    # ------------------------------------------------------------------ encode / decode
    def _faiss_pq(self):
        if self._pq is None:
            import faiss

            pq = faiss.ProductQuantizer(self.dim, self.n_bytes, 8)
            faiss.copy_array_to_vector(np.ascontiguousarray(self.tables["codebook"]).ravel(), pq.centroids)
            self._pq = pq
        return self._pq

    def encode(self, x: np.ndarray, batch: int = 65536) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Centroid ids, residual codes and decoded-vector norms of token vectors ``x`` (n x dim)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise InvalidInputError(f"expected vectors of shape (n, {self.dim}), got {x.shape}")
        cids = assign(x, self.centroids).astype(self.cid_dtype)
        codes = np.empty((len(x), self.n_bytes), dtype=np.uint8)
        norms = np.empty(len(x), dtype=np.float32)
        for start in range(0, len(x), batch):
            part_c = cids[start:start + batch]
            residual = np.ascontiguousarray(x[start:start + batch] - self.centroids[part_c])
            if self.scheme == "pq":
                codes[start:start + batch] = self._faiss_pq().compute_codes(residual)
            else:
                codes[start:start + batch] = self._pack(self._bucketize(residual))
            decoded = self.decode_residuals(codes[start:start + batch]) + self.centroids[part_c]
            norms[start:start + batch] = np.linalg.norm(decoded, axis=1)
        return cids, codes, norms

    def _bucketize(self, residuals: np.ndarray) -> np.ndarray:
        cutoffs = self.tables["cutoffs"]
        out = np.zeros(residuals.shape, dtype=np.uint8)
        for j in range(cutoffs.shape[1]):
            out += residuals >= cutoffs[:, j]
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
            if self.scheme == "pq":
                lut = self.tables["codebook"]
            else:
                mask = (1 << self.nbits) - 1
                values = np.arange(256)
                w = np.zeros((self.n_bytes * self.per_byte, 2 ** self.nbits), dtype=np.float32)
                w[: self.dim] = self.tables["weights"]
                lut = np.empty((self.n_bytes, 256, self.per_byte), dtype=np.float32)
                for i in range(self.per_byte):
                    bucket = (values >> (self.nbits * (self.per_byte - 1 - i))) & mask
                    dims = np.arange(self.n_bytes) * self.per_byte + i
                    lut[:, :, i] = w[dims][:, bucket]
            self._lut = np.ascontiguousarray(lut, dtype=np.float32).reshape(self.n_bytes * 256, self.per_byte)
        return self._lut

    def decode_residuals(self, codes: np.ndarray) -> np.ndarray:
        """Decoded residuals (n x dim float32) of ``codes``."""
        codes = np.asarray(codes)
        n = len(codes)
        index = codes.astype(np.int32)
        index += np.arange(0, self.n_bytes * 256, 256, dtype=np.int32)
        out = np.take(self.lut, index, axis=0).reshape(n, self.n_bytes * self.per_byte)
        return out if out.shape[1] == self.dim else out[:, : self.dim]

    def decode(self, cids: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Reconstruct token vectors (n x dim float32) from centroid ids and codes (renormalised if unit-norm)."""
        out = self.decode_residuals(codes)
        out += self.centroids[np.asarray(cids, dtype=np.intp)]
        if self.normalize:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    def residual_norms(self, x: np.ndarray, cids: np.ndarray) -> np.ndarray:
        """‖x - centroid‖ per token (the drift statistic)."""
        return np.linalg.norm(np.asarray(x, np.float32) - self.centroids[np.asarray(cids, np.intp)], axis=1)
