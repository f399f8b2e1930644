#include "spry/rng.h"

#include <math.h>

#include "spry/core.h"

/* Philox4x32 round constants (Salmon et al. 2011, Random123). */
#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

static inline uint32_t mulhilo(uint32_t a, uint32_t b, uint32_t *hi) {
  uint64_t p = (uint64_t)a * (uint64_t)b;
  *hi = (uint32_t)(p >> 32);
  return (uint32_t)p;
}

void spry_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
  uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
  uint32_t k0 = key[0], k1 = key[1];
  for (int r = 0; r < 10; r++) {
    uint32_t hi0, hi1;
    uint32_t lo0 = mulhilo(PHILOX_M0, c0, &hi0);
    uint32_t lo1 = mulhilo(PHILOX_M1, c2, &hi1);
    uint32_t n0 = hi1 ^ c1 ^ k0;
    uint32_t n1 = lo1;
    uint32_t n2 = hi0 ^ c3 ^ k1;
    uint32_t n3 = lo0;
    c0 = n0, c1 = n1, c2 = n2, c3 = n3;
    k0 += PHILOX_W0;
    k1 += PHILOX_W1;
  }
  out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
}

void spry_rng_block(spry_rng_key key, uint64_t block, uint32_t out[4]) {
  SPRY_CHECK(key.k < (1u << 24) && key.purpose < 256u && block < (1ull << 32),
             "rng key out of range: k=%u purpose=%u block=%llu (k < 2^24, purpose < 256, block < 2^32)", key.k,
             key.purpose, (unsigned long long)block);
  uint32_t ctr[4] = {(uint32_t)block, (key.k << 8) | key.purpose, key.client, key.round};
  uint32_t k[2] = {key.seed, key.step};
  spry_philox4x32_10(ctr, k, out);
}

/* Box-Muller on a pair of words: two independent N(0,1). Computed in double so the float results are
 * correctly rounded and identical wherever libm is (log/sqrt/cos/sin in double are deterministic here). */
static inline void box_muller(uint32_t a, uint32_t b, float *z0, float *z1) {
  double u = ((double)a + 0.5) * (1.0 / 4294967296.0); /* (0,1) */
  double v = ((double)b + 0.5) * (1.0 / 4294967296.0);
  double r = sqrt(-2.0 * log(u));
  double t = 6.283185307179586476925 * v;
  *z0 = (float)(r * cos(t));
  *z1 = (float)(r * sin(t));
}

static inline void block_values(spry_rng_key key, spry_tangent_kind kind, uint64_t block, float v[4]) {
  uint32_t w[4];
  spry_rng_block(key, block, w);
  if (kind == SPRY_TANGENT_GAUSSIAN) {
    box_muller(w[0], w[1], &v[0], &v[1]);
    box_muller(w[2], w[3], &v[2], &v[3]);
  } else {
    for (int j = 0; j < 4; j++) v[j] = (w[j] >> 31) ? 1.0f : -1.0f;
  }
}

void spry_rng_fill(spry_rng_key key, spry_tangent_kind kind, uint64_t first, size_t n, float *out) {
  size_t j = 0;
  while (j < n) {
    uint64_t e = first + j;
    float v[4];
    block_values(key, kind, e >> 2, v);
    for (unsigned lane = (unsigned)(e & 3u); lane < 4 && j < n; lane++) out[j++] = v[lane];
  }
}

void spry_rng_axpy(spry_rng_key key, spry_tangent_kind kind, uint64_t first, size_t n, float scale, float *out) {
  size_t j = 0;
  while (j < n) {
    uint64_t e = first + j;
    float v[4];
    block_values(key, kind, e >> 2, v);
    for (unsigned lane = (unsigned)(e & 3u); lane < 4 && j < n; lane++) out[j++] += scale * v[lane];
  }
}

void spry_rng_uniform(spry_rng_key key, uint64_t first, size_t n, double *out) {
  /* Two words per double: elements 2c, 2c+1 come from block c. */
  for (size_t j = 0; j < n; j++) {
    uint64_t e = first + j;
    uint32_t w[4];
    spry_rng_block(key, e >> 1, w);
    out[j] = (e & 1u) ? spry_u64_to_unit(w[2], w[3]) : spry_u64_to_unit(w[0], w[1]);
  }
}

double spry_stream_uniform(spry_rng_stream *s) {
  double u;
  spry_rng_uniform(s->key, s->next++, 1, &u);
  return u;
}

double spry_stream_normal(spry_rng_stream *s) {
  double u = spry_stream_uniform(s), v = spry_stream_uniform(s);
  return sqrt(-2.0 * log(u)) * cos(6.283185307179586476925 * v);
}

/* Marsaglia & Tsang (2000); shape < 1 by the boost Gamma(a) = Gamma(a+1) * U^(1/a). */
double spry_stream_gamma(spry_rng_stream *s, double shape) {
  SPRY_CHECK(shape > 0.0 && isfinite(shape), "gamma shape must be finite and > 0, got %g", shape);
  if (shape < 1.0) {
    double g = spry_stream_gamma(s, shape + 1.0);
    double u = spry_stream_uniform(s);
    return g * exp(log(u) / shape);
  }
  double d = shape - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
  for (;;) {
    double x, v;
    do {
      x = spry_stream_normal(s);
      v = 1.0 + c * x;
    } while (v <= 0.0);
    v = v * v * v;
    double u = spry_stream_uniform(s);
    if (u < 1.0 - 0.0331 * x * x * x * x) return d * v;
    if (log(u) < 0.5 * x * x + d * (1.0 - v + log(v))) return d * v;
  }
}

double spry_stream_log_gamma(spry_rng_stream *s, double shape) {
  SPRY_CHECK(shape > 0.0 && isfinite(shape), "gamma shape must be finite and > 0, got %g", shape);
  if (shape < 1.0) {
    double lg = log(spry_stream_gamma(s, shape + 1.0)); /* shape + 1 >= 1: a normal, positive double */
    return lg + log(spry_stream_uniform(s)) / shape;
  }
  return log(spry_stream_gamma(s, shape));
}

uint32_t spry_stream_below(spry_rng_stream *s, uint32_t n) {
  SPRY_CHECK(n > 0, "spry_stream_below: n must be > 0");
  /* 53-bit uniform scaled: bias < n / 2^53, negligible for the sizes used (n < 2^31). */
  uint32_t r = (uint32_t)(spry_stream_uniform(s) * (double)n);
  return r < n ? r : n - 1;
}

void spry_stream_shuffle(spry_rng_stream *s, int32_t *idx, size_t n) {
  for (size_t i = n; i > 1; i--) {
    size_t j = spry_stream_below(s, (uint32_t)i);
    int32_t t = idx[i - 1];
    idx[i - 1] = idx[j];
    idx[j] = t;
  }
}
