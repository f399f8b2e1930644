/* Client data partition: sizes, Dirichlet label skew with fair interleaved draws, local train/test split.
 * The order of operations is the reproducibility contract; it is written out in spry/partition.h. */
#include "spry/partition.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "spry/core.h"
#include "spry/rng.h"

#define PART_LABEL "partition"

/* Stream steps under SPRY_RNG_PARTITION (see the header). */
enum {
  STEP_DIRICHLET = 0,
  STEP_CLASS = 1,
  STEP_POOL = 2,
  STEP_SIZE = 3,
  STEP_LOCAL = 4,
  STEP_IID = 5,
  STEP_SAMPLE = 6,     /* sampled: client m's draw from class c's pool (k = c) */
  STEP_HOMOGENEOUS = 7 /* homogeneous: the shared draw from class c's pool (client 0, k = c) */
};

static spry_rng_key part_key(uint32_t seed, uint32_t step, uint32_t client, uint32_t k) {
  return (spry_rng_key){.seed = seed, .purpose = SPRY_RNG_PARTITION, .client = client, .step = step, .k = k};
}

spry_partition_config spry_partition_config_default(void) {
  return (spry_partition_config){.n_clients = 1,
                                 .n_classes = 1,
                                 .alpha = INFINITY,
                                 .seed = 0,
                                 .test_fraction = 0.2,
                                 .total_examples = 0,
                                 .sizes = SPRY_SIZES_EQUAL,
                                 .size_param = 1.0,
                                 .min_size = 2,
                                 .mode = SPRY_PARTITION_POOL,
                                 .examples_per_client = 0};
}

const char *spry_partition_mode_name(spry_partition_mode mode) {
  switch (mode) {
    case SPRY_PARTITION_POOL: return "pool";
    case SPRY_PARTITION_SAMPLED: return "sampled";
    case SPRY_PARTITION_HOMOGENEOUS: return "homogeneous";
  }
  return "unknown";
}

static void check_size_config(const spry_partition_config *cfg, size_t total) {
  SPRY_CHECK(cfg->n_clients >= 1, "partition: n_clients = %d, must be >= 1", cfg->n_clients);
  SPRY_CHECK(cfg->min_size >= 1, "partition: min_size = %d, must be >= 1", cfg->min_size);
  SPRY_CHECK(cfg->sizes == SPRY_SIZES_EQUAL || cfg->sizes == SPRY_SIZES_LOGNORMAL ||
                 cfg->sizes == SPRY_SIZES_POWERLAW,
             "partition: sizes = %d, must be EQUAL (0), LOGNORMAL (1) or POWERLAW (2)", (int)cfg->sizes);
  SPRY_CHECK(cfg->sizes == SPRY_SIZES_EQUAL || (isfinite(cfg->size_param) && cfg->size_param > 0.0),
             "partition: size_param = %g, must be finite and > 0 (lognormal sigma / power-law exponent)",
             cfg->size_param);
  SPRY_CHECK(total <= (size_t)INT32_MAX, "partition: %zu examples, at most 2^31-1 supported", total);
  SPRY_CHECK(total >= (size_t)cfg->n_clients * (size_t)cfg->min_size,
             "partition: %zu examples cannot give %d clients min_size = %d each", total, cfg->n_clients,
             cfg->min_size);
}

typedef struct {
  double frac;
  int m;
} frac_entry;

/* Largest fractional part first, then the lower client id: a total order, so qsort's result is unique. */
static int cmp_frac_desc(const void *a, const void *b) {
  const frac_entry *x = a, *y = b;
  if (x->frac != y->frac) return x->frac > y->frac ? -1 : 1;
  return (x->m > y->m) - (x->m < y->m);
}

void spry_partition_sizes(const spry_partition_config *cfg, size_t total, int32_t *sizes) {
  check_size_config(cfg, total);
  const int N = cfg->n_clients;
  const int64_t T = (int64_t)total, mn = cfg->min_size;
  if (cfg->sizes == SPRY_SIZES_EQUAL) {
    for (int m = 0; m < N; m++) sizes[m] = (int32_t)(T / N + (m < T % N ? 1 : 0));
    return;
  }
  /* Raw sizes in log space, shifted by their maximum before exp so nothing overflows (tiny ones may underflow
   * to 0 and are then clamped to min_size, which is what they would get anyway). */
  double *r = spry_alloc(PART_LABEL, (size_t)N * sizeof(double));
  double *x = spry_alloc(PART_LABEL, (size_t)N * sizeof(double));
  uint8_t *clamped = spry_alloc(PART_LABEL, (size_t)N);
  frac_entry *order = spry_alloc(PART_LABEL, (size_t)N * sizeof(frac_entry));
  double log_max = -INFINITY;
  for (int m = 0; m < N; m++) {
    spry_rng_stream s = spry_rng_stream_at(part_key(cfg->seed, STEP_SIZE, (uint32_t)m, 0));
    r[m] = cfg->sizes == SPRY_SIZES_LOGNORMAL ? cfg->size_param * spry_stream_normal(&s)
                                               : -log(spry_stream_uniform(&s)) / cfg->size_param;
    if (r[m] > log_max) log_max = r[m];
  }
  for (int m = 0; m < N; m++) r[m] = exp(r[m] - log_max);

  /* Water-filling: clamp to min_size whoever's proportional share falls below it, re-share the rest. */
  int n_clamped = 0;
  for (;;) {
    double S = 0.0;
    for (int m = 0; m < N; m++)
      if (!clamped[m]) S += r[m];
    double B = (double)(T - mn * n_clamped);
    int newly = 0;
    for (int m = 0; m < N; m++) {
      if (clamped[m]) continue;
      x[m] = S > 0.0 ? B * r[m] / S : 0.0;
      if (x[m] < (double)mn) clamped[m] = 1, newly++;
    }
    n_clamped += newly;
    if (newly == 0 || n_clamped == N) break;
  }
  /* Largest remainder rounding; free clients have x >= min_size, so their floors are >= min_size too. */
  int64_t sum = 0;
  for (int m = 0; m < N; m++) {
    double f = clamped[m] ? (double)mn : floor(x[m]);
    sizes[m] = (int32_t)f;
    order[m] = (frac_entry){clamped[m] ? 0.0 : x[m] - f, m};
    sum += sizes[m];
  }
  qsort(order, (size_t)N, sizeof *order, cmp_frac_desc);
  int64_t left = T - sum;
  for (int i = 0; left > 0; i = (i + 1) % N, left--) sizes[order[i].m]++;
  /* Floating drift could overshoot by a unit or two: take back from the smallest fractions above min_size. */
  for (int i = N - 1; left < 0; i = (i + N - 1) % N)
    if (sizes[order[i].m] > mn) sizes[order[i].m]--, left++;
  spry_free(&r);
  spry_free(&x);
  spry_free(&clamped);
  spry_free(&order);
}

/* ---- label skew ------------------------------------------------------------------------------------------ */

/* Fair interleaving: client a's next draw (number drawn[a]) is due at (2 drawn[a] + 1) / (2 size[a]). */
typedef struct {
  const int32_t *drawn, *size;
  int32_t *heap;
  int n;
} draw_queue;

static int due_before(const draw_queue *q, int32_t a, int32_t b) {
  uint64_t lhs = (2u * (uint64_t)q->drawn[a] + 1u) * (uint64_t)q->size[b];
  uint64_t rhs = (2u * (uint64_t)q->drawn[b] + 1u) * (uint64_t)q->size[a];
  if (lhs != rhs) return lhs < rhs;
  return a < b;
}

static void sift_down(draw_queue *q, int i) {
  for (;;) {
    int l = 2 * i + 1, r = l + 1, best = i;
    if (l < q->n && due_before(q, q->heap[l], q->heap[best])) best = l;
    if (r < q->n && due_before(q, q->heap[r], q->heap[best])) best = r;
    if (best == i) return;
    int32_t t = q->heap[i];
    q->heap[i] = q->heap[best];
    q->heap[best] = t;
    i = best;
  }
}

/* The class of one draw: exhausted classes dropped, pi renormalised over the rest (see the header). */
static int choose_class(const double *pi, const int32_t *remaining, int C, double u) {
  double mass = 0.0;
  for (int c = 0; c < C; c++)
    if (remaining[c] > 0) mass += pi[c];
  if (mass > 0.0) {
    double target = u * mass, cum = 0.0;
    int last = -1;
    for (int c = 0; c < C; c++) {
      if (remaining[c] <= 0 || pi[c] <= 0.0) continue;
      last = c;
      cum += pi[c];
      if (target < cum) return c;
    }
    return last; /* rounding left target >= the final cumulative sum */
  }
  int64_t left = 0;
  for (int c = 0; c < C; c++) left += remaining[c] > 0 ? remaining[c] : 0;
  int64_t target = (int64_t)(u * (double)left);
  if (target >= left) target = left - 1;
  for (int c = 0; c < C; c++) {
    if (remaining[c] <= 0) continue;
    if (target < remaining[c]) return c;
    target -= remaining[c];
  }
  spry_fatal("partition: no example left to draw (internal error)");
}

/* Client m's pi_m ~ Dirichlet(alpha 1_C) from its step-0 stream (the header: "Dirichlet draws"). */
static void dirichlet(uint32_t seed, int m, double alpha, int C, double *pi) {
  spry_rng_key key = part_key(seed, STEP_DIRICHLET, (uint32_t)m, 0);
  spry_rng_stream s = spry_rng_stream_at(key);
  double sum = 0.0;
  int normal = 1;
  for (int c = 0; c < C; c++) {
    sum += pi[c] = spry_stream_gamma(&s, alpha);
    if (!(pi[c] >= DBL_MIN)) normal = 0; /* zero or subnormal: precision lost, redo in logs */
  }
  if (normal && isfinite(sum)) {
    for (int c = 0; c < C; c++) pi[c] /= sum;
    return;
  }
  s = spry_rng_stream_at(key); /* the same uniforms again, as logs, normalised by log-sum-exp */
  double top = -INFINITY;
  for (int c = 0; c < C; c++) {
    pi[c] = spry_stream_log_gamma(&s, alpha);
    if (pi[c] > top) top = pi[c];
  }
  SPRY_CHECK(isfinite(top), "partition: Dirichlet draw of client %d is not finite (alpha = %g)", m, alpha);
  double z = 0.0;
  for (int c = 0; c < C; c++) z += exp(pi[c] - top);
  double lse = top + log(z);
  for (int c = 0; c < C; c++) pi[c] = exp(pi[c] - lse);
}

static void label_skew(const int32_t *labels, size_t n, const spry_partition_config *cfg, spry_partition *p,
                       const int32_t *ex_offset, int32_t *ex) {
  const int N = cfg->n_clients, C = cfg->n_classes;
  for (int m = 0; m < N; m++) dirichlet(cfg->seed, m, cfg->alpha, C, p->proportions + (size_t)m * C);
  /* Class pools, each in ascending pool order and then shuffled by its own stream. */
  int32_t *pool_offset = spry_alloc(PART_LABEL, ((size_t)C + 1) * sizeof(int32_t));
  int32_t *remaining = spry_alloc(PART_LABEL, (size_t)C * sizeof(int32_t));
  int32_t *pool = spry_alloc(PART_LABEL, n * sizeof(int32_t));
  for (size_t i = 0; i < n; i++) pool_offset[labels[i] + 1]++;
  for (int c = 0; c < C; c++) pool_offset[c + 1] += pool_offset[c];
  for (size_t i = 0; i < n; i++) pool[pool_offset[labels[i]] + remaining[labels[i]]++] = (int32_t)i;
  for (int c = 0; c < C; c++) {
    spry_rng_stream s = spry_rng_stream_at(part_key(cfg->seed, STEP_POOL, 0, (uint32_t)c));
    spry_stream_shuffle(&s, pool + pool_offset[c], (size_t)remaining[c]);
  }
  /* Fair interleaved draws. Every client has size >= min_size >= 1, so all start in the queue. */
  int32_t *drawn = spry_alloc(PART_LABEL, (size_t)N * sizeof(int32_t));
  draw_queue q = {.drawn = drawn, .size = p->size, .heap = spry_alloc(PART_LABEL, (size_t)N * sizeof(int32_t)),
                  .n = N};
  for (int m = 0; m < N; m++) q.heap[m] = m;
  for (int i = N / 2 - 1; i >= 0; i--) sift_down(&q, i);
  while (q.n > 0) {
    int32_t m = q.heap[0], j = drawn[m];
    double u;
    spry_rng_uniform(part_key(cfg->seed, STEP_CLASS, (uint32_t)m, 0), (uint64_t)j, 1, &u);
    int c = choose_class(p->proportions + (size_t)m * C, remaining, C, u);
    ex[ex_offset[m] + j] = pool[pool_offset[c] + --remaining[c]];
    drawn[m] = j + 1;
    if (drawn[m] == p->size[m]) q.heap[0] = q.heap[--q.n];
    sift_down(&q, 0);
  }
  spry_free(&pool_offset);
  spry_free(&remaining);
  spry_free(&pool);
  spry_free(&drawn);
  spry_free(&q.heap);
}

/* ---- sampled and homogeneous: class counts by largest remainder, draws from class pools that never run out --- */

typedef struct {
  double frac;
  int c;
} class_frac;

/* Largest fractional part first, then the lower class id (a total order: qsort's result is unique). */
static int cmp_class_frac(const void *a, const void *b) {
  const class_frac *x = a, *y = b;
  if (x->frac != y->frac) return x->frac > y->frac ? -1 : 1;
  return (x->c > y->c) - (x->c < y->c);
}

/* Largest-remainder rounding of x[c] = total * w[c] (w a probability vector): out[c] = floor(x[c]), then +1 to the
 * classes with the largest fractional parts (ties to the lower class) until sum out = total. |out[c] - x[c]| < 1.
 * If w sums to slightly more than 1 in double and the floors overshoot, units are taken back from the smallest
 * fractional parts. */
static void round_counts(const double *w, int C, int32_t total, int32_t *out, class_frac *order) {
  int64_t sum = 0;
  for (int c = 0; c < C; c++) {
    double x = (double)total * w[c], f = floor(x);
    out[c] = (int32_t)f;
    order[c] = (class_frac){x - f, c};
    sum += out[c];
  }
  qsort(order, (size_t)C, sizeof *order, cmp_class_frac);
  int64_t left = total - sum;
  for (int i = 0; left > 0; i = (i + 1) % C, left--) out[order[i].c]++;
  for (int i = C - 1; left < 0; i = (i + C - 1) % C)
    if (out[order[i].c] > 0) out[order[i].c]--, left++;
}

/* The same rounding of x[c] = total * num[c] / den in exact integers (sum num = den): no floating error at all. */
static void round_counts_exact(const int64_t *num, int C, int64_t den, int32_t total, int32_t *out,
                               class_frac *order) {
  int64_t sum = 0;
  for (int c = 0; c < C; c++) {
    int64_t x = (int64_t)total * num[c];
    out[c] = (int32_t)(x / den);
    order[c] = (class_frac){(double)(x % den), c}; /* remainders < den < 2^53: exact in double */
    sum += out[c];
  }
  qsort(order, (size_t)C, sizeof *order, cmp_class_frac);
  for (int64_t left = total - sum, i = 0; left > 0; i = (i + 1) % C, left--) out[order[i].c]++;
}

/* k examples of class c without replacement: a partial Fisher-Yates shuffle of the class list cls[0..n_c)
 * (ascending pool indices) with the stream of `key`, step i swapping cls[i] with cls[i + below(n_c - i)];
 * dst[i] = cls[i] after step i. The swaps are then undone in reverse, so cls is ascending again for the next draw
 * (O(k), whatever n_c). */
static void draw_from_class(int32_t *cls, int32_t n_c, int32_t k, spry_rng_key key, int32_t *dst, int32_t *undo) {
  spry_rng_stream s = spry_rng_stream_at(key);
  for (int32_t i = 0; i < k; i++) {
    int32_t j = i + (int32_t)spry_stream_below(&s, (uint32_t)(n_c - i));
    int32_t t = cls[i];
    cls[i] = cls[j];
    cls[j] = t;
    undo[i] = j;
    dst[i] = cls[i];
  }
  for (int32_t i = k; i-- > 0;) {
    int32_t t = cls[i];
    cls[i] = cls[undo[i]];
    cls[undo[i]] = t;
  }
}

/* n_test of a client of size sz (the local split rule of the header, step 3). */
static int32_t local_n_test(double test_fraction, int32_t sz) {
  int32_t nt = (int32_t)floor(test_fraction * sz + 0.5);
  if (test_fraction > 0.0 && nt < 1) nt = 1;
  if (nt > sz - 1) nt = sz - 1;
  return nt;
}

static int cmp_int32(const void *a, const void *b);

static int32_t min_class_pool(const int32_t *pool_counts, int C) {
  int32_t mn = INT32_MAX;
  for (int c = 0; c < C; c++)
    if (pool_counts[c] < mn) mn = pool_counts[c];
  return mn;
}

/* Modes sampled and homogeneous (the header, "Sampled and homogeneous partitions"). p->size is set. */
static void class_sampled(const int32_t *labels, size_t n, const spry_partition_config *cfg, spry_partition *p) {
  const int N = cfg->n_clients, C = cfg->n_classes;
  const int homog = cfg->mode == SPRY_PARTITION_HOMOGENEOUS;
  int32_t *cls_offset = spry_alloc(PART_LABEL, ((size_t)C + 1) * sizeof(int32_t));
  int32_t *cls = spry_alloc(PART_LABEL, (n ? n : 1) * sizeof(int32_t));
  int32_t *fill = spry_alloc(PART_LABEL, (size_t)C * sizeof(int32_t));
  for (int c = 0; c < C; c++) cls_offset[c + 1] = cls_offset[c] + p->pool_counts[c];
  for (size_t i = 0; i < n; i++) cls[cls_offset[labels[i]] + fill[labels[i]]++] = (int32_t)i;
  int32_t max_size = 0;
  for (int m = 0; m < N; m++) {
    int32_t nt = local_n_test(cfg->test_fraction, p->size[m]);
    p->test_offset[m + 1] = p->test_offset[m] + nt;
    p->train_offset[m + 1] = p->train_offset[m] + (p->size[m] - nt);
    if (p->size[m] > max_size) max_size = p->size[m];
  }
  p->train_idx = spry_alloc(PART_LABEL, (size_t)(p->train_offset[N] ? p->train_offset[N] : 1) * sizeof(int32_t));
  p->test_idx = spry_alloc(PART_LABEL, (size_t)(p->test_offset[N] ? p->test_offset[N] : 1) * sizeof(int32_t));
  int32_t *got = spry_alloc(PART_LABEL, (size_t)max_size * sizeof(int32_t));
  int32_t *undo = spry_alloc(PART_LABEL, (size_t)max_size * sizeof(int32_t));
  class_frac *order = spry_alloc(PART_LABEL, (size_t)C * sizeof(class_frac));
  int64_t *num = spry_alloc(PART_LABEL, (size_t)C * sizeof(int64_t));
  for (int m = 0; m < (homog ? 1 : N); m++) {
    int32_t nt = spry_partition_n_test(p, m), ntr = spry_partition_n_train(p, m);
    int32_t *trc = p->train_counts + (size_t)m * C, *tec = p->test_counts + (size_t)m * C;
    double *pi = p->proportions + (size_t)m * C;
    if (homog) { /* k_c = round(n n_c / n_pool), then the test share of each class = round(nt k_c / n) */
      for (int c = 0; c < C; c++) num[c] = p->pool_counts[c];
      round_counts_exact(num, C, (int64_t)n, p->size[0], fill, order);
      for (int c = 0; c < C; c++) num[c] = fill[c];
      round_counts_exact(num, C, p->size[0], nt, tec, order);
      for (int c = 0; c < C; c++) trc[c] = fill[c] - tec[c];
    } else {
      if (isinf(cfg->alpha))
        for (int c = 0; c < C; c++) pi[c] = 1.0 / C;
      else
        dirichlet(cfg->seed, m, cfg->alpha, C, pi);
      round_counts(pi, C, ntr, trc, order);
      round_counts(pi, C, nt, tec, order);
    }
    int32_t *test = p->test_idx + p->test_offset[m], *train = p->train_idx + p->train_offset[m];
    int32_t at_test = 0, at_train = 0;
    for (int c = 0; c < C; c++) {
      int32_t k = trc[c] + tec[c];
      if (k == 0) continue;
      if (k > p->pool_counts[c])
        spry_fatal("partition (fl.partition = %s): client %d needs %d examples of class %d (%d train + %d test; "
                   "its proportion %.4g of n_m = %d), but the train pool has only %d of that class. Allowed: "
                   "fl.examples_per_client (now %d; with fl.quantity_skew the largest client size counts) at most "
                   "%d, the size of the smallest class pool, rules this out for every seed",
                   spry_partition_mode_name(cfg->mode), m, k, c, trc[c], tec[c], pi[c], p->size[m],
                   p->pool_counts[c], cfg->examples_per_client, min_class_pool(p->pool_counts, C));
      spry_rng_key key = homog ? part_key(cfg->seed, STEP_HOMOGENEOUS, 0, (uint32_t)c)
                               : part_key(cfg->seed, STEP_SAMPLE, (uint32_t)m, (uint32_t)c);
      draw_from_class(cls + cls_offset[c], p->pool_counts[c], k, key, got, undo);
      memcpy(test + at_test, got, (size_t)tec[c] * sizeof(int32_t));
      memcpy(train + at_train, got + tec[c], (size_t)trc[c] * sizeof(int32_t));
      at_test += tec[c];
      at_train += trc[c];
    }
    qsort(test, (size_t)nt, sizeof(int32_t), cmp_int32);
    qsort(train, (size_t)ntr, sizeof(int32_t), cmp_int32);
  }
  if (homog) { /* every client is client 0; its proportions are its realised train proportions */
    int32_t ntr = spry_partition_n_train(p, 0), nt = spry_partition_n_test(p, 0);
    for (int c = 0; c < C; c++) p->proportions[c] = ntr ? (double)p->train_counts[c] / ntr : 0.0;
    for (int m = 1; m < N; m++) {
      memcpy(p->train_idx + p->train_offset[m], p->train_idx, (size_t)ntr * sizeof(int32_t));
      memcpy(p->test_idx + p->test_offset[m], p->test_idx, (size_t)nt * sizeof(int32_t));
      memcpy(p->train_counts + (size_t)m * C, p->train_counts, (size_t)C * sizeof(int32_t));
      memcpy(p->test_counts + (size_t)m * C, p->test_counts, (size_t)C * sizeof(int32_t));
      memcpy(p->proportions + (size_t)m * C, p->proportions, (size_t)C * sizeof(double));
    }
  }
  spry_free(&cls_offset);
  spry_free(&cls);
  spry_free(&fill);
  spry_free(&got);
  spry_free(&undo);
  spry_free(&order);
  spry_free(&num);
}

static int cmp_int32(const void *a, const void *b) {
  int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
  return (x > y) - (x < y);
}

spry_partition *spry_partition_create(const int32_t *labels, size_t n, const spry_partition_config *cfg) {
  SPRY_CHECK(cfg != NULL && (labels != NULL || n == 0), "spry_partition_create: NULL labels or configuration");
  SPRY_CHECK(cfg->n_classes >= 1, "partition: n_classes = %d, must be >= 1", cfg->n_classes);
  SPRY_CHECK(cfg->alpha > 0.0 && !isnan(cfg->alpha),
             "partition: alpha = %g, must be > 0 (INFINITY for IID)", cfg->alpha);
  SPRY_CHECK(cfg->test_fraction >= 0.0 && cfg->test_fraction < 1.0,
             "partition: test_fraction = %g, must be in [0, 1)", cfg->test_fraction);
  SPRY_CHECK(n <= (size_t)INT32_MAX, "partition: pool of %zu examples, at most 2^31-1 supported", n);
  SPRY_CHECK(cfg->mode == SPRY_PARTITION_POOL || cfg->mode == SPRY_PARTITION_SAMPLED ||
                 cfg->mode == SPRY_PARTITION_HOMOGENEOUS,
             "partition: mode = %d, must be POOL (0), SAMPLED (1) or HOMOGENEOUS (2)", (int)cfg->mode);
  SPRY_CHECK(cfg->examples_per_client >= 0, "partition: examples_per_client = %d, must be >= 0",
             cfg->examples_per_client);
  const int N = cfg->n_clients, C = cfg->n_classes;
  size_t T = cfg->total_examples ? cfg->total_examples : n;
  if (cfg->mode == SPRY_PARTITION_SAMPLED) {
    SPRY_CHECK(cfg->examples_per_client >= cfg->min_size,
               "partition: fl.partition = sampled needs fl.examples_per_client >= %d (the smallest client), got %d",
               cfg->min_size, cfg->examples_per_client);
    SPRY_CHECK(cfg->total_examples == 0, "partition: total_examples must be 0 with mode SAMPLED");
    T = (size_t)N * (size_t)cfg->examples_per_client;
  } else if (cfg->mode == SPRY_PARTITION_HOMOGENEOUS) {
    size_t each = cfg->examples_per_client ? (size_t)cfg->examples_per_client : n;
    SPRY_CHECK(cfg->sizes == SPRY_SIZES_EQUAL,
               "partition: fl.partition = homogeneous gives every client the same examples; fl.quantity_skew must be "
               "none");
    SPRY_CHECK(each <= n && each >= (size_t)cfg->min_size,
               "partition: fl.partition = homogeneous: fl.examples_per_client = %d, allowed: 0 (the whole train pool "
               "of %zu) or %d .. %zu", cfg->examples_per_client, n, cfg->min_size, n);
    SPRY_CHECK(cfg->total_examples == 0, "partition: total_examples must be 0 with mode HOMOGENEOUS");
    T = (size_t)N * each;
  } else {
    SPRY_CHECK(T <= n, "partition: total_examples = %zu exceeds the pool size %zu", T, n);
  }
  check_size_config(cfg, T);
  for (size_t i = 0; i < n; i++)
    SPRY_CHECK(labels[i] >= 0 && labels[i] < C, "partition: label %d of example %zu is outside [0, n_classes = %d)",
               labels[i], i, C);

  spry_partition *p = spry_alloc(PART_LABEL, sizeof *p);
  p->n_clients = N;
  p->n_classes = C;
  p->n_pool = n;
  p->n_used = T;
  p->size = spry_alloc(PART_LABEL, (size_t)N * sizeof(int32_t));
  p->train_offset = spry_alloc(PART_LABEL, ((size_t)N + 1) * sizeof(int32_t));
  p->test_offset = spry_alloc(PART_LABEL, ((size_t)N + 1) * sizeof(int32_t));
  p->train_counts = spry_alloc(PART_LABEL, (size_t)N * (size_t)C * sizeof(int32_t));
  p->test_counts = spry_alloc(PART_LABEL, (size_t)N * (size_t)C * sizeof(int32_t));
  p->proportions = spry_alloc(PART_LABEL, (size_t)N * (size_t)C * sizeof(double));
  p->pool_counts = spry_alloc(PART_LABEL, (size_t)C * sizeof(int32_t));
  p->mode = cfg->mode;
  for (size_t i = 0; i < n; i++) p->pool_counts[labels[i]]++;

  /* 1. sizes */
  spry_partition_sizes(cfg, T, p->size);
  if (cfg->mode != SPRY_PARTITION_POOL) {
    class_sampled(labels, n, cfg, p);
    return p;
  }
  int32_t *ex_offset = spry_alloc(PART_LABEL, ((size_t)N + 1) * sizeof(int32_t));
  for (int m = 0; m < N; m++) ex_offset[m + 1] = ex_offset[m] + p->size[m];
  int32_t *ex = spry_alloc(PART_LABEL, (T ? T : 1) * sizeof(int32_t));

  /* 2. examples */
  if (isinf(cfg->alpha)) {
    for (size_t i = 0; i < (size_t)N * C; i++) p->proportions[i] = 1.0 / C;
    int32_t *perm = spry_alloc(PART_LABEL, (n ? n : 1) * sizeof(int32_t));
    for (size_t i = 0; i < n; i++) perm[i] = (int32_t)i;
    spry_rng_stream s = spry_rng_stream_at(part_key(cfg->seed, STEP_IID, 0, 0));
    spry_stream_shuffle(&s, perm, n);
    memcpy(ex, perm, T * sizeof(int32_t));
    spry_free(&perm);
  } else {
    label_skew(labels, n, cfg, p, ex_offset, ex);
  }

  /* 3. local train/test split */
  int32_t n_test_total = 0;
  for (int m = 0; m < N; m++) {
    int32_t sz = p->size[m];
    int32_t nt = (int32_t)floor(cfg->test_fraction * sz + 0.5);
    if (cfg->test_fraction > 0.0 && nt < 1) nt = 1;
    if (nt > sz - 1) nt = sz - 1;
    p->test_offset[m + 1] = p->test_offset[m] + nt;
    p->train_offset[m + 1] = p->train_offset[m] + (sz - nt);
    n_test_total += nt;
  }
  int32_t n_train_total = (int32_t)T - n_test_total;
  p->train_idx = spry_alloc(PART_LABEL, (size_t)(n_train_total ? n_train_total : 1) * sizeof(int32_t));
  p->test_idx = spry_alloc(PART_LABEL, (size_t)(n_test_total ? n_test_total : 1) * sizeof(int32_t));
  for (int m = 0; m < N; m++) {
    int32_t *mine = ex + ex_offset[m];
    spry_rng_stream s = spry_rng_stream_at(part_key(cfg->seed, STEP_LOCAL, (uint32_t)m, 0));
    spry_stream_shuffle(&s, mine, (size_t)p->size[m]);
    int32_t nt = spry_partition_n_test(p, m), ntr = spry_partition_n_train(p, m);
    int32_t *test = p->test_idx + p->test_offset[m], *train = p->train_idx + p->train_offset[m];
    memcpy(test, mine, (size_t)nt * sizeof(int32_t));
    memcpy(train, mine + nt, (size_t)ntr * sizeof(int32_t));
    qsort(test, (size_t)nt, sizeof(int32_t), cmp_int32);
    qsort(train, (size_t)ntr, sizeof(int32_t), cmp_int32);
    for (int32_t i = 0; i < nt; i++) p->test_counts[(size_t)m * C + labels[test[i]]]++;
    for (int32_t i = 0; i < ntr; i++) p->train_counts[(size_t)m * C + labels[train[i]]]++;
  }
  spry_free(&ex_offset);
  spry_free(&ex);
  return p;
}

void spry_partition_free(spry_partition **pp) {
  if (!pp || !*pp) return;
  spry_partition *p = *pp;
  spry_free(&p->size);
  spry_free(&p->train_offset);
  spry_free(&p->train_idx);
  spry_free(&p->test_offset);
  spry_free(&p->test_idx);
  spry_free(&p->train_counts);
  spry_free(&p->test_counts);
  spry_free(&p->proportions);
  spry_free(&p->pool_counts);
  spry_free(pp);
}

void spry_partition_realised(const spry_partition *p, int m, double *out) {
  const int C = p->n_classes;
  int32_t ntr = spry_partition_n_train(p, m);
  for (int c = 0; c < C; c++) out[c] = ntr > 0 ? (double)p->train_counts[(size_t)m * C + c] / ntr : 0.0;
}

double spry_partition_distance(const spry_partition *p, int m) {
  const int C = p->n_classes;
  int32_t ntr = spry_partition_n_train(p, m);
  double tv = 0.0;
  for (int c = 0; c < C; c++) {
    double ph = ntr > 0 ? (double)p->train_counts[(size_t)m * C + c] / ntr : 0.0;
    tv += fabs(ph - p->proportions[(size_t)m * C + c]);
  }
  return 0.5 * tv;
}
