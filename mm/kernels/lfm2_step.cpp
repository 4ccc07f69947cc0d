// mm native decode kernels: matrix-vector products over bf16 / int8 / int4 weights and one whole LFM2 decode
// step (all layers, batch 1) inside a single OpenMP parallel region.
//
// Why: a decode step is ~100 small matrix-vector products that each stream their weights once from memory.
// torch runs each as its own operator (dispatch, a fork/join of the thread pool, an output allocation), and the
// ~400 small element-wise ops between them cost as much again. Here the threads stay inside one parallel region
// for the whole step: each product splits its rows over the threads, the element-wise work between products runs
// on one thread, and a barrier (a few hundred nanoseconds while the threads spin) separates the stages.
//
// Formats (see mm/kernels/formats.py, which packs them):
//   F32  float  [rows][cols]
//   BF16 uint16 [rows][cols]                     (bfloat16 bits; products accumulate in float32)
//   Q8   int8   [rows][cols] + float scale[rows]  (w = q * scale)
//   Q4   uint8  [rows][cols/2] + fp16 [rows][2][cols/group] (scales, then minimums) per group of `group` columns
//        (w = q * scale + min, q in 0..15); inside every 32 columns byte j holds column j (low nibble) and
//        column j + 16 (high nibble).
// Q8 and Q4 products quantize the activation to int8 per block of 32 (scale = max|x| / 127), like llama.cpp's
// q8_0, and multiply in integers; BF16 and F32 products run in float32.
//
// Compiled at first use with the machine's own instruction set (-march=native); without AVX2+FMA+F16C the
// portable loops below run instead.

#include <omp.h>

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define MM_AVX2 1
#endif

extern "C" {

enum { FMT_F32 = 0, FMT_BF16 = 1, FMT_Q8 = 2, FMT_Q4 = 3 };
enum { DT_F32 = 0, DT_BF16 = 1 };

typedef struct {
    int32_t format, rows, cols, group;
    const void* data;
    const void* scale;  // Q8: float[rows]; Q4: uint16 (fp16) [rows][2][cols / group] = scales, minimums
    const float* bias;  // float[rows] or null
} mm_weight;

typedef struct {
    int32_t attn;
    const float* op_norm;
    const float* ffn_norm;
    mm_weight in_proj, out_proj, qkv, o, w13, w2;
    const float* conv_w;  // [hidden][conv_L]
    const float* conv_b;  // [hidden] or null
    const float* q_norm;  // [head_dim]
    const float* k_norm;
} mm_layer;

typedef struct {
    int32_t hidden, n_layers, ff_dim, n_heads, n_kv, head_dim, conv_L, state_dtype;
    int32_t bf16_acts;  // 1: round activations to bfloat16 where torch's bfloat16 ops do (same tokens as transformers)
    int32_t rope_pairs;  // RoPE rotates (i, i + hd/2) (LFM2, cos/sin [hd]) or 1: pairs (2i, 2i+1) (cos/sin [hd/2])
    float eps, attn_scale;
    const mm_layer* layers;
    const float* final_norm;  // null: no final norm (the output of the last block)
} mm_model;

typedef struct {
    void** conv;    // per layer: [hidden][conv_L] in state_dtype (null for attention layers)
    void** keys;    // per layer: [n_kv][capacity][head_dim] in state_dtype (null for conv layers)
    void** values;
    int32_t capacity;
} mm_state;

}  // extern "C"

namespace {

constexpr int QB = 32;  // activation quantization block
constexpr int MAX_COLS = 1 << 17;  // widest Q4 row

inline float bf16_to_f32(uint16_t v) {
    uint32_t bits = static_cast<uint32_t>(v) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

inline uint16_t f32_to_bf16(float f) {  // round to nearest even, as torch does
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);  // NaN stays NaN
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return static_cast<uint16_t>(bits >> 16);
}

inline float f16_to_f32(uint16_t h) {
#ifdef MM_AVX2
    return _cvtsh_ss(h);
#else
    uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ffu, bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else {  // subnormal
            exp = 127 - 15 + 1;
            while (!(mant & 0x400u)) { mant <<= 1; exp--; }
            bits = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
#endif
}

inline float round_bf16(float v) { return bf16_to_f32(f32_to_bf16(v)); }

inline float load_state(const void* p, int dt, long i) {
    return dt == DT_BF16 ? bf16_to_f32(static_cast<const uint16_t*>(p)[i]) : static_cast<const float*>(p)[i];
}

inline void store_state(void* p, int dt, long i, float v) {
    if (dt == DT_BF16) static_cast<uint16_t*>(p)[i] = f32_to_bf16(v);
    else static_cast<float*>(p)[i] = v;
}

#ifdef MM_AVX2
inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#endif

// ---- activation quantization (Q8/Q4 products) -------------------------------------------------------------

struct QAct {
    int8_t* q;   // [cols]
    float* d;    // [cols / QB] block scales
    float* sum;  // [cols / QB] sum of the (unquantized) block
    int8_t* qp;  // [cols] q with each pair of blocks (2p, 2p+1) laid out as the Q4 kernel unpacks codes:
                 // 2p[0:16], 2p+1[0:16], 2p[16:32], 2p+1[16:32] (a last odd block stays as it is)
    float* xp;   // [cols] for BF16 weights: x with every 16 values as its 8 even then its 8 odd ones
};

// x laid out as the BF16 kernel splits each 32-byte load of weights: even elements, then odd ones
void permute_act(const float* x, int cols, float* xp) {
    int i = 0;
    for (; i + 16 <= cols; i += 16)
        for (int j = 0; j < 8; j++) {
            xp[i + j] = x[i + 2 * j];
            xp[i + 8 + j] = x[i + 2 * j + 1];
        }
    for (; i < cols; i++) xp[i] = x[i];
}

void quantize_act(const float* x, int cols, QAct a) {
    const int nb = cols / QB;
    for (int b = 0; b < nb; b++) {
        const float* xb = x + b * QB;
        float amax = 0.f, s = 0.f;
        for (int i = 0; i < QB; i++) { amax = std::max(amax, std::fabs(xb[i])); s += xb[i]; }
        float d = amax / 127.f, id = d > 0.f ? 1.f / d : 0.f;
        for (int i = 0; i < QB; i++) a.q[b * QB + i] = static_cast<int8_t>(std::nearbyint(xb[i] * id));
        a.d[b] = d;
        a.sum[b] = s;
    }
    for (int p = 0; p + 1 < nb; p += 2) {
        const int8_t* b0 = a.q + p * QB;
        int8_t* out = a.qp + p * QB;
        std::memcpy(out, b0, 16);
        std::memcpy(out + 16, b0 + QB, 16);
        std::memcpy(out + 32, b0 + 16, 16);
        std::memcpy(out + 48, b0 + QB + 16, 16);
    }
    if (nb % 2) std::memcpy(a.qp + (nb - 1) * QB, a.q + (nb - 1) * QB, QB);
}

// ---- row dot products: one weight row against one activation ----------------------------------------------
// One row at a time, so each thread reads its rows as one sequential stream (the hardware prefetcher's best case;
// measured: 4 interleaved 1 KB row streams ran at half the bandwidth). Two accumulators hide the FMA latency.

float dot_f32(const float* w, const float* x, int cols) {
    int i = 0;
    float s = 0.f;
#ifdef MM_AVX2
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    for (; i + 16 <= cols; i += 16) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
    }
    s = hsum(_mm256_add_ps(a0, a1));
#endif
    for (; i < cols; i++) s += w[i] * x[i];
    return s;
}

// xp: x as permute_act lays it out (each 32-bit lane of a weight load holds an even and an odd element: a shift
// and a mask turn them into two float vectors, without widening shuffles)
float dot_bf16(const uint16_t* w, const float* x, const float* xp, int cols) {
    int i = 0;
    float s = 0.f;
#ifdef MM_AVX2
    const __m256i high = _mm256_set1_epi32(static_cast<int>(0xffff0000u));
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    for (; i + 16 <= cols; i += 16) {
        const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + i));
        a0 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(raw, 16)), _mm256_loadu_ps(xp + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(raw, high)), _mm256_loadu_ps(xp + i + 8), a1);
    }
    s = hsum(_mm256_add_ps(a0, a1));
#else
    (void)xp;
#endif
    for (; i < cols; i++) s += bf16_to_f32(w[i]) * x[i];
    return s;
}

float dot_q8(const int8_t* w, QAct a, int cols) {
    const int nb = cols / QB;
#ifdef MM_AVX2
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int b = 0; b < nb; b++) {
        __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.q + b * QB));
        __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + b * QB));
        __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv));
        acc[b & 1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones)), _mm256_set1_ps(a.d[b]),
                                     acc[b & 1]);
    }
    return hsum(_mm256_add_ps(acc[0], acc[1]));
#else
    float s = 0.f;
    for (int b = 0; b < nb; b++) {
        int32_t isum = 0;
        for (int i = 0; i < QB; i++) isum += int32_t(w[b * QB + i]) * a.q[b * QB + i];
        s += a.d[b] * float(isum);
    }
    return s;
#endif
}

// per-block factors (activation scale x weight scale) of one Q4 row against one activation, and the minimums'
// term sum_g min_g * sum_g(x); sm: the row's fp16 scales [groups] followed by its fp16 minimums [groups]
float q4_factors(const uint16_t* sm, int group, QAct a, int cols, float* fs) {
    const int per_group = group / QB, groups = cols / group;
    const uint16_t* mins = sm + groups;
    float zacc = 0.f;
    int g = 0;
#ifdef MM_AVX2
    if (per_group == 1) {  // one block per group (the default group of 32): eight groups per step
        __m256 z = _mm256_setzero_ps();
        for (; g + 8 <= groups; g += 8) {
            const __m256 scale = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sm + g)));
            const __m256 mn = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(mins + g)));
            _mm256_storeu_ps(fs + g, _mm256_mul_ps(scale, _mm256_loadu_ps(a.d + g)));
            z = _mm256_fmadd_ps(mn, _mm256_loadu_ps(a.sum + g), z);
        }
        zacc = hsum(z);
    }
#endif
    for (; g < groups; g++) {
        const float scale = f16_to_f32(sm[g]);
        float gsum = 0.f;
        for (int k = 0; k < per_group; k++) {
            fs[g * per_group + k] = a.d[g * per_group + k] * scale;
            gsum += a.sum[g * per_group + k];
        }
        zacc += f16_to_f32(mins[g]) * gsum;
    }
    return zacc;
}

#ifdef MM_AVX2
// one pair of blocks: the 32 code bytes at w unpacked into low nibbles (columns 0-15 of both blocks) and high
// nibbles (columns 16-31), matching a.qp
inline void q4_unpack(const uint8_t* w, __m256i& lo, __m256i& hi) {
    const __m256i low = _mm256_set1_epi8(0x0f), v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
    lo = _mm256_and_si256(v, low);
    hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
}

// acc + f * (the pair's integer dot products with the 64 activation bytes at qp); lanes 0-3 are the first block's
inline __m256 q4_pair(__m256i lo, __m256i hi, const int8_t* qp, __m256 f, __m256 acc) {
    const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qp));
    const __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qp + 32));
    const __m256i p16 = _mm256_add_epi16(_mm256_maddubs_epi16(lo, x0), _mm256_maddubs_epi16(hi, x1));
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1))), f, acc);
}
#endif

// one Q4 row against N activations at once (the codes are unpacked once for all N)
template <int N>
void dot_q4(const uint8_t* w, const uint16_t* sm, int group, const QAct* a, int cols, float* out) {
    const int nb = cols / QB;
    float fs[N][MAX_COLS / QB];  // NativeWeight refuses wider Q4 weights
    float s[N];
    for (int n = 0; n < N; n++) {
        out[n] = q4_factors(sm, group, a[n], cols, fs[n]);
        s[n] = 0.f;
    }
    int b = 0;
#ifdef MM_AVX2
    __m256 acc[N][2];
    for (int n = 0; n < N; n++) acc[n][0] = acc[n][1] = _mm256_setzero_ps();
    // two blocks (64 columns, 32 code bytes) per pass: low nibbles are columns 0-15 of both blocks, high
    // nibbles columns 16-31, matching a.qp; lanes 0-3 of the sums belong to block b, lanes 4-7 to block b + 1.
    // Eight blocks at a time, the factors of each pair spread over the lanes by one permute from 8 loaded at once.
    const __m256i spread[4] = {_mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1), _mm256_setr_epi32(2, 2, 2, 2, 3, 3, 3, 3),
                               _mm256_setr_epi32(4, 4, 4, 4, 5, 5, 5, 5), _mm256_setr_epi32(6, 6, 6, 6, 7, 7, 7, 7)};
    for (; b + 7 < nb; b += 8) {
        __m256 fv[N];
        for (int n = 0; n < N; n++) fv[n] = _mm256_loadu_ps(fs[n] + b);
        for (int p = 0; p < 4; p++) {
            const int bb = b + 2 * p;
            __m256i lo, hi;
            q4_unpack(w + bb * QB / 2, lo, hi);
            for (int n = 0; n < N; n++)
                acc[n][p & 1] = q4_pair(lo, hi, a[n].qp + bb * QB, _mm256_permutevar8x32_ps(fv[n], spread[p]),
                                        acc[n][p & 1]);
        }
    }
    for (; b + 1 < nb; b += 2) {
        __m256i lo, hi;
        q4_unpack(w + b * QB / 2, lo, hi);
        for (int n = 0; n < N; n++)
            acc[n][(b >> 1) & 1] = q4_pair(lo, hi, a[n].qp + b * QB,
                                           _mm256_set_m128(_mm_set1_ps(fs[n][b + 1]), _mm_set1_ps(fs[n][b])),
                                           acc[n][(b >> 1) & 1]);
    }
    for (int n = 0; n < N; n++) s[n] = hsum(_mm256_add_ps(acc[n][0], acc[n][1]));
#endif
    for (; b < nb; b++) {  // portable path, and a last odd block
        for (int n = 0; n < N; n++) {
            int32_t isum = 0;
            for (int i = 0; i < QB / 2; i++) {
                const uint8_t byte = w[b * QB / 2 + i];
                isum += int32_t(byte & 0x0f) * a[n].q[b * QB + i] + int32_t(byte >> 4) * a[n].q[b * QB + i + QB / 2];
            }
            s[n] += fs[n][b] * float(isum);
        }
    }
    for (int n = 0; n < N; n++) out[n] += s[n];
}

float dot_row(const mm_weight* W, long row, const float* x, QAct a) {
    const int cols = W->cols;
    float out;
    switch (W->format) {
        case FMT_F32:
            out = dot_f32(static_cast<const float*>(W->data) + row * cols, x, cols);
            break;
        case FMT_BF16:
            out = dot_bf16(static_cast<const uint16_t*>(W->data) + row * cols, x, a.xp, cols);
            break;
        case FMT_Q8:
            out = dot_q8(static_cast<const int8_t*>(W->data) + row * cols, a, cols) *
                  static_cast<const float*>(W->scale)[row];
            break;
        default:
            dot_q4<1>(static_cast<const uint8_t*>(W->data) + row * (cols / 2),
                      static_cast<const uint16_t*>(W->scale) + row * 2 * (cols / W->group), W->group, &a, cols, &out);
    }
    return W->bias ? out + W->bias[row] : out;
}

inline bool quantized(const mm_weight* W) { return W->format == FMT_Q8 || W->format == FMT_Q4; }

// rows [begin, end) of y[m] = W x[m] for m < M (x: [M][cols] float; a: quantized copies, one per row of x)
void gemv_rows(const mm_weight* W, int M, const float* x, const QAct* a, float* y, int begin, int end,
               bool bf16 = false) {
    const int cols = W->cols;
    for (long row = begin; row < end; row++) {
        int m = 0;
        if (W->format == FMT_Q4) {  // four activations per pass over the row's codes (prefill, batches)
            const uint8_t* codes = static_cast<const uint8_t*>(W->data) + row * (cols / 2);
            const uint16_t* sm = static_cast<const uint16_t*>(W->scale) + row * 2 * (cols / W->group);
            for (; m + 4 <= M; m += 4) {
                float out[4];
                dot_q4<4>(codes, sm, W->group, a + m, cols, out);
                for (int n = 0; n < 4; n++) {
                    const float v = W->bias ? out[n] + W->bias[row] : out[n];
                    y[long(m + n) * W->rows + row] = bf16 ? round_bf16(v) : v;
                }
            }
        }
        for (; m < M; m++) {
            const float v = dot_row(W, row, x + long(m) * cols, a[m]);
            y[long(m) * W->rows + row] = bf16 ? round_bf16(v) : v;
        }
    }
}

// The threads of one step wait for each other here between stages: spinning first (a stage is microseconds when
// every thread has a core), then yielding the core, so a thread preempted on a busy machine gets to run instead of
// being waited for a whole scheduler time slice (measured: OpenMP's own barrier made a 2-thread step 20x slower
// at a load average of 6 on 2 cores).
class SpinBarrier {
   public:
    void wait(int n) {
        const int gen = gen_.load(std::memory_order_acquire);
        if (count_.fetch_add(1, std::memory_order_acq_rel) == n - 1) {
            count_.store(0, std::memory_order_relaxed);
            gen_.fetch_add(1, std::memory_order_release);
            return;
        }
        for (int spins = 0; gen_.load(std::memory_order_acquire) == gen; spins++) {
            if (spins < 2000) {
#ifdef MM_AVX2
                _mm_pause();
#endif
            } else {
                sched_yield();
            }
        }
    }

   private:
    std::atomic<int> count_{0}, gen_{0};
};

// The rows of one product are dealt out in chunks of about 16 KB. Each thread starts on its own contiguous share
// (one sequential stream, as before) and, when that is done, takes the chunks still left in the other shares. A
// thread the OS delays or a core that runs slower then costs the end of its share, not the rest of the others'
// time at the barrier. One cursor per share, each on its own cache line: taking a chunk of one's own share touches
// no line another thread writes unless it is stealing.
constexpr int MAX_THREADS = 256;
struct alignas(64) Cursor {
    std::atomic<int> next{0};
};

inline int chunk_rows(const mm_weight* W) {
    long row_bytes;
    switch (W->format) {
        case FMT_F32: row_bytes = 4L * W->cols; break;
        case FMT_BF16: row_bytes = 2L * W->cols; break;
        case FMT_Q8: row_bytes = W->cols + 4; break;
        default: row_bytes = W->cols / 2 + 4L * (W->cols / W->group);
    }
    return int(std::max(4L, (16384 / std::max(row_bytes, 1L)) / 4 * 4));
}

// rows [0, W->rows) of y[m] = W x[m], shared by the nth threads through cur[0..nth) (all zero on entry; each
// thread's cursor is left past its share's end)
void gemv_shared(const mm_weight* W, int M, const float* x, const QAct* a, float* y, Cursor* cur, int tid, int nth,
                 bool bf16) {
    const int chunk = chunk_rows(W), nchunks = (W->rows + chunk - 1) / chunk;
    for (int k = 0; k < nth; k++) {
        const int owner = (tid + k) % nth;
        const int c0 = int(long(owner) * nchunks / nth), c1 = int(long(owner + 1) * nchunks / nth);
        for (int c = c0 + cur[owner].next.fetch_add(1, std::memory_order_relaxed); c < c1;
             c = c0 + cur[owner].next.fetch_add(1, std::memory_order_relaxed))
            gemv_rows(W, M, x, a, y, c * chunk, std::min(W->rows, (c + 1) * chunk), bf16);
    }
}

struct Team {
    int tid, nth;
    SpinBarrier* bar;
    Cursor (*cursors)[MAX_THREADS];  // two sets, used by alternate products
    int parity = 0;
    bool lead() const { return tid == 0; }
    void sync() const {
        if (nth > 1) bar->wait(nth);
    }
};

// all threads of the current parallel region: y = W x (one activation row), then a barrier. After the barrier
// every thread resets its own cursor of this product's set, ready for the product after next (the one in between
// uses the other set, and the barrier that ends it orders the reset before any use).
void gemv_team(Team& team, const mm_weight* W, const float* x, QAct a, float* y, bool bf16) {
    Cursor* cur = team.cursors[team.parity];
    gemv_shared(W, 1, x, &a, y, cur, team.tid, team.nth, bf16);
    team.sync();
    cur[team.tid].next.store(0, std::memory_order_relaxed);
    team.parity ^= 1;
}

// transformers' Lfm2RMSNorm: w * (x / sqrt(mean(x^2) + eps)), in bfloat16 rounded twice as torch does
void rmsnorm(const float* x, const float* w, float* out, int n, float eps, bool bf16) {
    double ss = 0.0;
    for (int i = 0; i < n; i++) ss += double(x[i]) * x[i];
    const float inv = 1.f / std::sqrt(float(ss / n) + eps);
    for (int i = 0; i < n; i++) out[i] = bf16 ? round_bf16(w[i] * round_bf16(x[i] * inv)) : w[i] * (x[i] * inv);
}

// scratch layout (floats), sized by mm_scratch_floats
struct Scratch {
    float *h, *t, *big, *act, *attn, *scores;
    QAct qa;
};

Scratch carve(const mm_model* m, int capacity, float* base) {
    const int H = m->hidden, F = m->ff_dim, qd = m->n_heads * m->head_dim, kvd = m->n_kv * m->head_dim;
    const int big = std::max(std::max(3 * H, qd + 2 * kvd), 2 * F), widest = std::max(std::max(H, F), qd);
    Scratch s;
    s.h = base;
    s.t = s.h + widest;
    s.big = s.t + widest;
    s.act = s.big + big;
    s.attn = s.act + widest;
    s.scores = s.attn + qd;
    float* rest = s.scores + long(m->n_heads) * capacity;
    s.qa.d = rest;
    s.qa.sum = rest + widest / QB + 1;
    s.qa.q = reinterpret_cast<int8_t*>(rest + 2 * (widest / QB + 1));
    s.qa.qp = s.qa.q + widest;
    s.qa.xp = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(s.qa.qp + widest) + 63) & ~uintptr_t(63));
    return s;
}

// q * cos + rotate_half(q) * sin (in bfloat16: cos/sin arrive rounded, and each product and the sum round);
// with pairs, (v[2i], v[2i+1]) rotate by angle i (the complex-number convention)
void rope(float* v, const float* cos, const float* sin, int hd, bool bf16, bool pairs) {
    const int half = hd / 2;
    if (pairs) {
        for (int i = 0; i < half; i++) {
            const float a = v[2 * i], b = v[2 * i + 1];
            v[2 * i] = a * cos[i] - b * sin[i];
            v[2 * i + 1] = a * sin[i] + b * cos[i];
        }
        return;
    }
    auto r = [bf16](float f) { return bf16 ? round_bf16(f) : f; };
    for (int i = 0; i < half; i++) {
        const float a = v[i], b = v[i + half];
        v[i] = r(r(a * cos[i]) + r(-b * sin[i]));
        v[i + half] = r(r(b * cos[i + half]) + r(a * sin[i + half]));
    }
}

// one attention layer's mixing after its qkv product (s.big holds q | k | v); writes s.attn [n_heads * hd]
void attention(Team& team, const mm_model* m, const mm_layer* L, void* keys, void* values, int capacity,
               int pos, const float* cos, const float* sin, Scratch& s) {
    const int hd = m->head_dim, nh = m->n_heads, nkv = m->n_kv, dt = m->state_dtype, groups = nh / nkv;
    float* q = s.big;
    float* k = q + nh * hd;
    float* v = k + nkv * hd;
    if (team.lead()) {
        for (int h = 0; h < nh; h++) {
            rmsnorm(q + h * hd, L->q_norm, q + h * hd, hd, m->eps, m->bf16_acts);
            rope(q + h * hd, cos, sin, hd, m->bf16_acts, m->rope_pairs);
        }
        for (int h = 0; h < nkv; h++) {
            rmsnorm(k + h * hd, L->k_norm, k + h * hd, hd, m->eps, m->bf16_acts);
            rope(k + h * hd, cos, sin, hd, m->bf16_acts, m->rope_pairs);
            for (int i = 0; i < hd; i++) {
                store_state(keys, dt, (long(h) * capacity + pos) * hd + i, k[h * hd + i]);
                store_state(values, dt, (long(h) * capacity + pos) * hd + i, v[h * hd + i]);
            }
        }
    }
    team.sync();
    for (int h = team.tid; h < nh; h += team.nth) {
        const long base = long(h / groups) * capacity * hd;
        float* sc = s.scores + long(h) * capacity;
        const float* qh = q + h * hd;
        float mx = -INFINITY;
        for (int t = 0; t <= pos; t++) {
            float d = 0.f;
            if (dt == DT_F32) {
                const float* kt = static_cast<const float*>(keys) + base + long(t) * hd;
                for (int i = 0; i < hd; i++) d += qh[i] * kt[i];
            } else {
                const uint16_t* kt = static_cast<const uint16_t*>(keys) + base + long(t) * hd;
                for (int i = 0; i < hd; i++) d += qh[i] * bf16_to_f32(kt[i]);
            }
            sc[t] = d * m->attn_scale;
            mx = std::max(mx, sc[t]);
        }
        float total = 0.f;
        for (int t = 0; t <= pos; t++) { sc[t] = std::exp(sc[t] - mx); total += sc[t]; }
        float* out = s.attn + h * hd;
        for (int i = 0; i < hd; i++) out[i] = 0.f;
        for (int t = 0; t <= pos; t++) {
            const float p = sc[t] / total;
            for (int i = 0; i < hd; i++) out[i] += p * load_state(values, dt, base + long(t) * hd + i);
        }
        if (m->bf16_acts)
            for (int i = 0; i < hd; i++) out[i] = round_bf16(out[i]);
    }
    team.sync();
}

// the short convolution of one conv layer after its in_proj (s.big holds B | C | x); writes s.act [hidden]
void short_conv(const mm_model* m, const mm_layer* L, void* state, Scratch& s) {
    const int H = m->hidden, Lc = m->conv_L, dt = m->state_dtype;
    const bool bf16 = m->bf16_acts;
    for (int c = 0; c < H; c++) {
        const float bx = bf16 ? round_bf16(s.big[c] * s.big[2 * H + c]) : s.big[c] * s.big[2 * H + c];
        float acc = L->conv_b ? L->conv_b[c] : 0.f;
        const long row = long(c) * Lc;
        for (int j = 0; j < Lc - 1; j++) {
            const float prev = load_state(state, dt, row + j + 1);
            store_state(state, dt, row + j, prev);
            acc += prev * L->conv_w[row + j];
        }
        store_state(state, dt, row + Lc - 1, bx);
        acc += load_state(state, dt, row + Lc - 1) * L->conv_w[row + Lc - 1];
        s.act[c] = bf16 ? round_bf16(s.big[H + c] * round_bf16(acc)) : s.big[H + c] * acc;
    }
}

// the input copies W's kernel reads: int8 blocks (Q8, Q4) or the even/odd layout (BF16)
inline void prepare(const float* x, int n, const mm_weight* W, QAct a) {
    if (quantized(W)) quantize_act(x, n, a);
    else if (W->format == FMT_BF16) permute_act(x, n, a.xp);
}

}  // namespace

extern "C" {

// floats of scratch memory mm_step needs for this model and KV capacity
long mm_scratch_floats(const mm_model* m, int capacity) {
    const int H = m->hidden, F = m->ff_dim, qd = m->n_heads * m->head_dim, kvd = m->n_kv * m->head_dim;
    const long widest = std::max(std::max(H, F), qd), big = std::max(std::max(3 * H, qd + 2 * kvd), 2 * F);
    return 3 * widest + big + qd + long(m->n_heads) * capacity + 2 * (widest / QB + 1) + widest / 2 + widest + 64;
}

// y[m] = W x[m] for m < M, on nthreads threads; qscratch: per row, 2 floats per 32 columns + 2 * cols bytes
// (Q8, Q4) or cols floats (BF16)
void mm_gemv(const mm_weight* W, int M, const float* x, float* y, void* qscratch, int nthreads) {
    std::vector<QAct> a(M);
    const int nb = W->cols / QB;
    if (quantized(W)) {
        float* f = static_cast<float*>(qscratch);
        int8_t* q = reinterpret_cast<int8_t*>(f + 2L * M * nb);
        for (int i = 0; i < M; i++) {
            a[i] = QAct{q + long(i) * W->cols, f + long(i) * nb, f + long(M + i) * nb,
                        q + long(M + i) * W->cols, nullptr};
            quantize_act(x + long(i) * W->cols, W->cols, a[i]);
        }
    } else if (W->format == FMT_BF16) {
        float* f = static_cast<float*>(qscratch);
        for (int i = 0; i < M; i++) {
            a[i].xp = f + long(i) * W->cols;
            permute_act(x + long(i) * W->cols, W->cols, a[i].xp);
        }
    }
    nthreads = std::max(1, std::min(nthreads, MAX_THREADS));
    std::vector<Cursor> cur(nthreads);
#pragma omp parallel num_threads(nthreads)
    gemv_shared(W, M, x, a.data(), y, cur.data(), omp_get_thread_num(), omp_get_num_threads(), false);
}

// one decode step of batch 1: x [hidden] is the token's embedding on entry and the final-normed hidden state on
// return; the layers' conv states and KV caches (position pos) are updated in place
void mm_step(const mm_model* m, const mm_state* st, float* x, int pos, const float* cos, const float* sin,
             float* scratch, int nthreads) {
    Scratch s = carve(m, st->capacity, scratch);
    const int H = m->hidden, F = m->ff_dim, qd = m->n_heads * m->head_dim;
    const bool bf16 = m->bf16_acts;
    auto add = [bf16](float a, float b) { return bf16 ? round_bf16(a + b) : a + b; };
    SpinBarrier bar;
    nthreads = std::max(1, std::min(nthreads, MAX_THREADS));
    std::vector<Cursor> cursors(2 * MAX_THREADS);
    auto* sets = reinterpret_cast<Cursor(*)[MAX_THREADS]>(cursors.data());
#pragma omp parallel num_threads(nthreads)
    {
        Team team{omp_get_thread_num(), omp_get_num_threads(), &bar, sets};
        for (int l = 0; l < m->n_layers; l++) {
            const mm_layer* L = &m->layers[l];
            const mm_weight* first = L->attn ? &L->qkv : &L->in_proj;
            if (team.lead()) {
                rmsnorm(x, L->op_norm, s.h, H, m->eps, bf16);
                prepare(s.h, H, first, s.qa);
            }
            team.sync();
            if (L->attn) {
                gemv_team(team, &L->qkv, s.h, s.qa, s.big, bf16);
                attention(team, m, L, st->keys[l], st->values[l], st->capacity, pos, cos, sin, s);
                if (team.lead()) prepare(s.attn, qd, &L->o, s.qa);
                team.sync();
                gemv_team(team, &L->o, s.attn, s.qa, s.t, bf16);
            } else {
                gemv_team(team, &L->in_proj, s.h, s.qa, s.big, bf16);
                if (team.lead()) {
                    short_conv(m, L, st->conv[l], s);
                    prepare(s.act, H, &L->out_proj, s.qa);
                }
                team.sync();
                gemv_team(team, &L->out_proj, s.act, s.qa, s.t, bf16);
            }
            if (team.lead()) {
                for (int i = 0; i < H; i++) x[i] = add(s.t[i], x[i]);
                rmsnorm(x, L->ffn_norm, s.h, H, m->eps, bf16);
                prepare(s.h, H, &L->w13, s.qa);
            }
            team.sync();
            gemv_team(team, &L->w13, s.h, s.qa, s.big, bf16);
            if (team.lead()) {
                for (int i = 0; i < F; i++) {
                    const float g = s.big[i], silu = g / (1.f + std::exp(-g));
                    s.act[i] = bf16 ? round_bf16(round_bf16(silu) * s.big[F + i]) : silu * s.big[F + i];
                }
                prepare(s.act, F, &L->w2, s.qa);
            }
            team.sync();
            gemv_team(team, &L->w2, s.act, s.qa, s.t, bf16);
            if (team.lead())
                for (int i = 0; i < H; i++) x[i] = add(x[i], s.t[i]);
            team.sync();
        }
        if (m->final_norm && team.lead()) rmsnorm(x, m->final_norm, x, H, m->eps, bf16);
    }
}

}  // extern "C"
