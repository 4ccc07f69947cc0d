// mm native late-interaction kernels: the first and the last stages of PLAID's search (index/plaid.py).
//
// mm_probe_candidates: the documents in the inverted lists of a query's probed centroids, each with its probe
// score (per query token, the best probed centroid score whose list holds the document), in one pass over the
// lists' entries.
//
// mm_adc_maxsim: MaxSim of compressed documents straight from a query's lookup tables.
//
// A document is a contiguous run of token rows [start, end) of a compressed segment: per token a centroid id
// (uint16 or int32), `n_bytes` residual code bytes and, for unit-norm codecs, a one-byte norm code. Its score
// against a query of `q` tokens is
//
//     sum_i max_t (st[cid_t][i] + bias[i] + sum_j table[256 j + code_tj][i]) * inv_norm[norm_t]
//
// (asymmetric distance computation; see index/plaid.py). The torch path gathers int32 indices for
// `embedding_bag`, writes a (tokens x q) score matrix and reduces it per document; here each token's sums stay
// in registers, one column block of the query at a time, and only the running maxima are kept, so nothing
// scales with the number of tokens but the reads of the codes themselves. Documents are dealt to the threads
// dynamically (one OpenMP parallel region per call, `threads` of them).
//
// Compiled at first use with -O3 -march=native (mm/kernels/build.py); the fixed-width loops below vectorise to
// the machine's SIMD width.

#include <omp.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#if defined(__F16C__)
#include <immintrin.h>
#endif

namespace {

#if !defined(__F16C__)
float half_to_float(uint16_t h) {
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    float mag;
    if (exp == 0) mag = std::ldexp(static_cast<float>(man), -24);  // zero and subnormals
    else if (exp == 31) mag = man ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
    else mag = std::ldexp(static_cast<float>(man | 0x400), static_cast<int>(exp) - 25);
    uint32_t bits;
    std::memcpy(&bits, &mag, sizeof bits);
    bits |= sign;
    std::memcpy(&mag, &bits, sizeof mag);
    return mag;
}
#endif

// 8 floats, loaded from and stored to any float address (GCC/Clang vector extension: AVX registers on x86,
// NEON pairs on ARM, plain loops elsewhere)
typedef float v8 __attribute__((vector_size(32), aligned(4)));

inline v8 load(const float* p) { return *reinterpret_cast<const v8*>(p); }

// 8 float16 values (their bits) widened to float32
inline v8 load(const uint16_t* p) {
#if defined(__F16C__)
    const __m256 x = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    v8 out;
    std::memcpy(&out, &x, sizeof out);
    return out;
#else
    v8 out;
    for (int i = 0; i < 8; ++i) out[i] = half_to_float(p[i]);
    return out;
#endif
}

// Columns [c0, c0 + 8 V) of the query (`ld`: the row stride of `st`, `bias` and `table`, a multiple of 8; the
// padding columns past q are zeros): the sum over the first `n` of them of each column's maximum over the tokens.
template <int V, typename Cid, typename T>
float block_maxsim(const float* st, const float* bias, const T* table, float unscale, int64_t ld, int64_t c0, int n,
                   int n_bytes, const Cid* cids, const uint8_t* codes, const uint8_t* norms, const float* inv_norm,
                   int64_t start, int64_t end) {
    v8 best[V], b[V];
    for (int v = 0; v < V; ++v) {
        best[v] = v8{} - std::numeric_limits<float>::infinity();
        b[v] = load(bias + c0 + 8 * v);
    }
    for (int64_t t = start; t < end; ++t) {
        const float* srow = st + static_cast<int64_t>(cids[t]) * ld + c0;
        v8 sum[V] = {};
        const uint8_t* code = codes + t * n_bytes;
        for (int j = 0; j < n_bytes; ++j) {
            const T* row = table + (static_cast<int64_t>(j) * 256 + code[j]) * ld + c0;
            for (int v = 0; v < V; ++v) sum[v] += load(row + 8 * v);
        }
        const float scale = inv_norm ? inv_norm[norms[t]] : 1.0f;
        for (int v = 0; v < V; ++v) {
            const v8 x = (load(srow + 8 * v) + b[v] + sum[v] * unscale) * scale;
            best[v] = x > best[v] ? x : best[v];
        }
    }
    float cols[8 * V];
    for (int v = 0; v < V; ++v)
        for (int i = 0; i < 8; ++i) cols[8 * v + i] = best[v][i];
    float total = 0.0f;
    for (int c = 0; c < n; ++c) total += cols[c];
    return total;
}

template <typename Cid, typename T>
void maxsim_docs(const float* st, const float* bias, const T* table, float unscale, int64_t ld, int q, int n_bytes,
                 const Cid* cids, const uint8_t* codes, const uint8_t* norms, const float* inv_norm,
                 const int64_t* starts, const int64_t* ends, int64_t n_docs, float* out, int threads) {
#pragma omp parallel for schedule(dynamic, 4) num_threads(threads)
    for (int64_t d = 0; d < n_docs; ++d) {
        const int64_t s = starts[d], e = ends[d];
        float total = 0.0f;
        for (int c0 = 0; s < e && c0 < q; c0 += 32) {  // blocks of up to 32 columns: 4 accumulators
            const int n = q - c0 < 32 ? q - c0 : 32;
            switch ((n + 7) / 8) {
                case 1: total += block_maxsim<1>(st, bias, table, unscale, ld, c0, n, n_bytes, cids, codes, norms, inv_norm, s, e); break;
                case 2: total += block_maxsim<2>(st, bias, table, unscale, ld, c0, n, n_bytes, cids, codes, norms, inv_norm, s, e); break;
                case 3: total += block_maxsim<3>(st, bias, table, unscale, ld, c0, n, n_bytes, cids, codes, norms, inv_norm, s, e); break;
                default: total += block_maxsim<4>(st, bias, table, unscale, ld, c0, n, n_bytes, cids, codes, norms, inv_norm, s, e);
            }
        }
        out[d] = total;
    }
}

// The nprobe best centroids of every query token, best first (ties: the lower id first), by one pass over st.
void top_centroids(const float* st, int64_t n_centroids, int q, int nprobe, int64_t* out) {
    std::vector<float> val(static_cast<size_t>(q) * nprobe, -std::numeric_limits<float>::infinity());
    std::vector<int64_t> id(static_cast<size_t>(q) * nprobe, -1);
    for (int64_t c = 0; c < n_centroids; ++c) {
        const float* row = st + c * q;
        for (int i = 0; i < q; ++i) {
            float* v = val.data() + static_cast<int64_t>(i) * nprobe;
            int64_t* d = id.data() + static_cast<int64_t>(i) * nprobe;
            const float x = row[i];
            if (!(x > v[nprobe - 1]) && d[nprobe - 1] >= 0) continue;
            int p = nprobe - 1;
            while (p > 0 && (x > v[p - 1] || d[p - 1] < 0)) {
                v[p] = v[p - 1];
                d[p] = d[p - 1];
                --p;
            }
            v[p] = x;
            d[p] = c;
        }
    }
    for (int r = 0; r < nprobe; ++r)
        for (int i = 0; i < q; ++i) out[static_cast<int64_t>(r) * q + i] = id[static_cast<int64_t>(i) * nprobe + r];
}

template <typename Row>
int64_t probe_candidates(const Row* ivf, const int64_t* ivf_off, int64_t n_docs, const uint8_t* allowed,
                         const int64_t* ranked, const float* scores, int nprobe, int q, float threshold,
                         int32_t* credited, float* total, uint8_t* touched, int64_t* out_rows, float* out_scores) {
    for (int i = 0; i < q; ++i) {
        for (int r = 0; r < nprobe; ++r) {  // best first: the first list holding a document credits it
            const int64_t c = ranked[static_cast<int64_t>(r) * q + i];
            const float s = scores[static_cast<int64_t>(r) * q + i];
            const bool counts = s >= threshold;
            for (int64_t e = ivf_off[c]; e < ivf_off[c + 1]; ++e) {
                const int64_t d = ivf[e];
                touched[d] = 1;
                if (counts && credited[d] != i + 1) {
                    credited[d] = i + 1;
                    total[d] += s;
                }
            }
        }
    }
    int64_t n = 0;
    for (int64_t d = 0; d < n_docs; ++d) {
        if (touched[d] && allowed[d]) {
            out_rows[n] = d;
            out_scores[n++] = total[d];
        }
    }
    return n;
}

}  // namespace

extern "C" {

// st: float [n_centroids][ld]; bias: float [ld]; table: [n_bytes * 256][ld] float32 (table_bytes 4) or float16
// (2; its sums are multiplied by `unscale`), row-major; ld: q rounded up to a multiple of 8, padding columns
// zero. cids: uint16 (cid_bytes 2) or int32 (4) per token; codes: uint8 [tokens][n_bytes]; norms (uint8 per
// token) and inv_norm (float [256]) both null or both set.
// Documents d = 0..n_docs-1 are token rows [starts[d], ends[d]); out[d] gets the score (0 for an empty one).
void mm_adc_maxsim(const float* st, const float* bias, const void* table, int32_t table_bytes, float unscale,
                   int64_t ld, int32_t q, int32_t n_bytes, const void* cids, int32_t cid_bytes, const uint8_t* codes,
                   const uint8_t* norms, const float* inv_norm, const int64_t* starts, const int64_t* ends,
                   int64_t n_docs, float* out, int32_t threads) {
    const auto* c16 = static_cast<const uint16_t*>(cids);
    const auto* c32 = static_cast<const int32_t*>(cids);
    const auto* f32 = static_cast<const float*>(table);
    const auto* f16 = static_cast<const uint16_t*>(table);
    if (cid_bytes == 2 && table_bytes == 4)
        maxsim_docs(st, bias, f32, unscale, ld, q, n_bytes, c16, codes, norms, inv_norm, starts, ends, n_docs, out, threads);
    else if (cid_bytes == 2)
        maxsim_docs(st, bias, f16, unscale, ld, q, n_bytes, c16, codes, norms, inv_norm, starts, ends, n_docs, out, threads);
    else if (table_bytes == 4)
        maxsim_docs(st, bias, f32, unscale, ld, q, n_bytes, c32, codes, norms, inv_norm, starts, ends, n_docs, out, threads);
    else
        maxsim_docs(st, bias, f16, unscale, ld, q, n_bytes, c32, codes, norms, inv_norm, starts, ends, n_docs, out, threads);
}

// ivf: the document rows of every centroid's inverted list, uint16 (ivf_bytes 2) or int32 (4), list c at
// [ivf_off[c], ivf_off[c + 1]); allowed: uint8 per document; ranked / scores: [nprobe][q] probed centroid ids of
// each query token, best first, and their scores. Scratch: credited (int32), total (float), touched (uint8), n_docs
// each and zero. Writes the allowed documents found (ascending) and their probe scores (a token whose probed
// centroids score below threshold, or whose lists miss the document, adds 0); returns how many.
int64_t mm_probe_candidates(const void* ivf, int32_t ivf_bytes, const int64_t* ivf_off, int64_t n_docs,
                            const uint8_t* allowed, const int64_t* ranked, const float* scores, int32_t nprobe,
                            int32_t q, float threshold, int32_t* credited, float* total, uint8_t* touched,
                            int64_t* out_rows, float* out_scores) {
    if (ivf_bytes == 2)
        return probe_candidates(static_cast<const uint16_t*>(ivf), ivf_off, n_docs, allowed, ranked, scores, nprobe,
                                q, threshold, credited, total, touched, out_rows, out_scores);
    return probe_candidates(static_cast<const int32_t*>(ivf), ivf_off, n_docs, allowed, ranked, scores, nprobe, q,
                            threshold, credited, total, touched, out_rows, out_scores);
}

// st: float [n_centroids][q]; out: int64 [nprobe][q], the nprobe (<= n_centroids) best centroid ids of each
// query token (column of st), best first, ties to the lower id.
void mm_top_centroids(const float* st, int64_t n_centroids, int32_t q, int32_t nprobe, int64_t* out) {
    top_centroids(st, n_centroids, q, nprobe, out);
}

}  // extern "C"
