/* FwdLLM's variance control (spry_fwdllm_variance_test / spry_fwdllm_next_K, docs/federation.md) driven with
 * synthetic per-tangent estimates X_k, exactly as fwdllm_step drives it (K = 2, doubling, cap 64):
 *
 * 1. X_k = g + sigma z_k, z_k ~ N(0, I_d), d = 200, ||g|| = 1, threshold 0.15. tr Var(mean) = sigma^2 d / K, so the
 *    test passes once K >= K* = sigma^2 d / 0.15:
 *      low variance  (sigma^2 d = 0.02, K* = 0.13): stops at K = 2;
 *      high variance (sigma^2 d = 2,    K* = 13.3): K = 16 (at K = 8 the estimate ~0.25 > 0.15; at 16 ~0.125 <
 *        0.15; the estimates' relative sd is sqrt(2 / (d (K-1))) < 4%, far inside both margins);
 *      very high     (sigma^2 d = 100,  K* = 667):  the cap, 64;
 *      zero gradient (all X_k = 0): stops at K = 2 (0 <= 0).
 *    Over R = 2000 repetitions at K = 8 the two estimates are unbiased: mean var_mean = sigma^2 d / K and mean
 *    grad_sq = ||g||^2, each within 5 standard errors.
 * 2. Forward gradients, X_k = <g, v_k> v_k with the engine's Gaussian tangents (d = 23): tr Var(mean) / ||g||^2 =
 *    (d+1)/K (THEORY 4), checked unbiased at K = 8 within 5 SE; with threshold 0.5 the stopping point is
 *    K* = 48, between the doublings 32 and 64: the median chosen K over R = 201 batches must be 32 or 64. The old
 *    rule (tr Var(mean) / ||mean||^2, whose expectation (d+1)/(d+K+1) never falls below ~(d+1)/(d+K_max+1)) is
 *    printed beside it for comparison. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "spry/client.h"
#include "spry/rng.h"
#include "testlib.h"

enum { KMAX = 64 };

/* Sum of squared norms of X_0..X_{K-1} and squared norm of their mean; X is K rows of d. */
static void stats(const double *X, int K, int d, double *sum_sq, double *mean_sq) {
  *sum_sq = 0, *mean_sq = 0;
  for (int i = 0; i < d; i++) {
    double m = 0;
    for (int k = 0; k < K; k++) m += X[(size_t)k * d + i], *sum_sq += X[(size_t)k * d + i] * X[(size_t)k * d + i];
    m /= K;
    *mean_sq += m * m;
  }
}

/* The doubling schedule of fwdllm_step on precomputed estimates X[KMAX][d]. */
static int choose_K(const double *X, int d, double threshold) {
  int K = 2;
  for (;;) {
    double s, m;
    stats(X, K, d, &s, &m);
    int next = spry_fwdllm_next_K(K, KMAX, s, m, threshold);
    if (next == K) return K;
    K = next;
  }
}

static void gaussian_rows(double *X, const double *g, int d, double sigma, uint32_t stream) {
  float *z = malloc((size_t)d * sizeof *z);
  for (int k = 0; k < KMAX; k++) {
    spry_rng_fill((spry_rng_key){.seed = 41, .purpose = SPRY_RNG_TEST, .client = stream, .k = (uint32_t)k},
                  SPRY_TANGENT_GAUSSIAN, 0, (size_t)d, z);
    for (int i = 0; i < d; i++) X[(size_t)k * d + i] = g[i] + sigma * z[i];
  }
  free(z);
}

static void forward_rows(double *X, const double *g, int d, uint32_t stream) {
  float *v = malloc((size_t)d * sizeof *v);
  for (int k = 0; k < KMAX; k++) {
    spry_rng_fill((spry_rng_key){.seed = 43, .purpose = SPRY_RNG_TEST, .client = stream, .k = (uint32_t)k},
                  SPRY_TANGENT_GAUSSIAN, 0, (size_t)d, v);
    double j = 0;
    for (int i = 0; i < d; i++) j += g[i] * v[i];
    for (int i = 0; i < d; i++) X[(size_t)k * d + i] = j * v[i];
  }
  free(v);
}

static void unit_gradient(double *g, int d) {
  double n2 = 0;
  for (int i = 0; i < d; i++) g[i] = sin(1.0 + 0.7 * i), n2 += g[i] * g[i];
  for (int i = 0; i < d; i++) g[i] /= sqrt(n2);
}

static void check_mean(const char *what, const double *x, int R, double want) {
  double s = 0, s2 = 0;
  for (int r = 0; r < R; r++) s += x[r], s2 += x[r] * x[r];
  double mean = s / R, se = sqrt(fmax(s2 / R - mean * mean, 0) / R);
  TEST_CHECK(fabs(mean - want) <= 5 * se, "%s: mean %.5g, want %.5g (5 SE = %.3g)", what, mean, want, 5 * se);
  printf("  %-46s mean %.5g  want %.5g  (5 SE %.3g)\n", what, mean, want, 5 * se);
}

static void noisy_gradient(void) {
  const int d = 200;
  double *g = malloc(d * sizeof *g), *X = malloc((size_t)KMAX * d * sizeof *X);
  unit_gradient(g, d);
  const double spread[3] = {0.02, 2.0, 100.0}; /* sigma^2 d */
  const int want[3] = {2, 16, KMAX};
  printf("X_k = g + sigma z_k, d = %d, ||g|| = 1, threshold 0.15, K from 2 doubling to %d:\n", d, KMAX);
  for (int c = 0; c < 3; c++) {
    gaussian_rows(X, g, d, sqrt(spread[c] / d), (uint32_t)c);
    int K = choose_K(X, d, 0.15);
    TEST_CHECK(K == want[c], "sigma^2 d = %g: chose K = %d, want %d (K* = %.3g)", spread[c], K, want[c],
               spread[c] / 0.15);
    printf("  sigma^2 d = %-6g K* = %-8.3g chose K = %d\n", spread[c], spread[c] / 0.15, K);
  }
  memset(X, 0, (size_t)KMAX * d * sizeof *X);
  int K0 = choose_K(X, d, 0.15);
  TEST_CHECK(K0 == 2, "zero gradient: chose K = %d, want 2", K0);
  printf("  zero gradient: chose K = %d\n", K0);
  /* unbiasedness at K = 8, sigma^2 d = 2 */
  const int R = 2000, K = 8;
  double *v = malloc(R * sizeof *v), *gs = malloc(R * sizeof *gs);
  for (int r = 0; r < R; r++) {
    gaussian_rows(X, g, d, sqrt(2.0 / d), 100 + (uint32_t)r);
    double s, m;
    stats(X, K, d, &s, &m);
    spry_fwdllm_variance t = spry_fwdllm_variance_test(K, s, m, 0.15);
    v[r] = t.var_mean, gs[r] = t.grad_sq;
  }
  check_mean("var_mean at K = 8 (sigma^2 d / K)", v, R, 2.0 / K);
  check_mean("grad_sq at K = 8 (||g||^2)", gs, R, 1.0);
  free(v);
  free(gs);
  free(g);
  free(X);
}

static int cmp_int(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

static void forward_gradient(void) {
  const int d = 23, R = 201, K = 8;
  double *g = malloc(d * sizeof *g), *X = malloc((size_t)KMAX * d * sizeof *X);
  unit_gradient(g, d);
  double *v = malloc(R * sizeof *v), *gs = malloc(R * sizeof *gs), old_sum = 0;
  int *chosen = malloc(R * sizeof *chosen);
  for (int r = 0; r < R; r++) {
    forward_rows(X, g, d, 5000 + (uint32_t)r);
    double s, m;
    stats(X, K, d, &s, &m);
    spry_fwdllm_variance t = spry_fwdllm_variance_test(K, s, m, 0.5);
    v[r] = t.var_mean, gs[r] = t.grad_sq;
    chosen[r] = choose_K(X, d, 0.5);
    stats(X, KMAX, d, &s, &m);
    old_sum += spry_fwdllm_variance_test(KMAX, s, m, 0.5).var_mean / m;
  }
  printf("forward gradients X_k = <g, v_k> v_k, Gaussian v, d = %d:\n", d);
  check_mean("var_mean / ||g||^2 at K = 8 ((d+1)/K)", v, R, (d + 1.0) / K);
  check_mean("grad_sq at K = 8 (||g||^2)", gs, R, 1.0);
  qsort(chosen, (size_t)R, sizeof *chosen, cmp_int);
  int n32 = 0, n64 = 0;
  for (int r = 0; r < R; r++) n32 += chosen[r] == 32, n64 += chosen[r] == 64;
  TEST_CHECK(chosen[R / 2] == 32 || chosen[R / 2] == 64, "threshold 0.5: median K = %d, want 32 or 64 (K* = 48)",
             chosen[R / 2]);
  printf("  threshold 0.5 (K* = %.0f): chosen K min %d, median %d, max %d; %d at 32, %d at 64 of %d\n",
         (d + 1) / 0.5, chosen[0], chosen[R / 2], chosen[R - 1], n32, n64, R);
  printf("  old rule tr Var(mean)/||mean||^2 at K = %d: mean %.3f (expectation (d+1)/(d+K+1) = %.3f)\n", KMAX,
         old_sum / R, (d + 1.0) / (d + KMAX + 1.0));
  free(v);
  free(gs);
  free(chosen);
  free(g);
  free(X);
}

int main(void) {
  noisy_gradient();
  forward_gradient();
  return test_finish("test_fwdllm");
}
