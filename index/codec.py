"""Residual codec of the multi-vector index: k-means centroids plus residual codes of ~1-4 bits per dimension.

A token vector ``x`` is stored as the id of its nearest centroid ``c`` and a code of
its residual ``r = x - c`` (ColBERTv2's residual compression). Before quantising,
everything lives in a *rotated* space: ``rotation`` holds the principal axes of the
training residuals, sorted by variance, so rotated residual dimensions are
uncorrelated and their variances fall off. Rotations keep inner products, so a query
is rotated once (``rotate``) and scored against rotated centroids and residuals.

Two code schemes:

* ``"scalar"`` (default): each rotated dimension gets 4, 2, 1 or 0 bits; the split is
  chosen on the training residuals to minimise the measured squared error within a
  budget of ``nbits * dim`` bits (transform coding: high-variance axes get more
  bits). A dimension with ``b`` bits has ``2**b - 1`` cutoffs (quantiles) and decodes
  to the mean training residual of its bucket. With a uniform split (every dimension
  2 bits) this is PLAID's 2-bit code; fractional ``nbits`` (e.g. 1.75) are allowed.
* ``"pq"``: product quantisation of the rotated residual (ColBERTv2/PLAID residuals + PQ):
  the ``nbits * dim / 8`` code bytes (less the norm byte) each address a group of 3-6
  rotated dimensions through a 256-entry codebook learned by k-means on the training
  residuals. The groups are made of principal axes balanced by *eigenvalue allocation*
  (Ge et al., OPQ): axes in decreasing variance go to the group whose product of
  variances is smallest, so every group holds about the same share of the residual.
  Any byte budget works (groups of sizes ``s`` and ``s + 1``); fractional ``nbits`` too.

Codes decode through lookup tables, one per group of dimensions sharing a bit width:
byte ``j`` with value ``v`` decodes to ``lut[j, v]`` (the ``8 / bits`` dimensions it
packs). Search never decodes: :meth:`ResidualCodec.query_tables` folds the query into
those tables, so a token's score is a sum of one table row per code byte plus its
centroid's score (asymmetric distance computation, as in product quantisation).

When the training vectors are unit-norm (ColBERT), decoded vectors are renormalised.
So that scores from the tables need no decoding, one more byte per token (``norms``,
counted in ``nbits``: the residual code gets the other ``nbits * dim / 8 - 1`` bytes)
stores the decoded vector's norm on a log scale fitted to the training sample
(:meth:`ResidualCodec.norm_codes`, :meth:`ResidualCodec.inverse_norms`).

Centroid count: ``2 ** round(log2(factor * sqrt(n_tokens)))`` clipped to
``[8, n_tokens / 8]`` and to :data:`MAX_CENTROIDS`; k-means runs on a sample of at
most :data:`MAX_POINTS_PER_CENTROID` points per centroid.

>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=(4000, 16)).astype(np.float32)
>>> codec = ResidualCodec.train(x, nbits=2, n_centroids=16, seed=0)
>>> cids, codes = codec.encode(x)
>>> codes.shape, codes.dtype
((4000, 4), dtype('uint8'))
>>> err = np.linalg.norm(codec.decode(cids, codes) - codec.rotate(x), axis=1).mean()
>>> bool(err / np.linalg.norm(x, axis=1).mean() < 0.5)
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
#: at most this many centroids (ids fit in uint16)
MAX_CENTROIDS = 65_536
#: residual statistics (rotation, bit split, buckets) are learned on at most this many residuals
RESIDUAL_SAMPLE = 32_768
#: k-means iterations of each 256-entry group codebook of the "pq" scheme
PQ_ITERATIONS = 20
SCHEMES = ("pq", "scalar")
#: bit widths a scalar-coded dimension may get (each divides 8, so a byte packs whole dimensions)
LEVELS = (4, 2, 1, 0)


def choose_n_centroids(n_tokens: int, factor: float = 4.0) -> int:
    """Number of centroids for a corpus of ``n_tokens`` token vectors.

    >>> choose_n_centroids(1_000_000)
    4096
    >>> choose_n_centroids(100)
    12
    """
    if n_tokens <= 0:
        raise InvalidInputError("cannot train centroids on zero vectors")
    target = 2 ** round(math.log2(max(factor * math.sqrt(n_tokens), 1.0)))
    return int(max(8, min(target, max(8, n_tokens // 8), MAX_CENTROIDS)))


def norm_range(norms: np.ndarray) -> np.ndarray:
    """``[lo, hi]`` of the log-norm scale of :meth:`ResidualCodec.norm_codes`: the sample's range, widened by 10%.

    >>> [round(float(v), 3) for v in norm_range(np.array([0.8, 1.0]))]
    [-0.245, 0.022]
    """
    logn = np.log(np.maximum(np.asarray(norms, dtype=np.float64), 1e-6))
    lo, hi = float(logn.min()), float(logn.max())
    pad = 0.1 * max(hi - lo, 1e-3)
    return np.array([lo - pad, hi + pad], dtype=np.float32)


def kmeans(x: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Centroids of ``x`` by faiss k-means."""
    import faiss

    k = min(k, len(x))
    km = faiss.Kmeans(x.shape[1], k, niter=KMEANS_ITERATIONS, seed=seed, verbose=False,
                      max_points_per_centroid=MAX_POINTS_PER_CENTROID, min_points_per_centroid=1)
    km.train(np.ascontiguousarray(x, dtype=np.float32))
    return np.asarray(km.centroids, dtype=np.float32)


def pq_kmeans(x: np.ndarray, seed: int) -> np.ndarray:
    """256 codewords of the (n x s) group ``x`` by k-means (fewer distinct points: repeated)."""
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    if len(x) < 256:
        return x[np.arange(256) % len(x)]
    km = faiss.Kmeans(x.shape[1], 256, niter=PQ_ITERATIONS, seed=seed, verbose=False,
                      max_points_per_centroid=len(x), min_points_per_centroid=1)
    km.train(x)
    return np.asarray(km.centroids, dtype=np.float32)


def allocate_groups(variances: np.ndarray, n_bytes: int) -> np.ndarray:
    """Group sizes (``n_bytes`` of them, summing to ``len(variances)``): as equal as possible, the larger first.

    >>> allocate_groups(np.ones(10), 4).tolist()
    [3, 3, 2, 2]
    """
    dim = len(variances)
    if not 1 <= n_bytes <= dim:
        raise InvalidInputError(f"pq codes need 1 to {dim} bytes per token, got {n_bytes}")
    small, extra = divmod(dim, n_bytes)
    return np.array([small + 1] * extra + [small] * (n_bytes - extra), dtype=np.int64)


def eigen_allocation(variances: np.ndarray, sizes: np.ndarray) -> list[list[int]]:
    """Axes (positions in ``variances``, sorted decreasing) per group: each, in turn, goes to the open group
    whose product of variances (relative to their geometric mean) is smallest (OPQ's eigenvalue allocation).

    >>> eigen_allocation(np.array([8.0, 4.0, 2.0, 1.0]), np.array([2, 2]))
    [[0, 3], [1, 2]]
    """
    members: list[list[int]] = [[] for _ in sizes]
    logs = np.zeros(len(sizes))
    lv = np.log(np.maximum(np.asarray(variances, dtype=np.float64), 1e-12))
    lv -= lv.mean()
    for axis in range(len(lv)):
        open_ = np.flatnonzero([len(m) < s for m, s in zip(members, sizes, strict=True)])
        g = int(open_[np.argmin(logs[open_])])
        members[g].append(axis)
        logs[g] += lv[axis]
    return members


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


def quantiser(sorted_values: np.ndarray, bits: int, csum: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-column cutoffs ``(dims, 2**bits - 1)`` (quantiles) and bucket means ``(dims, 2**bits)``.

    ``sorted_values``: training values sorted along axis 0 (one column per dimension);
    ``csum``: their cumulative sums with a leading zero row (computed when not given).

    >>> cut, w = quantiser(np.array([[0.0], [1.0], [2.0], [3.0]], np.float32), 1)
    >>> cut.tolist(), w.tolist()
    ([[2.0]], [[0.5, 2.5]])
    """
    n = len(sorted_values)
    n_buckets = 2 ** bits
    pos = np.round(np.arange(n_buckets + 1) * n / n_buckets).astype(np.int64)
    cutoffs = np.ascontiguousarray(sorted_values[np.minimum(pos[1:-1], n - 1)].T, dtype=np.float32)
    if csum is None:
        csum = np.zeros((n + 1, sorted_values.shape[1]), dtype=np.float64)
        np.cumsum(sorted_values, axis=0, out=csum[1:])
    counts = np.maximum(np.diff(pos), 1)[:, None]
    weights = ((csum[pos[1:]] - csum[pos[:-1]]) / counts).T.astype(np.float32)
    return cutoffs, weights


def bucketize(values: np.ndarray, cutoffs: np.ndarray) -> np.ndarray:
    """Bucket of every value (uint8): how many of its column's cutoffs it reaches."""
    out = np.zeros(values.shape, dtype=np.uint8)
    for j in range(cutoffs.shape[1]):
        out += values >= cutoffs[:, j]
    return out


def split_bits(mse: np.ndarray, budget: int) -> np.ndarray:
    """Bits per dimension (4/2/1/0, non-increasing) minimising total error within ``budget`` bits.

    ``mse[d, i]``: measured error of dimension ``d`` coded with ``LEVELS[i]`` bits; dimensions
    are in decreasing-variance order. Whole bytes: the counts of 4-, 2- and 1-bit dimensions
    are multiples of 2, 4 and 8.

    >>> mse = np.array([[0.1, 0.3, 0.6, 1.0]] * 8)
    >>> split_bits(mse, 16).tolist()
    [2, 2, 2, 2, 2, 2, 2, 2]
    """
    dim = len(mse)
    cum = np.vstack([np.zeros((1, len(LEVELS))), np.cumsum(mse, axis=0)])  # cum[n, i] = sum of first n dims at level i
    best, choice = np.inf, (0, 0, 0)
    for n4 in range(0, dim + 1, 2):
        for n2 in range(0, dim - n4 + 1, 4):
            left = budget - 4 * n4 - 2 * n2
            if left < 0:
                break
            n1 = min((dim - n4 - n2) // 8 * 8, left // 8 * 8)
            a, b, c = n4, n4 + n2, n4 + n2 + n1
            err = cum[a, 0] + (cum[b, 1] - cum[a, 1]) + (cum[c, 2] - cum[b, 2]) + (cum[dim, 3] - cum[c, 3])
            if err < best - 1e-12:
                best, choice = err, (n4, n2, n1)
    n4, n2, n1 = choice
    return np.array([4] * n4 + [2] * n2 + [1] * n1 + [0] * (dim - n4 - n2 - n1), dtype=np.uint8)


@dataclass
class ResidualCodec:
    """Rotation, centroids (rotated) and residual code tables; see the module docstring.

    ``tables``: ``rotation`` (dim, dim); scalar: ``bits`` (dim,), ``cutoffs`` (dim, 15) and
    ``weights`` (dim, 16), padded; pq: ``codebook`` (n_bytes, 256, largest group, zero-padded)
    and ``group_sizes`` (n_bytes,): byte ``j`` codes the next ``group_sizes[j]`` rotated dimensions.
    """

    centroids: np.ndarray
    tables: dict[str, np.ndarray]
    normalize: bool
    scheme: str = "scalar"
    _groups: list = field(default_factory=list, repr=False)
    _flat: list = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise InvalidInputError(f"codec scheme must be one of {SCHEMES}, got {self.scheme!r}")
        # stored as float16 (arrays()): encode against exactly what a reopened index decodes with
        self.centroids = np.ascontiguousarray(np.asarray(self.centroids, np.float16), dtype=np.float32)
        self.rotation = np.ascontiguousarray(self.tables["rotation"], dtype=np.float32)
        self.dim = int(self.centroids.shape[1])
        if self.scheme == "pq":
            self._groups = self._pq_groups()
            self.n_bytes = len(self.tables["group_sizes"])
        else:
            self._groups = self._scalar_groups()
            self.n_bytes = sum(lut.shape[0] for *_, lut in self._groups)

    # ------------------------------------------------------------------ properties
    @property
    def n_centroids(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def cid_dtype(self) -> np.dtype:
        return np.dtype(np.uint16) if self.n_centroids <= 65536 else np.dtype(np.int32)

    @property
    def bits(self) -> np.ndarray:
        """Bits of each rotated dimension."""
        if self.scheme == "pq":
            sizes = np.asarray(self.tables["group_sizes"], dtype=np.int64)
            return np.repeat((8 / sizes).astype(np.float32), sizes)
        return np.asarray(self.tables["bits"], dtype=np.uint8)

    @property
    def nbits(self) -> float:
        """Average bits per dimension: residual code bytes plus the norm byte of unit-norm codecs."""
        return 8 * (self.n_bytes + int(self.normalize)) / self.dim

    def arrays(self) -> dict[str, np.ndarray]:
        """Everything to store (centroids as float16: they only seed the decoded vectors and centroid scores)."""
        return {"centroids": self.centroids.astype(np.float16), **self.tables}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], normalize: bool, scheme: str) -> ResidualCodec:
        arrays = dict(arrays)
        centroids = np.asarray(arrays.pop("centroids"), dtype=np.float32)
        return cls(centroids, arrays, normalize, scheme)

    def _pq_groups(self) -> list[tuple[int, int, int, np.ndarray]]:
        """(first dim, end dim, group size, codebook (n_bytes, 256, size)) per run of equal group size."""
        sizes = np.asarray(self.tables["group_sizes"], dtype=np.int64)
        book = np.asarray(self.tables["codebook"], dtype=np.float32)
        if sizes.sum() != self.dim or book.shape[:2] != (len(sizes), 256):
            raise InvalidInputError(f"pq tables do not fit: group sizes sum to {sizes.sum()} (dim {self.dim}), "
                                    f"codebook {book.shape}")
        groups, j, a = [], 0, 0
        while j < len(sizes):
            s = int(sizes[j])
            n = int(np.argmax(sizes[j:] != s)) if np.any(sizes[j:] != s) else len(sizes) - j
            groups.append((a, a + n * s, s, np.ascontiguousarray(book[j:j + n, :, :s])))
            j, a = j + n, a + n * s
        return groups

    def _scalar_groups(self) -> list[tuple[int, int, int, np.ndarray]]:
        """(first dim, end dim, bits, lut (n_bytes, 256, dims per byte)) per run of equal bit width."""
        bits = self.bits
        weights = self.tables["weights"]
        values = np.arange(256)
        groups = []
        a = 0
        while a < self.dim:
            w = int(bits[a])
            b = a + int(np.argmax(bits[a:] != w)) if np.any(bits[a:] != w) else self.dim
            if w > 0:
                per = 8 // w
                n = (b - a) // per
                lut = np.empty((n, 256, per), dtype=np.float32)
                for i in range(per):
                    bucket = (values >> (w * (per - 1 - i))) & ((1 << w) - 1)
                    lut[:, :, i] = weights[a + np.arange(n) * per + i][:, bucket]
                groups.append((a, b, w, lut))
            a = b
        return groups

    # ------------------------------------------------------------------ training
    @classmethod
    def train(cls, x: np.ndarray, *, nbits: float, n_centroids: int | None = None, factor: float = 4.0,
              seed: int = 0, scheme: str = "scalar", n_tokens: int | None = None,
              centroids: np.ndarray | None = None, renormalize: bool | None = None) -> ResidualCodec:
        """Learn centroids and code tables from a sample ``x`` (n x dim) of a corpus of ``n_tokens`` vectors.

        ``centroids``: use these (unrotated) instead of k-means; ``renormalize``: renormalise decoded
        vectors with a norm byte per token (default: when the sample is unit-norm).
        """
        x = np.ascontiguousarray(x, dtype=np.float32)
        n, dim = x.shape
        if centroids is None:
            centroids = kmeans(x, min(n_centroids or choose_n_centroids(n_tokens or n, factor), n), seed=seed)
        k = len(centroids)
        rng = np.random.default_rng(seed)
        sample = x if n <= RESIDUAL_SAMPLE else x[np.sort(rng.choice(n, RESIDUAL_SAMPLE, replace=False))]
        residuals = np.ascontiguousarray(sample - centroids[assign(sample, centroids)])
        normalize = bool(np.all(np.abs(np.linalg.norm(sample, axis=1) - 1.0) < 1e-3))
        normalize = normalize if renormalize is None else bool(renormalize)
        # unit-norm vectors keep one byte of the budget for their decoded norm
        budget = int(round(nbits * dim, 6)) // 8 * 8
        if scheme == "pq":
            tables = cls._train_pq(residuals, min(max(budget // 8 - normalize, 1), dim), seed)
        else:
            tables = cls._train_scalar(residuals, max(budget - 8 * normalize, 8))
        codec = cls(centroids @ tables["rotation"], tables, normalize, scheme)
        if normalize:
            cids = assign(sample @ tables["rotation"], codec.centroids)
            codec.tables["norm_range"] = norm_range(codec._decoded_norms(cids, codec._codes(
                np.ascontiguousarray(sample @ tables["rotation"] - codec.centroids[cids]))))
        log.info("trained %s codec: %d centroids, %.2f bits/dim, on %d vectors (normalised=%s)", scheme, k,
                 codec.nbits, n, normalize)
        return codec

    @staticmethod
    def _train_scalar(residuals: np.ndarray, budget: int) -> dict[str, np.ndarray]:
        dim = residuals.shape[1]
        cov = residuals.T @ residuals / len(residuals)
        eigval, eigvec = np.linalg.eigh(cov.astype(np.float64))
        rotation = np.ascontiguousarray(eigvec[:, np.argsort(-eigval)], dtype=np.float32)
        rotated = residuals @ rotation
        ordered = np.sort(rotated, axis=0)
        csum = np.zeros((len(ordered) + 1, dim), dtype=np.float64)
        np.cumsum(ordered, axis=0, out=csum[1:])
        cutoffs = np.full((dim, 15), np.inf, dtype=np.float32)
        weights = np.zeros((dim, 16), dtype=np.float32)
        tables = {}
        mse = np.empty((dim, len(LEVELS)))
        for i, level in enumerate(LEVELS):
            if level == 0:
                mean = rotated.mean(axis=0)
                mse[:, i] = ((rotated - mean) ** 2).mean(axis=0)
                tables[0] = (np.zeros((dim, 0), np.float32), mean[:, None].astype(np.float32))
                continue
            cut, w = quantiser(ordered, level, csum)
            decoded = w[np.arange(dim), bucketize(rotated, cut).astype(np.intp)]
            mse[:, i] = ((rotated - decoded) ** 2).mean(axis=0)
            tables[level] = (cut, w)
        bits = split_bits(mse, budget)
        for d in range(dim):
            cut, w = tables[int(bits[d])]
            cutoffs[d, : cut.shape[1]] = cut[d]
            weights[d, : w.shape[1]] = w[d]
        return {"rotation": rotation, "bits": bits, "cutoffs": cutoffs, "weights": weights}

    @staticmethod
    def _train_pq(residuals: np.ndarray, n_bytes: int, seed: int) -> dict[str, np.ndarray]:
        """Principal axes balanced into ``n_bytes`` groups (eigenvalue allocation), one k-means codebook each."""
        cov = residuals.T @ residuals / len(residuals)
        eigval, eigvec = np.linalg.eigh(cov.astype(np.float64))
        order = np.argsort(-eigval)
        sizes = allocate_groups(eigval[order], n_bytes)
        members = eigen_allocation(eigval[order], sizes)
        groups = sorted(range(len(sizes)), key=lambda g: (-sizes[g], g))  # equal sizes contiguous
        perm = np.concatenate([order[members[g]] for g in groups])
        rotation = np.ascontiguousarray(eigvec[:, perm], dtype=np.float32)
        rotated = residuals @ rotation
        sizes = np.array([sizes[g] for g in groups], dtype=np.int32)
        book = np.zeros((len(sizes), 256, int(sizes.max())), dtype=np.float32)
        a = 0
        for j, s in enumerate(sizes):
            book[j, :, :s] = pq_kmeans(rotated[:, a:a + s], seed + j)
            a += s
        return {"rotation": rotation, "codebook": book, "group_sizes": sizes}

    # ------------------------------------------------------------------ encode / decode
    def rotate(self, x: np.ndarray) -> np.ndarray:
        """Vectors (n x dim) in the codec's rotated space (inner products unchanged)."""
        return np.asarray(x, dtype=np.float32) @ self.rotation

    def encode(self, x: np.ndarray, batch: int = 65536) -> tuple[np.ndarray, np.ndarray]:
        """Centroid ids and residual codes of token vectors ``x`` (n x dim, unrotated)."""
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise InvalidInputError(f"expected vectors of shape (n, {self.dim}), got {x.shape}")
        cids = np.empty(len(x), dtype=self.cid_dtype)
        codes = np.empty((len(x), self.n_bytes), dtype=np.uint8)
        for start in range(0, len(x), batch):
            part = self.rotate(x[start:start + batch])
            c = assign(part, self.centroids)
            cids[start:start + batch] = c
            residual = np.ascontiguousarray(part - self.centroids[c])
            codes[start:start + batch] = self._codes(residual)
        return cids, codes

    def _codes(self, residual: np.ndarray) -> np.ndarray:
        if self.scheme == "pq":
            return self._pq_codes(residual)
        out = []
        cutoffs = self.tables["cutoffs"]
        for a, b, w, _ in self._groups:
            buckets = bucketize(residual[:, a:b], cutoffs[a:b, : 2 ** w - 1])
            per = 8 // w
            grouped = buckets.reshape(len(residual), (b - a) // per, per)
            packed = np.zeros(grouped.shape[:2], dtype=np.uint8)
            for i in range(per):
                packed |= grouped[:, :, i] << (w * (per - 1 - i))
            out.append(packed)
        return np.concatenate(out, axis=1) if out else np.zeros((len(residual), 0), np.uint8)

    def _pq_codes(self, residual: np.ndarray) -> np.ndarray:
        """Nearest codeword of every group (L2; faiss flat search), one byte per group."""
        import faiss

        if not self._flat:
            for a, _, s, book in self._groups:
                for i in range(book.shape[0]):
                    flat = faiss.IndexFlatL2(s)
                    flat.add(np.ascontiguousarray(book[i]))
                    self._flat.append((a + i * s, s, flat))
        out = np.empty((len(residual), self.n_bytes), dtype=np.uint8)
        for j, (a, s, flat) in enumerate(self._flat):
            _, ids = flat.search(np.ascontiguousarray(residual[:, a:a + s]), 1)
            out[:, j] = ids[:, 0]
        return out

    def decode_residuals(self, codes: np.ndarray) -> np.ndarray:
        """Decoded rotated residuals (n x dim float32) of ``codes``."""
        codes = np.asarray(codes)
        n = len(codes)
        out = np.empty((n, self.dim), dtype=np.float32)
        if self.scheme != "pq":
            out[:] = self.tables["weights"][:, 0]  # zero-bit dimensions decode to their mean
        j = 0
        for a, b, _, lut in self._groups:
            nb = lut.shape[0]
            index = codes[:, j:j + nb].astype(np.intp)
            index += np.arange(0, nb * 256, 256)
            out[:, a:b] = np.take(lut.reshape(nb * 256, -1), index, axis=0).reshape(n, b - a)
            j += nb
        return out

    def query_tables(self, rotated: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lookup tables that score codes against a rotated query without decoding them (asymmetric distance).

        Returns ``table`` (``n_bytes * 256 x q``): row ``256 * j + v`` holds the inner products of
        the ``q`` query tokens with the residual piece that byte ``j`` decodes to for value ``v``;
        and ``bias`` (``q``): the query's inner product with the zero-bit dimensions' constant.
        ``<q_i, residual(codes)> = bias[i] + sum_j table[256 * j + codes[j], i]``.

        >>> rng = np.random.default_rng(0)
        >>> codec = ResidualCodec.train(rng.normal(size=(2000, 16)).astype(np.float32), nbits=1.5, n_centroids=8)
        >>> _, codes = codec.encode(rng.normal(size=(5, 16)).astype(np.float32))
        >>> q = rng.normal(size=(3, 16)).astype(np.float32)
        >>> table, bias = codec.query_tables(q)
        >>> looked_up = table[codes.astype(np.intp) + 256 * np.arange(codec.n_bytes)].sum(axis=1) + bias
        >>> bool(np.allclose(looked_up, codec.decode_residuals(codes) @ q.T, atol=1e-4))
        True
        """
        q = np.asarray(rotated, dtype=np.float32)
        parts = []
        bias = np.zeros(len(q), dtype=np.float32)
        if self.scheme != "pq":
            mean = np.where(self.bits == 0, self.tables["weights"][:, 0], 0.0).astype(np.float32)
            bias = q @ mean  # zero-bit dimensions decode to their mean
        for a, b, _, lut in self._groups:
            nb, _, per = lut.shape
            qg = np.ascontiguousarray(q[:, a:b].reshape(len(q), nb, per).transpose(1, 2, 0))  # (nb, per, q)
            parts.append(np.matmul(lut, qg).reshape(nb * 256, len(q)))  # (nb, 256, q)
        table = np.concatenate(parts) if parts else np.zeros((0, len(q)), np.float32)
        return np.ascontiguousarray(table, dtype=np.float32), bias

    def _decoded_norms(self, cids: np.ndarray, codes: np.ndarray) -> np.ndarray:
        out = self.decode_residuals(codes)
        out += self.centroids[np.asarray(cids, dtype=np.intp)]
        return np.sqrt(np.einsum("ij,ij->i", out, out))

    def norm_codes(self, cids: np.ndarray, codes: np.ndarray, batch: int = 16384) -> np.ndarray:
        """One byte per token: the norm of its decoded (not yet renormalised) vector on the codec's log scale."""
        lo, hi = (float(v) for v in self.tables["norm_range"])
        out = np.empty(len(cids), dtype=np.uint8)
        for s in range(0, len(cids), batch):
            logn = np.log(np.maximum(self._decoded_norms(cids[s:s + batch], codes[s:s + batch]), 1e-12))
            out[s:s + batch] = np.clip(np.rint((logn - lo) / (hi - lo) * 255), 0, 255)
        return out

    def inverse_norm_table(self) -> np.ndarray:
        """``1 / norm`` (float32) of each of the 256 :meth:`norm_codes`."""
        lo, hi = (float(v) for v in self.tables["norm_range"])
        return np.exp(-(lo + np.arange(256) / 255 * (hi - lo))).astype(np.float32)

    def inverse_norms(self, norm_codes: np.ndarray) -> np.ndarray:
        """``1 / norm`` (float32) of tokens from their :meth:`norm_codes`."""
        return self.inverse_norm_table()[np.asarray(norm_codes, dtype=np.intp)]

    def decode(self, cids: np.ndarray, codes: np.ndarray, norm_codes: np.ndarray | None = None) -> np.ndarray:
        """Rotated token vectors (n x dim float32) from centroid ids and codes (renormalised if unit-norm:
        by the stored ``norm_codes`` when given, as search scores them, else by the exact norm)."""
        out = self.decode_residuals(codes)
        out += self.centroids[np.asarray(cids, dtype=np.intp)]
        if self.normalize and norm_codes is not None:
            out *= self.inverse_norms(norm_codes)[:, None]
        elif self.normalize:
            out /= np.maximum(np.sqrt(np.einsum("ij,ij->i", out, out)), 1e-12)[:, None]
        return out

    def residual_norms(self, x: np.ndarray, cids: np.ndarray) -> np.ndarray:
        """‖x - centroid‖ per token (the drift statistic); ``x`` unrotated."""
        return np.linalg.norm(self.rotate(x) - self.centroids[np.asarray(cids, np.intp)], axis=1)
