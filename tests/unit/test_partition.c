/* Partition: Dirichlet label-skew moments, IID uniformity, exact cover, fairness of the interleaved draws under
 * exhaustion, quantity-skew size shapes, the local train/test split, determinism; the sampled and homogeneous
 * modes (realised = drawn up to rounding, identical clients) and Dirichlet draws down to alpha = 1e-4.
 *
 * Every random quantity here comes from fixed seeds, so each check's outcome is deterministic; the tolerances
 * are nevertheless confidence intervals derived for a correct implementation (stated at each check), wide enough
 * (4.5-5 standard errors) that a correct implementation passes for essentially any seed, and narrow enough that
 * the wrong alpha, a missing renormalisation or a biased schedule fails. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "spry/core.h"
#include "spry/partition.h"
#include "testlib.h"

/* Pool with `per_class` examples of each of C classes, interleaved (label = i mod C). */
static int32_t *make_pool(int C, size_t per_class, size_t *n) {
  *n = (size_t)C * per_class;
  int32_t *labels = malloc(*n * sizeof *labels);
  for (size_t i = 0; i < *n; i++) labels[i] = (int32_t)(i % (size_t)C);
  return labels;
}

/* Structural invariants of any partition: lists ascending and inside the pool, no index twice, counts match the
 * labels, sizes and the train/test rule, proportions rows sum to 1. Returns how many pool indices were used. */
static size_t check_structure(const spry_partition *p, const int32_t *labels, size_t n,
                              const spry_partition_config *cfg, const char *name) {
  const int N = p->n_clients, C = p->n_classes;
  uint8_t *seen = calloc(n, 1);
  int32_t *cnt = malloc((size_t)C * sizeof *cnt);
  int twice = 0, bad_order = 0, bad_counts = 0, bad_split = 0, bad_rows = 0;
  size_t used = 0;
  for (int m = 0; m < N; m++) {
    for (int part = 0; part < 2; part++) {
      const int32_t *idx = part ? spry_partition_test(p, m) : spry_partition_train(p, m);
      int32_t k = part ? spry_partition_n_test(p, m) : spry_partition_n_train(p, m);
      const int32_t *counts = (part ? p->test_counts : p->train_counts) + (size_t)m * C;
      memset(cnt, 0, (size_t)C * sizeof *cnt);
      for (int32_t i = 0; i < k; i++) {
        if (idx[i] < 0 || (size_t)idx[i] >= n) {
          twice++;
          continue;
        }
        if (i > 0 && idx[i] <= idx[i - 1]) bad_order++;
        if (seen[idx[i]]++) twice++;
        cnt[labels[idx[i]]]++;
        used++;
      }
      if (memcmp(cnt, counts, (size_t)C * sizeof *cnt) != 0) bad_counts++;
    }
    int32_t sz = p->size[m], nt = spry_partition_n_test(p, m);
    int32_t want = (int32_t)floor(cfg->test_fraction * sz + 0.5);
    if (cfg->test_fraction > 0 && want < 1) want = 1;
    if (want > sz - 1) want = sz - 1;
    if (nt != want || spry_partition_n_train(p, m) != sz - nt || spry_partition_n_train(p, m) < 1 ||
        sz < cfg->min_size)
      bad_split++;
    double row = 0;
    for (int c = 0; c < C; c++) row += p->proportions[(size_t)m * C + c];
    if (fabs(row - 1.0) > 1e-12) bad_rows++;
  }
  TEST_CHECK(twice == 0, "%s: %d pool indices used twice or out of range", name, twice);
  TEST_CHECK(bad_order == 0, "%s: %d index lists not strictly ascending", name, bad_order);
  TEST_CHECK(bad_counts == 0, "%s: %d label-count rows disagree with the index lists", name, bad_counts);
  TEST_CHECK(bad_split == 0, "%s: %d clients break the size / train-test rule", name, bad_split);
  TEST_CHECK(bad_rows == 0, "%s: %d proportion rows do not sum to 1 (tolerance 1e-12)", name, bad_rows);
  TEST_CHECK(used == p->n_used, "%s: %zu indices listed, n_used = %zu", name, used, p->n_used);
  free(seen);
  free(cnt);
  return used;
}

/* Dirichlet moments. pi ~ Dir(alpha 1_C): E pi_c = 1/C, Var pi_c = V = (1-1/C) / (C (C alpha + 1)).
 * The realised proportions phat = X / n with X | pi ~ Multinomial(n, pi) EXACTLY as long as no class pool runs out
 * (each draw picks its class from pi; the pool only decides which example) -- the test checks that no pool ran
 * out. Hence E phat_c = 1/C and Var phat_c = V + E[pi_c (1 - pi_c)] / n = V + (1/C - 1/C^2 - V) / n.
 * Over N independent clients, per class c:
 *   mean:     |mean_m phat - 1/C| <= 4.5 sqrt(Var / N)
 *   variance: |s^2 - Var| <= 4.5 SE,  SE = sqrt((m4 - s^4) / N) (delta method, m4 = sample 4th central moment)
 * and the class-averaged variance within 4 * (average per-class SE), an upper bound on the SE of the average
 * (sd of a mean of correlated terms <= mean of their sds). The same checks on the drawn pi (n -> infinity term
 * dropped) test the Gamma/Dirichlet sampler itself. */
static void moment_checks(const double *x, int N, int C, double want_var, const char *what, double alpha) {
  double avg_var = 0, avg_se = 0;
  int fails_mean = 0, fails_var = 0;
  for (int c = 0; c < C; c++) {
    double mean = 0;
    for (int m = 0; m < N; m++) mean += x[(size_t)m * C + c];
    mean /= N;
    double s2 = 0, m4 = 0;
    for (int m = 0; m < N; m++) {
      double d = x[(size_t)m * C + c] - mean;
      s2 += d * d;
      m4 += d * d * d * d;
    }
    m4 /= N;
    double s2_pop = s2 / N;
    s2 /= (N - 1);
    double se_var = sqrt(fmax(m4 - s2_pop * s2_pop, 0.0) / N);
    if (fabs(mean - 1.0 / C) > 4.5 * sqrt(want_var / N)) fails_mean++;
    if (fabs(s2 - want_var) > 4.5 * se_var) fails_var++;
    if (c == 0)
      printf("  %-11s alpha %-4g class 0: mean %.5f (want %.5f +- %.5f)  var %.6f (want %.6f +- %.6f)\n", what,
             alpha, mean, 1.0 / C, 4.5 * sqrt(want_var / N), s2, want_var, 4.5 * se_var);
    avg_var += s2 / C;
    avg_se += se_var / C;
  }
  TEST_CHECK(fails_mean == 0, "%s alpha %g: %d classes with mean outside 4.5 SE of 1/C", what, alpha, fails_mean);
  TEST_CHECK(fails_var == 0, "%s alpha %g: %d classes with variance outside 4.5 SE", what, alpha, fails_var);
  TEST_CHECK(fabs(avg_var - want_var) <= 4.0 * avg_se, "%s alpha %g: class-averaged variance %g, want %g +- %g",
             what, alpha, avg_var, want_var, 4.0 * avg_se);
}

static void dirichlet_moments(void) {
  const int N = 2000, C = 10, per_client = 100;
  size_t n;
  /* Demand for class c is sum_m n_m pi_mc: mean N*100/C = 20000, sd 100*sqrt(N V) <= 950 (alpha = 0.1). A pool
   * of 40000 per class is > 20 sd above the mean, so no pool runs out (checked below). */
  int32_t *labels = make_pool(C, 40000, &n);
  const double alphas[3] = {0.1, 1.0, 10.0};
  printf("Dirichlet moments (N = %d clients, C = %d, %d examples each; CI = 4.5 standard errors):\n", N, C,
         per_client);
  for (int a = 0; a < 3; a++) {
    spry_partition_config cfg = spry_partition_config_default();
    cfg.n_clients = N, cfg.n_classes = C, cfg.alpha = alphas[a], cfg.seed = 11 + (uint32_t)a;
    cfg.total_examples = (size_t)N * per_client;
    spry_partition *p = spry_partition_create(labels, n, &cfg);
    char name[64];
    snprintf(name, sizeof name, "alpha %g", alphas[a]);
    check_structure(p, labels, n, &cfg, name);
    int exhausted = 0;
    for (int c = 0; c < C; c++) {
      long used = 0;
      for (int m = 0; m < N; m++) used += p->train_counts[m * C + c] + p->test_counts[m * C + c];
      if (used >= 40000) exhausted++;
    }
    TEST_CHECK(exhausted == 0, "alpha %g: %d class pools ran out; the moment formula assumes none", alphas[a],
               exhausted);
    double *phat = malloc((size_t)N * C * sizeof *phat);
    for (int m = 0; m < N; m++)
      for (int c = 0; c < C; c++)
        phat[m * C + c] = (double)(p->train_counts[m * C + c] + p->test_counts[m * C + c]) / p->size[m];
    const double V = (1.0 - 1.0 / C) / (C * (C * alphas[a] + 1.0));
    moment_checks(p->proportions, N, C, V, "drawn pi", alphas[a]);
    moment_checks(phat, N, C, V + (1.0 / C - 1.0 / (C * C) - V) / per_client, "realised", alphas[a]);
    free(phat);
    spry_partition_free(&p);
    TEST_CHECK(p == NULL, "spry_partition_free must null the pointer");
  }
  free(labels);
}

/* Pearson statistic of the clients' label counts against the pool's class frequencies. */
static double pearson(const spry_partition *p, const double *freq) {
  double x2 = 0;
  for (int m = 0; m < p->n_clients; m++)
    for (int c = 0; c < p->n_classes; c++) {
      double e = p->size[m] * freq[c];
      double o = p->train_counts[m * p->n_classes + c] + p->test_counts[m * p->n_classes + c];
      x2 += (o - e) * (o - e) / e;
    }
  return x2;
}

/* IID: a client's label counts are a sample without replacement from the pool (multivariate hypergeometric), so
 * Pearson's X^2 summed over N clients has mean N (C-1) (n - n_m)/(n - 1) and sd ~ sqrt(2 N (C-1)); accept within
 * 5 sd. Negative control: the same pool split with alpha = 10 (mild skew) must exceed that bound, so the check
 * does detect non-IID labels. The pool uses the whole data set (every index once) with uneven class sizes. */
static void iid_uniform(void) {
  const int N = 200, C = 10;
  size_t n = 0;
  for (int c = 0; c < C; c++) n += (size_t)(500 * (c + 1));
  int32_t *labels = malloc(n * sizeof *labels);
  double freq[10];
  size_t at = 0;
  for (int c = 0; c < C; c++) {
    freq[c] = 500.0 * (c + 1) / (double)n;
    for (int i = 0; i < 500 * (c + 1); i++) labels[at++] = c;
  }
  spry_partition_config cfg = spry_partition_config_default();
  cfg.n_clients = N, cfg.n_classes = C, cfg.seed = 5;
  spry_partition *p = spry_partition_create(labels, n, &cfg);
  size_t used = check_structure(p, labels, n, &cfg, "IID");
  TEST_CHECK(used == n, "IID whole pool: %zu of %zu examples used", used, n);
  double nm = (double)n / N;
  double mean = N * (C - 1) * (n - nm) / (n - 1), sd = sqrt(2.0 * N * (C - 1));
  double x2 = pearson(p, freq);
  TEST_CHECK(fabs(x2 - mean) <= 5 * sd, "IID: Pearson X^2 = %.1f, want %.1f +- %.1f", x2, mean, 5 * sd);
  for (int i = 0; i < N * C; i++)
    if (p->proportions[i] != 1.0 / C) {
      TEST_CHECK(0, "IID: proportions must be 1/C");
      break;
    }
  spry_partition_free(&p);
  cfg.alpha = 10.0;
  p = spry_partition_create(labels, n, &cfg);
  check_structure(p, labels, n, &cfg, "alpha 10 whole pool");
  double x2_skew = pearson(p, freq);
  TEST_CHECK(x2_skew > mean + 5 * sd, "alpha = 10 must be detected as non-IID: X^2 = %.1f, bound %.1f", x2_skew,
             mean + 5 * sd);
  printf("IID: Pearson X^2 %.1f (want %.1f +- %.1f, 5 sd); alpha = 10 control gives %.1f\n", x2, mean, 5 * sd,
         x2_skew);
  spry_partition_free(&p);
  free(labels);
}

/* Fairness under exhaustion: with the whole pool handed out at alpha = 0.1 the popular classes run out during
 * the draws. With the fair interleaved schedule every client meets exhaustion at the same fraction of its quota,
 * so the mismatch between a client's realised and drawn proportions (total variation) must not depend on its id:
 * the first and second halves of the clients have equal mean TV, checked by a two-sample z-test at 5 SE (SE from
 * the sample variances). Serving clients in order 0..N-1 fails this by far: the last clients get the leftovers. */
static void fair_under_exhaustion(void) {
  const int N = 1000, C = 10;
  size_t n;
  int32_t *labels = make_pool(C, 5000, &n);
  spry_partition_config cfg = spry_partition_config_default();
  cfg.n_clients = N, cfg.n_classes = C, cfg.alpha = 0.1, cfg.seed = 99;
  spry_partition *p = spry_partition_create(labels, n, &cfg);
  size_t used = check_structure(p, labels, n, &cfg, "alpha 0.1 whole pool");
  TEST_CHECK(used == n, "alpha 0.1 whole pool: %zu of %zu examples used", used, n);
  double s[2] = {0, 0}, s2[2] = {0, 0};
  for (int m = 0; m < N; m++) {
    double tv = 0;
    for (int c = 0; c < C; c++) {
      double ph = (double)(p->train_counts[m * C + c] + p->test_counts[m * C + c]) / p->size[m];
      tv += 0.5 * fabs(ph - p->proportions[m * C + c]);
    }
    s[m >= N / 2] += tv;
    s2[m >= N / 2] += tv * tv;
  }
  double h = N / 2.0, mean0 = s[0] / h, mean1 = s[1] / h;
  double var0 = s2[0] / h - mean0 * mean0, var1 = s2[1] / h - mean1 * mean1;
  double se = sqrt(var0 / h + var1 / h);
  TEST_CHECK(fabs(mean0 - mean1) <= 5 * se,
             "exhaustion hits clients unevenly: mean TV first half %.4f, second half %.4f (5 SE = %.4f)", mean0,
             mean1, 5 * se);
  printf("exhaustion fairness: mean TV(realised, drawn) first half %.4f, second half %.4f (|diff| <= 5 SE = %.4f)\n",
         mean0, mean1, 5 * se);
  spry_partition_free(&p);
  free(labels);
}

/* Same configuration => identical bytes; another seed => a different partition. */
static void determinism(void) {
  const int N = 50, C = 7;
  size_t n;
  int32_t *labels = make_pool(C, 300, &n);
  spry_partition_config cfg = spry_partition_config_default();
  cfg.n_clients = N, cfg.n_classes = C, cfg.alpha = 0.5, cfg.seed = 3;
  cfg.sizes = SPRY_SIZES_LOGNORMAL, cfg.size_param = 0.7, cfg.total_examples = 1500;
  spry_partition *a = spry_partition_create(labels, n, &cfg), *b = spry_partition_create(labels, n, &cfg);
  int same = memcmp(a->size, b->size, N * sizeof(int32_t)) == 0 &&
             memcmp(a->train_offset, b->train_offset, (N + 1) * sizeof(int32_t)) == 0 &&
             memcmp(a->test_offset, b->test_offset, (N + 1) * sizeof(int32_t)) == 0 &&
             memcmp(a->train_idx, b->train_idx, a->train_offset[N] * sizeof(int32_t)) == 0 &&
             memcmp(a->test_idx, b->test_idx, a->test_offset[N] * sizeof(int32_t)) == 0 &&
             memcmp(a->proportions, b->proportions, (size_t)N * C * sizeof(double)) == 0;
  TEST_CHECK(same, "same seed and configuration must give a bitwise identical partition");
  check_structure(a, labels, n, &cfg, "lognormal alpha 0.5");
  cfg.seed = 4;
  spry_partition *c = spry_partition_create(labels, n, &cfg);
  int differ = memcmp(a->size, c->size, N * sizeof(int32_t)) != 0 || a->train_offset[N] != c->train_offset[N] ||
               memcmp(a->train_idx, c->train_idx, a->train_offset[N] * sizeof(int32_t)) != 0;
  TEST_CHECK(differ, "another seed must give another partition");
  printf("determinism: same seed -> identical partition, new seed -> different one\n");
  spry_partition_free(&a);
  spry_partition_free(&b);
  spry_partition_free(&c);
  free(labels);
}

/* Sample mean, sd, skewness and minimum of log sizes. */
static void log_stats(const int32_t *sizes, int N, double *mean, double *sd, double *skew, double *minlog) {
  double s = 0, mn = INFINITY;
  for (int m = 0; m < N; m++) {
    double l = log(sizes[m]);
    s += l;
    if (l < mn) mn = l;
  }
  *mean = s / N;
  double m2 = 0, m3 = 0;
  for (int m = 0; m < N; m++) {
    double d = log(sizes[m]) - *mean;
    m2 += d * d, m3 += d * d * d;
  }
  m2 /= N, m3 /= N;
  *sd = sqrt(m2 * N / (N - 1));
  *skew = m3 / pow(m2, 1.5);
  *minlog = mn;
}

static int64_t sum_sizes(const int32_t *sizes, int N, int32_t *mn) {
  int64_t s = 0;
  *mn = INT32_MAX;
  for (int m = 0; m < N; m++) s += sizes[m], *mn = sizes[m] < *mn ? sizes[m] : *mn;
  return s;
}

/* Quantity skew. Away from the min-size clamp, log n_m = log r_m + const (+ rounding, relative error < 1/n_m),
 * so the shape of the log sizes is that of the raw draws:
 *   LOGNORMAL(sigma): log sizes ~ Normal, sd sigma: |sd - sigma| <= 5 sigma / sqrt(2 (N-1)) (sd of a sample sd),
 *                     skewness 0: |skew| <= 5 sqrt(6/N);
 *   POWERLAW(a):      log sizes ~ min + Exponential(a): sd 1/a, |sd - 1/a| <= 5 sqrt(2/N) / a (delta method with
 *                     the exponential's 4th moment 9/a^4); and mean - min = 1/a (+ 1/(N a) from the sample
 *                     minimum): |mean - minlog - 1/a| <= 5 (1/a)/sqrt(N) + 1/(N a).
 * Mean size 500 keeps rounding (< 0.2%) and clamping (a lognormal client below 2 needs z < -5) out of the way.
 * Equal sizes: floor(T/N), +1 for the first T mod N. A clamping case checks min_size and the exact total. */
static void quantity_skew(void) {
  const int N = 2000;
  const size_t T = (size_t)N * 500;
  int32_t *sizes = malloc(N * sizeof *sizes), mn;
  double mean, sd, skew, minlog;
  spry_partition_config cfg = spry_partition_config_default();
  cfg.n_clients = N, cfg.seed = 21;

  cfg.sizes = SPRY_SIZES_LOGNORMAL, cfg.size_param = 1.0;
  spry_partition_sizes(&cfg, T, sizes);
  TEST_CHECK(sum_sizes(sizes, N, &mn) == (int64_t)T && mn >= 2, "lognormal: sizes must sum to T and be >= 2");
  log_stats(sizes, N, &mean, &sd, &skew, &minlog);
  double tol_sd = 5 * 1.0 / sqrt(2.0 * (N - 1)), tol_skew = 5 * sqrt(6.0 / N);
  TEST_CHECK(fabs(sd - 1.0) <= tol_sd, "lognormal sigma 1: sd of log sizes %g (tolerance %g)", sd, tol_sd);
  TEST_CHECK(fabs(skew) <= tol_skew, "lognormal: skewness of log sizes %g (tolerance %g)", skew, tol_skew);
  printf("lognormal sigma 1: sd(log n_m) %.4f +- %.4f, skew %.4f +- %.4f, min size %d\n", sd, tol_sd, skew,
         tol_skew, mn);

  const double a = 1.5;
  cfg.sizes = SPRY_SIZES_POWERLAW, cfg.size_param = a;
  spry_partition_sizes(&cfg, T, sizes);
  TEST_CHECK(sum_sizes(sizes, N, &mn) == (int64_t)T && mn >= 2, "power law: sizes must sum to T and be >= 2");
  log_stats(sizes, N, &mean, &sd, &skew, &minlog);
  double tol_pl = 5 * sqrt(2.0 / N) / a, tol_gap = 5 * (1 / a) / sqrt(N) + 1 / (N * a);
  TEST_CHECK(fabs(sd - 1 / a) <= tol_pl, "power law a = %g: sd of log sizes %g, want %g +- %g", a, sd, 1 / a, tol_pl);
  TEST_CHECK(fabs(mean - minlog - 1 / a) <= tol_gap, "power law: mean - min of log sizes %g, want %g +- %g",
             mean - minlog, 1 / a, tol_gap);
  /* The two shapes are told apart: the log sizes of a power law are strongly right-skewed (exponential: 2). */
  TEST_CHECK(skew > 1.0, "power law: log sizes should be right-skewed (exponential skewness 2), got %g", skew);
  printf("power law a %.1f: sd(log n_m) %.4f (want %.4f +- %.4f), mean - min %.4f (+- %.4f), skew %.2f\n", a, sd,
         1 / a, tol_pl, mean - minlog, tol_gap, skew);

  /* Clamping: sigma 2 with a mean of 10 puts many clients under min_size = 5. */
  cfg.sizes = SPRY_SIZES_LOGNORMAL, cfg.size_param = 2.0, cfg.min_size = 5;
  spry_partition_sizes(&cfg, (size_t)N * 10, sizes);
  int at_min = 0;
  for (int m = 0; m < N; m++) at_min += sizes[m] == 5;
  TEST_CHECK(sum_sizes(sizes, N, &mn) == (int64_t)N * 10 && mn == 5,
             "clamped lognormal: sum must be exactly T and the minimum exactly min_size = 5 (got %d)", mn);
  TEST_CHECK(at_min > N / 10, "clamped lognormal: expected many clients at min_size, got %d", at_min);
  printf("clamped lognormal sigma 2, mean 10, min 5: %d clients at the minimum, total exact\n", at_min);

  cfg.sizes = SPRY_SIZES_EQUAL, cfg.n_clients = 10, cfg.min_size = 2;
  spry_partition_sizes(&cfg, 1003, sizes);
  int ok = 1;
  for (int m = 0; m < 10; m++) ok &= sizes[m] == (m < 3 ? 101 : 100);
  TEST_CHECK(ok, "equal sizes: 1003 over 10 clients must be 101 x 3 then 100 x 7");
  free(sizes);
}

/* Label skew + quantity skew + a partial pool, and the train/test rule at small sizes (test_fraction 0.3 on
 * sizes down to 2: n_test = clamp(round(0.3 n), 1, n-1)). */
static void combined(void) {
  const int N = 300, C = 4;
  size_t n;
  int32_t *labels = make_pool(C, 2000, &n);
  spry_partition_config cfg = spry_partition_config_default();
  cfg.n_clients = N, cfg.n_classes = C, cfg.alpha = 0.3, cfg.seed = 8, cfg.test_fraction = 0.3;
  cfg.sizes = SPRY_SIZES_POWERLAW, cfg.size_param = 1.0, cfg.total_examples = 6000;
  spry_partition *p = spry_partition_create(labels, n, &cfg);
  size_t used = check_structure(p, labels, n, &cfg, "power law alpha 0.3 partial pool");
  TEST_CHECK(used == 6000, "partial pool: %zu used, want 6000", used);
  int32_t *want = malloc(N * sizeof *want);
  spry_partition_sizes(&cfg, 6000, want);
  TEST_CHECK(memcmp(want, p->size, N * sizeof *want) == 0, "partition sizes must equal spry_partition_sizes");
  free(want);
  spry_partition_free(&p);
  free(labels);
  printf("combined label + quantity skew on a partial pool: structure, sizes and split rule hold\n");
}

/* Structure of a SAMPLED / HOMOGENEOUS partition: per client, lists ascending, inside the pool, train and test
 * disjoint (no example twice within a client), counts match the labels, sizes follow the split rule. Sharing
 * between clients is allowed. Returns the number of clients breaking a rule. */
static int check_sampled_structure(const spry_partition *p, const int32_t *labels, size_t n, double test_fraction,
                                   const char *name) {
  const int N = p->n_clients, C = p->n_classes;
  uint8_t *seen = calloc(n, 1);
  int32_t *cnt = malloc((size_t)C * sizeof *cnt);
  int bad = 0;
  for (int m = 0; m < N; m++) {
    int ok = 1;
    for (int part = 0; part < 2; part++) {
      const int32_t *idx = part ? spry_partition_test(p, m) : spry_partition_train(p, m);
      int32_t k = part ? spry_partition_n_test(p, m) : spry_partition_n_train(p, m);
      memset(cnt, 0, (size_t)C * sizeof *cnt);
      for (int32_t i = 0; i < k; i++) {
        if (idx[i] < 0 || (size_t)idx[i] >= n || (i > 0 && idx[i] <= idx[i - 1]) || seen[idx[i]]) {
          ok = 0;
          continue;
        }
        seen[idx[i]] = 1;
        cnt[labels[idx[i]]]++;
      }
      if (memcmp(cnt, (part ? p->test_counts : p->train_counts) + (size_t)m * C, (size_t)C * sizeof *cnt)) ok = 0;
    }
    for (int part = 0; part < 2; part++) { /* clear this client's marks */
      const int32_t *idx = part ? spry_partition_test(p, m) : spry_partition_train(p, m);
      int32_t k = part ? spry_partition_n_test(p, m) : spry_partition_n_train(p, m);
      for (int32_t i = 0; i < k; i++)
        if (idx[i] >= 0 && (size_t)idx[i] < n) seen[idx[i]] = 0;
    }
    int32_t sz = p->size[m], want = (int32_t)floor(test_fraction * sz + 0.5);
    if (test_fraction > 0 && want < 1) want = 1;
    if (want > sz - 1) want = sz - 1;
    if (spry_partition_n_test(p, m) != want || spry_partition_n_train(p, m) != sz - want) ok = 0;
    double row = 0;
    for (int c = 0; c < C; c++) row += p->proportions[(size_t)m * C + c];
    if (fabs(row - 1.0) > 1e-12) ok = 0;
    bad += !ok;
  }
  TEST_CHECK(bad == 0, "%s: %d clients break the structure (ascending, in range, no example twice within a client, "
             "counts, split rule, proportions summing to 1 within 1e-12)", name, bad);
  free(seen);
  free(cnt);
  return bad;
}

/* Mean and max over clients of the total variation between realised train proportions and the drawn ones. */
static void tv_stats(const spry_partition *p, double *mean, double *max) {
  *mean = 0, *max = 0;
  for (int m = 0; m < p->n_clients; m++) {
    double tv = spry_partition_distance(p, m);
    *mean += tv / p->n_clients;
    if (tv > *max) *max = tv;
  }
}

/* SAMPLED realises the Dirichlet draw. Guarantee (largest-remainder rounding of n_train pi, partition.h): for every
 * client and class abs(pihat - pi) < 1/n_train, and TV(pihat, pi) <= C / (4 n_train); both are deterministic
 * bounds, checked with a 1e-12 allowance for the double rounding of pi. Also: the drawn pi are those of the POOL
 * mode (same step-0 streams), the realised counts are the rounding of n pi exactly, and the same draw with 2x the
 * examples halves the bound. On a WordNet-sized pool (8 classes x 1600 train examples, 100 clients, 64 or 128
 * examples each), POOL is printed beside it for alpha 0.01, 0.1, 1: the dealt-out pool has to run classes dry, its
 * TV is an order of magnitude larger (checked: pool mean TV > 5 x sampled mean TV at alpha <= 0.1, whole pool). */
static void sampled_realises_draw(void) {
  const int N = 100, C = 8;
  size_t n;
  int32_t *labels = make_pool(C, 1600, &n);
  const double alphas[3] = {0.01, 0.1, 1.0};
  printf("realised vs drawn train label mix, TV mean / max over %d clients (8 classes x 1600 train examples):\n", N);
  printf("  alpha   pool (whole pool, 128 each)   pool (64 each)      sampled (64 each)   sampled (128 each)  "
         "bound C/(4 n_train) at 64\n");
  for (int a = 0; a < 3; a++) {
    spry_partition_config cfg = spry_partition_config_default();
    cfg.n_clients = N, cfg.n_classes = C, cfg.alpha = alphas[a], cfg.seed = 31 + (uint32_t)a;
    spry_partition *whole = spry_partition_create(labels, n, &cfg);
    cfg.total_examples = (size_t)N * 64;
    spry_partition *pool64 = spry_partition_create(labels, n, &cfg);
    cfg.total_examples = 0, cfg.mode = SPRY_PARTITION_SAMPLED, cfg.examples_per_client = 64;
    spry_partition *s64 = spry_partition_create(labels, n, &cfg);
    cfg.examples_per_client = 128;
    spry_partition *s128 = spry_partition_create(labels, n, &cfg);
    char name[64];
    snprintf(name, sizeof name, "sampled alpha %g", alphas[a]);
    check_sampled_structure(s64, labels, n, cfg.test_fraction, name);
    check_sampled_structure(s128, labels, n, cfg.test_fraction, name);
    TEST_CHECK(memcmp(s64->proportions, whole->proportions, (size_t)N * C * sizeof(double)) == 0,
               "alpha %g: sampled must draw the same pi_m as pool (step-0 streams)", alphas[a]);
    const spry_partition *both[2] = {s64, s128};
    int bad_class = 0, bad_tv = 0, bad_round = 0;
    for (int v = 0; v < 2; v++)
      for (int m = 0; m < N; m++) {
        int32_t ntr = spry_partition_n_train(both[v], m);
        double ph[8], tv = spry_partition_distance(both[v], m);
        spry_partition_realised(both[v], m, ph);
        for (int c = 0; c < C; c++) {
          double pi = both[v]->proportions[m * C + c], x = ntr * pi;
          if (fabs(ph[c] - pi) >= 1.0 / ntr + 1e-12) bad_class++;
          int32_t k = both[v]->train_counts[m * C + c];
          if (k != (int32_t)floor(x) && k != (int32_t)floor(x) + 1) bad_round++;
        }
        if (tv > C / (4.0 * ntr) + 1e-12) bad_tv++;
      }
    TEST_CHECK(bad_class == 0, "alpha %g: %d (client, class) pairs with abs(pihat - pi) >= 1/n_train", alphas[a],
               bad_class);
    TEST_CHECK(bad_tv == 0, "alpha %g: %d clients with TV > C/(4 n_train)", alphas[a], bad_tv);
    TEST_CHECK(bad_round == 0, "alpha %g: %d counts are neither floor nor ceil of n_train pi", alphas[a], bad_round);
    double wm, wx, pm, px, sm, sx, tm, tx;
    tv_stats(whole, &wm, &wx), tv_stats(pool64, &pm, &px), tv_stats(s64, &sm, &sx), tv_stats(s128, &tm, &tx);
    printf("  %-6g  %.4f / %.4f               %.4f / %.4f     %.4f / %.4f     %.4f / %.4f     %.4f\n", alphas[a], wm,
           wx, pm, px, sm, sx, tm, tx, C / (4.0 * spry_partition_n_train(s64, 0)));
    if (alphas[a] <= 0.1)
      TEST_CHECK(wm > 5 * sm, "alpha %g: pool TV %.4f should be far above sampled TV %.4f (classes run out)", alphas[a],
                 wm, sm);
    spry_partition_free(&whole);
    spry_partition_free(&pool64);
    spry_partition_free(&s64);
    spry_partition_free(&s128);
  }
  /* IID sampled: every client the same class counts (pi = 1/C), different examples. */
  spry_partition_config cfg = spry_partition_config_default();
  cfg.n_clients = 20, cfg.n_classes = C, cfg.seed = 4, cfg.mode = SPRY_PARTITION_SAMPLED, cfg.examples_per_client = 50;
  spry_partition *p = spry_partition_create(labels, n, &cfg);
  check_sampled_structure(p, labels, n, cfg.test_fraction, "sampled IID");
  int same_counts = 1, same_lists = 1;
  for (int m = 1; m < 20; m++) {
    same_counts &= memcmp(p->train_counts, p->train_counts + m * C, C * sizeof(int32_t)) == 0;
    same_lists &= memcmp(spry_partition_train(p, 0), spry_partition_train(p, m), 40 * sizeof(int32_t)) == 0;
  }
  TEST_CHECK(same_counts && !same_lists, "sampled IID: equal class counts (%d) but different examples (%d)",
             same_counts, !same_lists);
  spry_partition_free(&p);
  /* Quantity skew: sizes are spry_partition_sizes of N * examples_per_client. */
  cfg.sizes = SPRY_SIZES_LOGNORMAL, cfg.size_param = 0.5, cfg.alpha = 0.3;
  p = spry_partition_create(labels, n, &cfg);
  int32_t want[20];
  spry_partition_sizes(&cfg, 20 * 50, want);
  TEST_CHECK(memcmp(want, p->size, sizeof want) == 0, "sampled lognormal: sizes must be those of N * examples_per_client");
  check_sampled_structure(p, labels, n, cfg.test_fraction, "sampled lognormal");
  spry_partition_free(&p);
  free(labels);
}

/* HOMOGENEOUS: every client holds bitwise the same train and test lists; its class counts are the pool's
 * proportions rounded (k_c = floor or ceil of n n_c / n_pool); proportions = realised (distance exactly 0). With
 * examples_per_client = 0, every client holds the whole pool. */
static void homogeneous_identical(void) {
  const int N = 13, C = 5;
  size_t n = 0;
  for (int c = 0; c < C; c++) n += (size_t)(100 + 37 * c);
  int32_t *labels = malloc(n * sizeof *labels);
  size_t at = 0;
  for (int c = 0; c < C; c++)
    for (int i = 0; i < 100 + 37 * c; i++) labels[at++] = c;
  for (int pass = 0; pass < 2; pass++) {
    spry_partition_config cfg = spry_partition_config_default();
    cfg.n_clients = N, cfg.n_classes = C, cfg.seed = 17, cfg.alpha = 0.1;
    cfg.mode = SPRY_PARTITION_HOMOGENEOUS, cfg.examples_per_client = pass ? 0 : 90;
    spry_partition *p = spry_partition_create(labels, n, &cfg);
    const char *name = pass ? "homogeneous whole pool" : "homogeneous 90";
    check_sampled_structure(p, labels, n, cfg.test_fraction, name);
    int32_t ntr = spry_partition_n_train(p, 0), nt = spry_partition_n_test(p, 0), sz = p->size[0];
    int identical = 1, dist = 1;
    for (int m = 0; m < N; m++) {
      identical &= p->size[m] == sz && spry_partition_n_train(p, m) == ntr && spry_partition_n_test(p, m) == nt &&
                   memcmp(spry_partition_train(p, m), spry_partition_train(p, 0), (size_t)ntr * 4) == 0 &&
                   memcmp(spry_partition_test(p, m), spry_partition_test(p, 0), (size_t)nt * 4) == 0;
      dist &= spry_partition_distance(p, m) == 0.0;
    }
    TEST_CHECK(identical, "%s: every client must hold the same train and test lists", name);
    TEST_CHECK(dist, "%s: drawn = realised proportions, distance exactly 0", name);
    TEST_CHECK(sz == (pass ? (int32_t)n : 90), "%s: size %d", name, sz);
    int prop = 1;
    for (int c = 0; c < C; c++) {
      double x = (double)sz * p->pool_counts[c] / (double)n;
      int32_t k = p->train_counts[c] + p->test_counts[c];
      prop &= k == (int32_t)floor(x) || k == (int32_t)ceil(x);
    }
    TEST_CHECK(prop, "%s: class counts must be the pool's proportions rounded", name);
    printf("%s: %d clients x (%d train + %d test), identical lists, distance 0\n", name, N, ntr, nt);
    spry_partition_free(&p);
  }
  free(labels);
}

/* Tiny alpha: v1 aborted at alpha = 0.001 (the Gamma draws underflowed). Now alpha = 1e-4 and 1e-3 draw finite
 * proportions summing to 1 (1e-12), essentially one-hot: with g_c = G_c U_c^(1/alpha), log g_c = log G_c - E_c / alpha
 * (E_c ~ Exp(1)), the runner-up reaches eps = 0.01 of the top only if the gap between the two smallest E (~ Exp(C-1))
 * is below alpha (log(1/eps) + log(G_top/G_2nd)), probability ~ (C-1) alpha (4.6 + O(1)): 5.4% at alpha 1e-3,
 * C = 10. Checked: non-one-hot share <= 2 (C-1) alpha (log(1/eps) + 2) + 4.5 SE (factor 2 for the O(1) term).
 * The top class is uniform over classes: each class's share of clients within 4.5 SE of 1/C. Pool and sampled
 * both build; sampled keeps its TV bound. */
static void tiny_alpha(void) {
  const int N = 400, C = 10;
  size_t n;
  int32_t *labels = make_pool(C, 5000, &n);
  const double alphas[2] = {1e-4, 1e-3};
  for (int a = 0; a < 2; a++) {
    for (int mode = 0; mode < 2; mode++) {
      spry_partition_config cfg = spry_partition_config_default();
      cfg.n_clients = N, cfg.n_classes = C, cfg.alpha = alphas[a], cfg.seed = 123;
      if (mode) cfg.mode = SPRY_PARTITION_SAMPLED, cfg.examples_per_client = 40;
      spry_partition *p = spry_partition_create(labels, n, &cfg);
      int finite = 1, onehot = 0, top_count[10] = {0};
      for (int m = 0; m < N; m++) {
        double row = 0, top = 0;
        int arg = 0;
        for (int c = 0; c < C; c++) {
          double v = p->proportions[m * C + c];
          finite &= isfinite(v) && v >= 0;
          row += v;
          if (v > top) top = v, arg = c;
        }
        finite &= fabs(row - 1) <= 1e-12;
        onehot += top > 0.99;
        top_count[arg]++;
      }
      TEST_CHECK(finite, "alpha %g: proportions must be finite, >= 0, rows summing to 1", alphas[a]);
      double p_not = 2 * (C - 1) * alphas[a] * (log(100.0) + 2), se_not = sqrt(p_not * (1 - p_not) / N);
      TEST_CHECK((double)(N - onehot) / N <= p_not + 4.5 * se_not,
                 "alpha %g: %d of %d clients not one-hot (max pi <= 0.99), want a share <= %.4f", alphas[a],
                 N - onehot, N, p_not + 4.5 * se_not);
      int bad = 0;
      double se = sqrt((1.0 / C) * (1 - 1.0 / C) / N);
      for (int c = 0; c < C; c++) bad += fabs((double)top_count[c] / N - 1.0 / C) > 4.5 * se;
      TEST_CHECK(bad == 0, "alpha %g: %d classes are the top class of a share of clients outside 1/C +- 4.5 SE",
                 alphas[a], bad);
      double mean, max;
      tv_stats(p, &mean, &max);
      if (mode) {
        check_sampled_structure(p, labels, n, cfg.test_fraction, "sampled tiny alpha");
        TEST_CHECK(max <= C / (4.0 * spry_partition_n_train(p, 0)) + 1e-12, "sampled alpha %g: TV max %g", alphas[a],
                   max);
      } else {
        check_structure(p, labels, n, &cfg, "pool tiny alpha");
      }
      printf("alpha %g (%s): %d of %d clients one-hot, TV realised vs drawn mean %.4f max %.4f\n", alphas[a],
             mode ? "sampled 40 each" : "pool", onehot, N, mean, max);
      spry_partition_free(&p);
    }
  }
  free(labels);
}

int main(void) {
  dirichlet_moments();
  iid_uniform();
  fair_under_exhaustion();
  determinism();
  quantity_skew();
  combined();
  sampled_realises_draw();
  homogeneous_identical();
  tiny_alpha();
  return test_finish("test_partition");
}
