/* spry/rng.h -- counter-based random numbers (Philox4x32-10, Salmon et al. SC'11).
 *
 * Every random number in spry is a pure function of a key:
 *     (seed, purpose, round, client, step, k)  and the element index i.
 * It maps onto Philox as   key     = (seed, step)
 *                          counter = (i / 4, (k << 8) | purpose, client, round)
 * so two different keys never share a Philox block, and element i of any stream can be regenerated anywhere
 * (another rank, another order, after a restart) without generating elements 0..i-1. A stream is therefore not
 * a stateful generator: functions below take the key and an element range.
 * Limits: k < 2^24, purpose < 256, stream length < 2^34 elements.
 *
 * Normal variates use Box-Muller on the two pairs of uniforms of one Philox block: elements 4c..4c+3 come from
 * counter c. Rademacher variates use one bit of one 32-bit word per element. The exact mapping, precisely enough
 * to regenerate any tangent outside C: docs/runfile.md "Regenerating tangents".
 */
#ifndef SPRY_RNG_H
#define SPRY_RNG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* What a stream is used for; part of the key so purposes never collide. */
typedef enum {
  SPRY_RNG_TANGENT = 1,   /* forward-gradient / zeroth-order directions v_k */
  SPRY_RNG_INIT = 2,      /* parameter initialisation (backbone, LoRA A, head) */
  SPRY_RNG_DATA = 3,      /* batch orders (client = client id, round = t, step = local epoch); pretraining windows */
  SPRY_RNG_PARTITION = 4, /* client data partition (Dirichlet, quantity skew) */
  SPRY_RNG_SAMPLE = 5,    /* client sampling per round */
  SPRY_RNG_ASSIGN = 6,    /* random Spry block assignment per round */
  SPRY_RNG_DATASET = 7,   /* the synthetic dataset itself (examples, held-out split): never shares a key with the
                           * batch orders of purpose DATA, whatever the client ids and rounds */
  SPRY_RNG_TEST = 200     /* tests only */
} spry_rng_purpose;

typedef struct {
  uint32_t seed;
  uint32_t purpose;
  uint32_t round;
  uint32_t client;
  uint32_t step;
  uint32_t k;
} spry_rng_key;

/* The raw Philox4x32-10 bijection: out = Philox(ctr, key). */
void spry_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* Philox block number `block` of the stream named by `key`. */
void spry_rng_block(spry_rng_key key, uint64_t block, uint32_t out[4]);

/* Uniform in (0, 1): 24 random bits, never 0 or 1. */
static inline float spry_u32_to_unit(uint32_t x) { return ((float)(x >> 8) + 0.5f) * (1.0f / 16777216.0f); }
/* Uniform in (0, 1) with 53 bits from two words (used where float resolution matters: Gamma, Dirichlet). */
static inline double spry_u64_to_unit(uint32_t hi, uint32_t lo) {
  return ((double)((((uint64_t)hi << 32) | lo) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

typedef enum { SPRY_TANGENT_GAUSSIAN = 0, SPRY_TANGENT_RADEMACHER = 1 } spry_tangent_kind;

/* out[j] = element (first + j) of the stream, j < n: N(0,1) or +-1 with probability 1/2 each. */
void spry_rng_fill(spry_rng_key key, spry_tangent_kind kind, uint64_t first, size_t n, float *out);
/* out[j] += scale * element (first + j): perturbs a vector in place without a buffer for the direction. */
void spry_rng_axpy(spry_rng_key key, spry_tangent_kind kind, uint64_t first, size_t n, float scale, float *out);

/* Uniforms in (0,1), double precision: element (first + j). */
void spry_rng_uniform(spry_rng_key key, uint64_t first, size_t n, double *out);

/* A small sequential generator on top of a key, for algorithms that draw an unknown number of values
 * (Gamma rejection sampling, shuffles). Deterministic given the key. */
typedef struct {
  spry_rng_key key;
  uint64_t next; /* next element index */
} spry_rng_stream;
static inline spry_rng_stream spry_rng_stream_at(spry_rng_key key) {
  spry_rng_stream s = {key, 0};
  return s;
}
double spry_stream_uniform(spry_rng_stream *s);  /* (0,1) */
double spry_stream_normal(spry_rng_stream *s);   /* N(0,1) */
double spry_stream_gamma(spry_rng_stream *s, double shape); /* Gamma(shape, 1), shape > 0 */
/* log of a Gamma(shape, 1) draw, consuming exactly the uniforms spry_stream_gamma would (so it is the log of the
 * same draw), but finite for any shape > 0: for shape < 1 the boost Gamma(a+1) * U^(1/a) is summed as logs,
 * log Gamma(a+1) + log(U)/a, which spry_stream_gamma underflows to 0 for a <~ 0.01 (e.g. a = 1e-4: ~ -1e4). */
double spry_stream_log_gamma(spry_rng_stream *s, double shape);
uint32_t spry_stream_below(spry_rng_stream *s, uint32_t n); /* uniform in [0, n); relative bias < n / 2^53 */
/* Fisher-Yates shuffle of idx[0..n). */
void spry_stream_shuffle(spry_rng_stream *s, int32_t *idx, size_t n);

#ifdef __cplusplus
}
#endif
#endif
