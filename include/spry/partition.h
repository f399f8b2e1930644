/* spry/partition.h -- split a labelled training pool over N clients: label skew (Dirichlet), quantity skew,
 * and each client's local train/test split (THEORY.md sections 1 and 5.6).
 *
 * Input: labels[n] in [0, C) of the TRAIN pool (example i has label labels[i]). Output: for each client m its
 * train and test example lists (indices into the pool, ascending), its label counts, and its Dirichlet draw.
 * Three modes (`fl.partition`):
 *   POOL (v1, the default): the pool is dealt out without replacement. No pool index appears twice; when the
 *     client sizes sum to n (total_examples = 0), every pool index appears exactly once. Classes run out, so the
 *     realised proportions follow the Dirichlet draw only roughly (~0.6 of its skew at alpha <= 0.1).
 *   SAMPLED: each client draws its own examples from class pools that never run out: a client never holds an
 *     example twice, but two clients may hold the same example. Realised train proportions = the draw, rounded.
 *   HOMOGENEOUS: every client holds exactly the same train and the same test examples (THEORY 5.6: identical
 *     client objectives, so Theorem 1.1's b = 0 holds exactly).
 *
 * The partition is a pure function of (labels, configuration): same inputs, same bytes, on any rank.
 * Random numbers all come from purpose SPRY_RNG_PARTITION with the run seed; the streams are
 *   step 0, client m      : Gamma draws of client m's Dirichlet proportions (C draws, class order)
 *   step 1, client m      : element j = the uniform that picks the class of client m's j-th example (POOL)
 *   step 2, client 0, k=c : shuffle of class c's pool (POOL)
 *   step 3, client m      : client m's quantity-skew variate (one normal, or one uniform)
 *   step 4, client m      : shuffle of client m's examples before its local train/test split (POOL)
 *   step 5, client 0      : shuffle of the whole pool (POOL, IID, alpha = INFINITY)
 *   step 6, client m, k=c : client m's draw from class c's pool (SAMPLED)
 *   step 7, client 0, k=c : the shared draw from class c's pool (HOMOGENEOUS)
 *
 * Dirichlet draws (step 0, POOL and SAMPLED): C Gamma(alpha) variates g_c in class order from one stream
 * (spry_stream_gamma: Marsaglia-Tsang; alpha < 1 by the boost Gamma(alpha+1) * U^(1/alpha)). If every g_c is a
 * normal double (>= DBL_MIN), pi_c = g_c / sum g (the v1 arithmetic, bitwise). Otherwise (alpha <~ 0.05 makes
 * g_c underflow; v1 aborted) the SAME uniforms are replayed as logs, l_c = log Gamma(alpha+1) + log(U)/alpha
 * (spry_stream_log_gamma), and pi_c = exp(l_c - LSE(l)) with LSE(l) = max l + log sum exp(l - max l). Any
 * alpha > 0 works (tested down to 1e-4, where pi is one-hot up to ~e^-10000).
 *
 * Order of operations (this order IS the reproducibility contract):
 *  1. Sizes n_m (spry_partition_sizes): T examples over N clients; T = total_examples (or n) for POOL,
 *     N * examples_per_client for SAMPLED and HOMOGENEOUS (HOMOGENEOUS: n_m = examples_per_client, or n when 0).
 *     - EQUAL: n_m = floor(T/N), plus one for clients m < T mod N.
 *     - LOGNORMAL(sigma): raw r_m = exp(sigma z_m), z_m ~ N(0,1);  POWERLAW(a): r_m = u_m^(-1/a), u_m ~ U(0,1),
 *       i.e. Pareto sizes with P(r > x) = x^(-a) for x >= 1 (log sizes are Exponential with mean and std 1/a).
 *       The raw sizes are scaled to sum to T with every n_m >= min_size by water-filling (clients whose share
 *       would fall below min_size get exactly min_size; the remaining budget is re-shared in proportion to r_m
 *       among the others, repeated until nobody new falls below), then rounded to integers by largest remainder
 *       (floors, then +1 to the largest fractional parts, ties to the lower client id). So sum n_m = T exactly
 *       and the shape of the unclamped sizes is exactly that of r (log n_m = log r_m + const up to rounding).
 *     Every mode needs T >= N * min_size.
 *  2. Examples (POOL).
 *     - alpha = INFINITY (IID): shuffle the pool (step 5) and give client m the next n_m entries, m = 0..N-1.
 *     - alpha > 0 (label skew): client m draws pi_m ~ Dirichlet(alpha 1_C) (step 0, above). Each class pool is
 *       shuffled once (step 2) and examples are taken from its end, so taking from a
 *       pool is sampling without replacement. Draws are INTERLEAVED FAIRLY across clients: client m's j-th draw
 *       (j = 0..n_m-1) happens at "time" (j + 1/2) / n_m; draws run in increasing time, ties to the lower client
 *       id (compared exactly in integers). Each client is therefore always at the same fraction of its quota, so
 *       when classes run out, every client is affected at the same point of its sampling. Serving clients one
 *       after another (m = 0..N-1) would instead let the first clients drain the popular classes and force the
 *       last clients onto whatever is left: their label mix would not be Dirichlet at all. With equal sizes
 *       the schedule is plain round-robin: one draw per client per pass, m = 0..N-1.
 *       The class of a draw: u = element j of step-1 stream of client m; over the classes that still have
 *       examples, in class order 0..C-1, the first class whose cumulative pi_m exceeds u * (sum of pi_m over
 *       those classes) -- i.e. exhausted classes are dropped and the proportions renormalised. If every class
 *       client m has mass on is exhausted (remaining mass 0 in double), the class is drawn in proportion to the
 *       examples left in each class instead (a uniformly random remaining example).
 *  3. Local split (POOL): client m's examples are shuffled (step 4); the first n_test are its test set, the rest
 *     its train set; both lists are then sorted ascending. n_test = round(test_fraction * n_m), at least 1 when
 *     test_fraction > 0, and at most n_m - 1 (every client keeps >= 1 training example).
 *
 * Sampled and homogeneous partitions (after step 1; n_test and n_train = n_m - n_test by the rule of step 3):
 *  - SAMPLED, client m: pi_m from step 0 (1/C everywhere for alpha = INFINITY). Class counts by largest remainder
 *    (floors, then +1 to the largest fractional parts, ties to the lower class), SEPARATELY for the two splits:
 *    train_mc = LR(n_train pi_m)_c, test_mc = LR(n_test pi_m)_c. Hence the realised train proportions
 *    pihat_mc = train_mc / n_train satisfy |pihat_mc - pi_mc| < 1/n_train for every class and
 *    TV(pihat_m, pi_m) = (1/2) sum_c |pihat_mc - pi_mc| <= C / (4 n_train) (the positive errors are on the r
 *    rounded-up classes, the negative ones on the C - r others, both sums equal, so TV n_train <= r (C-r)/C).
 *  - HOMOGENEOUS: class counts k_c = LR(n_m * n_c / n)_c of the pool's class sizes n_c, then
 *    test_c = LR(n_test * k_c / n_m)_c and train_c = k_c - test_c (exact integer arithmetic); proportions = the
 *    realised train proportions (distance 0). Drawn once (as "client 0") and copied to every client.
 *  - The draw of k = train_c + test_c examples of class c: class c's list of pool indices in ascending order,
 *    partially Fisher-Yates shuffled by the stream (step 6, client m, k = c) or (step 7, client 0, k = c): for
 *    i = 0..k-1, swap entries i and i + spry_stream_below(n_c - i); the first test_c entries are test, the next
 *    train_c train. Every client starts from the ascending list, so clients' draws are independent and may
 *    share examples, and a client never holds an example twice (train and test disjoint).
 *  - A class pool smaller than a client's k_c is a fatal error naming fl.examples_per_client and the smallest
 *    class pool (capping would silently break "realised = drawn", the point of this mode); examples_per_client
 *    <= the smallest class pool rules it out for every seed.
 *
 * Memory: spry_partition_create allocates everything under the label "partition"; spry_partition_free(&p)
 * releases it and nulls the pointer. Pool indices and counts are int32 (the pool has < 2^31 examples, and the
 * clients' lists together too: N * examples_per_client < 2^31).
 */
#ifndef SPRY_PARTITION_H
#define SPRY_PARTITION_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { SPRY_SIZES_EQUAL = 0, SPRY_SIZES_LOGNORMAL = 1, SPRY_SIZES_POWERLAW = 2 } spry_size_mode;
typedef enum { SPRY_PARTITION_POOL = 0, SPRY_PARTITION_SAMPLED = 1, SPRY_PARTITION_HOMOGENEOUS = 2 } spry_partition_mode;

typedef struct {
  int n_clients;          /* N >= 1 */
  int n_classes;          /* C >= 1 */
  double alpha;           /* Dirichlet concentration > 0; INFINITY = IID */
  uint32_t seed;          /* run seed */
  double test_fraction;   /* in [0, 1): share of each client's examples held out as its local test set */
  size_t total_examples;  /* T: examples handed out; 0 = the whole pool (n) */
  spry_size_mode sizes;   /* client sizes: equal shares or quantity skew */
  double size_param;      /* sigma (> 0) for LOGNORMAL, tail exponent a (> 0) for POWERLAW; unused for EQUAL */
  int min_size;           /* >= 1: smallest client size (2 lets a client have one train and one test example) */
  spry_partition_mode mode;
  int examples_per_client; /* SAMPLED: mean n_m (>= min_size); HOMOGENEOUS: n_m (0 = n); POOL: unused (0) */
} spry_partition_config;

/* Defaults: POOL, IID, equal sizes, test_fraction 0.2, min_size 2, whole pool. Caller sets n_clients, n_classes,
 * seed. */
spry_partition_config spry_partition_config_default(void);

typedef struct {
  int n_clients, n_classes;
  size_t n_pool;          /* n */
  size_t n_used;          /* T = sum of sizes */
  int32_t *size;          /* [N] n_m = train + test examples of client m */
  int32_t *train_offset;  /* [N+1] train examples of m: train_idx[train_offset[m] .. train_offset[m+1]) */
  int32_t *train_idx;     /* [sum train] pool indices, ascending per client */
  int32_t *test_offset;   /* [N+1] */
  int32_t *test_idx;      /* [sum test] */
  int32_t *train_counts;  /* [N*C] train_counts[m*C + c] = train examples of class c held by client m */
  int32_t *test_counts;   /* [N*C] */
  double *proportions;    /* [N*C] client m's drawn pi_m (rows sum to 1); 1/C everywhere for IID; HOMOGENEOUS: the
                           * realised train proportions */
  int32_t *pool_counts;   /* [C] examples of class c in the pool */
  spry_partition_mode mode;
} spry_partition;

/* Validate (fatal error naming the field, the value and what is allowed) and build the partition. */
spry_partition *spry_partition_create(const int32_t *labels, size_t n, const spry_partition_config *cfg);
void spry_partition_free(spry_partition **p);

/* "pool", "sampled" or "homogeneous" (the fl.partition names). */
const char *spry_partition_mode_name(spry_partition_mode mode);
/* out[C] = client m's realised train proportions pihat_m = train_counts / n_train. */
void spry_partition_realised(const spry_partition *p, int m, double *out);
/* Total variation between realised and drawn: (1/2) sum_c |pihat_mc - pi_mc| (in [0, 1]). */
double spry_partition_distance(const spry_partition *p, int m);

/* Step 1 alone: sizes[N] summing to `total` (>= N * min_size), per cfg->sizes. Used by spry_partition_create. */
void spry_partition_sizes(const spry_partition_config *cfg, size_t total, int32_t *sizes);

static inline int32_t spry_partition_n_train(const spry_partition *p, int m) {
  return p->train_offset[m + 1] - p->train_offset[m];
}
static inline int32_t spry_partition_n_test(const spry_partition *p, int m) {
  return p->test_offset[m + 1] - p->test_offset[m];
}
static inline const int32_t *spry_partition_train(const spry_partition *p, int m) {
  return p->train_idx + p->train_offset[m];
}
static inline const int32_t *spry_partition_test(const spry_partition *p, int m) {
  return p->test_idx + p->test_offset[m];
}

#ifdef __cplusplus
}
#endif
#endif
