/* The oracle's full local gradient grad f_m(w_t) (log.gradients = oracle; computed by spry_client_run on the
 * client's whole train split in its epoch-0 batches of B, and by spry_client_true_gradient for the per-class
 * gradients) against INDEPENDENT computations on a tiny classification model (random backbone, random trainable
 * weights so that no gradient vanishes) and the synthetic task (lengths in [max_len/2, max_len]: every batch is
 * padded):
 *   1. the mean of per-example reverse-mode gradients (batches of ONE example, so no padding at all; summed in
 *      double): relative 2-norm error <= 1e-5, for n = 23, B = 5 (a ragged last batch of 3) and n = 20, B = 5.
 *      Why 1e-5: both sides are exact gradients of the same loss; they differ only by float32 rounding in a
 *      different order (the batched pass sums B examples inside its float32 GEMMs and averages in float32, the
 *      reference rounds each example's gradient separately); that is a few float32 ulps (6e-8) per reduction
 *      over ~10 layers, measured ~1e-7, so 1e-5 leaves two orders of magnitude while any weighting mistake (a
 *      ragged batch weighed 1/n_batches instead of n_b/n: 3/23 vs 1/5) or padding leak is >= 1e-2.
 *   2. central finite differences of f_m(w) (mean loss over the split, evaluated in the runner's batches) along 3
 *      random unit directions u with h = 5e-2: |FD - <g, u>| <= 1e-2 |<g, u>| + 2.4e-7 * 2 f / h (the truncation
 *      error h^2/6 |f'''| is ~1e-3 relative for these smooth losses, and each float32 loss carries ~2 ulp).
 *   3. the minibatch variance per block sigma^2_l = (1/nb) sum_b ||grad_l f(w; b) - grad_l f(w)||^2 over the
 *      epoch-0 batches (the batches the client's training records in sample_idx for its first epoch), against
 *      that definition evaluated from the per-example gradients (batch gradient = mean of its examples'), and,
 *      with equal-sized batches, against the identity mean_b ||g_b||^2 - ||g||^2: relative 1e-4 (the code expands
 *      the square, which loses ~ ||g_b||^2 / sigma^2 ~ 10 times the 1e-6 input error).
 *   4. the loss f_m(w_t) against the mean of the per-example losses: relative 1e-6. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "spry/client.h"
#include "spry/config.h"
#include "spry/core.h"
#include "spry/dataset.h"
#include "spry/model.h"
#include "testlib.h"

static void load_cfg(spry_config *c, int B) {
  char bs[64], err[SPRY_CONFIG_ERRLEN];
  snprintf(bs, sizeof bs, "data.batch_size=%d", B);
  const char *ov[] = {bs, "log.gradients=oracle", "method.estimator=backprop", "method.comm=epoch",
                      "method.local_epochs=1", "run.seed=7"};
  int st = spry_config_parse(c, "", "test_oracle", ov, (int)(sizeof ov / sizeof *ov), err, sizeof err);
  if (st != 0) spry_fatal("test_oracle: configuration rejected: %s", err);
}

/* Per-example gradients ex[i * d ...] (float, one batch of one example each) and losses, at the model's w. */
static void per_example(spry_model *m, const spry_dataset *ds, const int32_t *idx, int n, float *ex, double *loss) {
  size_t d = spry_model_n_trainable(m);
  int32_t tok[64], len[1], lab[1];
  for (int i = 0; i < n; i++) {
    int T = spry_dataset_gather(ds, idx + i, 1, tok, len, lab);
    TEST_CHECK(T == len[0], "a batch of one example is not padded (T %d, length %d)", T, len[0]);
    spry_batch b = {.B = 1, .T = T, .tokens = tok, .lengths = len, .labels = lab};
    loss[i] = spry_model_backward(m, &b, NULL, ex + (size_t)i * d);
  }
}

static int pos_of(const int32_t *idx, int n, int32_t v) {
  for (int i = 0; i < n; i++)
    if (idx[i] == v) return i;
  return -1;
}

static void check_split(const spry_dataset *ds, const int32_t *pool, int n, int B) {
  spry_config cfg;
  load_cfg(&cfg, B);
  spry_model_config mc = spry_model_config_default();
  mc.n_layer = 2, mc.n_head = 2, mc.n_embd = 16, mc.n_ctx = ds->max_len, mc.vocab_size = ds->vocab_size;
  mc.n_class = ds->n_class, mc.lora_rank = 2;
  spry_model *m = spry_model_create(&mc, B, ds->max_len, 1);
  spry_model_init_backbone(m, 3);
  size_t d = spry_model_n_trainable(m);
  int L = spry_model_n_blocks(m);
  const spry_block *blocks = spry_model_blocks(m);
  float *w = malloc(sizeof(float) * d);
  test_fill_normal(w, d, 0.1f, 41);
  memcpy(spry_model_w(m), w, sizeof(float) * d);

  /* the independent reference: per-example backprop, summed in double */
  float *ex = malloc(sizeof(float) * d * (size_t)n), *ref = malloc(sizeof(float) * d);
  double *exloss = malloc(sizeof(double) * (size_t)n), *acc = calloc(d, sizeof(double));
  per_example(m, ds, pool, n, ex, exloss);
  double ref_loss = 0;
  for (int i = 0; i < n; i++) {
    ref_loss += exloss[i];
    for (size_t k = 0; k < d; k++) acc[k] += ex[(size_t)i * d + k];
  }
  ref_loss /= n;
  for (size_t k = 0; k < d; k++) ref[k] = (float)(acc[k] / n);

  /* the oracle's path: spry_client_run with log.gradients = oracle, all blocks active, at w */
  spry_client_runner *r = spry_client_runner_create(&cfg, m, ds);
  unsigned char *active = malloc((size_t)L);
  memset(active, 1, (size_t)L);
  const spry_client_result *res = spry_client_run(r, 4, 3, active, w, pool, n, NULL, 0, NULL);
  int nbat = (n + B - 1) / B;
  double e1 = test_rel_err(res->local_grad, ref, d);
  TEST_CHECK(e1 <= 1e-5, "n=%d B=%d: full local gradient vs per-example backprop: rel err %.3g > 1e-5", n, B, e1);
  TEST_CHECK(test_close(res->local_loss, ref_loss, 1e-6, 0), "n=%d B=%d: f_m(w_t) %.9g vs per-example mean %.9g", n,
             B, res->local_loss, ref_loss);
  printf("n=%2d B=%d (%d batches, last %d): local_grad vs mean of per-example backprop: rel err %.2e (tol 1e-5); "
         "loss %.7f vs %.7f\n", n, B, nbat, n - (nbat - 1) * B, e1, res->local_loss, ref_loss);
  /* a wrong weighting of the ragged batch would be visible: the unweighted mean of batch means */
  if (n % B) {
    float *bad = malloc(sizeof(float) * d);
    memset(acc, 0, sizeof(double) * d);
    for (int b = 0; b < nbat; b++) {
      int nb = n - b * B < B ? n - b * B : B;
      for (int i = b * B; i < b * B + nb; i++)
        for (size_t k = 0; k < d; k++) acc[k] += ex[(size_t)i * d + k] / (double)nb / nbat;
    }
    for (size_t k = 0; k < d; k++) bad[k] = (float)acc[k];
    double eb = test_rel_err(bad, ref, d);
    TEST_CHECK(eb > 1e-3, "the check is blind: mean of batch means differs from the reference by only %.3g", eb);
    printf("      (mean of batch means, the wrong weighting, differs by %.2e: the check can see it)\n", eb);
    free(bad);
  }

  /* the per-class gradient path: spry_client_true_gradient over the same examples (in the given order) */
  float *tg = malloc(sizeof(float) * d);
  double tl;
  spry_client_true_gradient(r, w, pool, n, tg, &tl);
  double e2 = test_rel_err(tg, ref, d);
  TEST_CHECK(e2 <= 1e-5, "n=%d B=%d: spry_client_true_gradient vs per-example: rel err %.3g > 1e-5", n, B, e2);
  TEST_CHECK(test_close(tl, ref_loss, 1e-6, 0), "true_gradient loss %.9g vs %.9g", tl, ref_loss);
  printf("n=%2d B=%d: spry_client_true_gradient vs per-example backprop: rel err %.2e (tol 1e-5)\n", n, B, e2);

  /* minibatch variance over the epoch-0 batches (their members: the training's sample_idx of steps 0..nbat-1) */
  TEST_CHECK(res->n_steps == nbat, "one local epoch takes %d steps, expected %d", res->n_steps, nbat);
  double *gb = malloc(sizeof(double) * d), *var = calloc((size_t)L, sizeof(double));
  double *sq = calloc((size_t)L, sizeof(double)), *g2 = calloc((size_t)L, sizeof(double));
  int equal = n % B == 0;
  for (int b = 0; b < nbat; b++) {
    int nb = 0;
    memset(gb, 0, sizeof(double) * d);
    for (int i = 0; i < B; i++) {
      int32_t id = res->sample_idx[(size_t)b * B + i];
      if (id < 0) continue;
      int p = pos_of(pool, n, id);
      TEST_CHECK(p >= 0, "batch %d holds example %d that the client does not", b, id);
      if (p < 0) continue;
      nb++;
      for (size_t k = 0; k < d; k++) gb[k] += ex[(size_t)p * d + k];
    }
    TEST_CHECK(nb == (b < nbat - 1 ? B : n - b * B), "batch %d has %d examples", b, nb);
    for (size_t k = 0; k < d; k++) gb[k] /= nb;
    for (int l = 0; l < L; l++)
      for (size_t k = blocks[l].offset; k < blocks[l].offset + blocks[l].size; k++) {
        double e = gb[k] - (double)ref[k];
        var[l] += e * e / nbat;
        sq[l] += gb[k] * gb[k] / nbat;
      }
  }
  for (int l = 0; l < L; l++)
    for (size_t k = blocks[l].offset; k < blocks[l].offset + blocks[l].size; k++) g2[l] += (double)ref[k] * ref[k];
  double worst = 0, worst_id = 0;
  for (int l = 0; l < L; l++) {
    double rel = fabs(res->minibatch_var[l] - var[l]) / var[l];
    if (rel > worst) worst = rel;
    TEST_CHECK(var[l] > 0 && rel <= 1e-4, "n=%d B=%d block %s: minibatch variance %.9g vs definition %.9g", n, B,
               blocks[l].name, res->minibatch_var[l], var[l]);
    if (equal) {
      double id = sq[l] - g2[l], rid = fabs(res->minibatch_var[l] - id) / id;
      if (rid > worst_id) worst_id = rid;
      TEST_CHECK(rid <= 1e-4, "n=%d B=%d block %s: minibatch variance %.9g vs mean ||g_b||^2 - ||g||^2 = %.9g", n, B,
                 blocks[l].name, res->minibatch_var[l], id);
    }
  }
  printf("n=%2d B=%d: minibatch variance per block (%d blocks, e.g. %s %.4g, ||g_l||^2 %.4g) vs definition: max rel "
         "err %.2e (tol 1e-4)", n, B, L, blocks[0].name, res->minibatch_var[0], g2[0], worst);
  if (equal) printf("; vs mean ||g_b||^2 - ||g||^2: %.2e", worst_id);
  printf("\n");

  /* central finite differences of f_m along 3 random unit directions */
  float *u = malloc(sizeof(float) * d), *wp = malloc(sizeof(float) * d);
  for (int t = 0; t < 3; t++) {
    test_fill_normal(u, d, 1.0f, 50 + (unsigned)t);
    double nu = sqrt(test_dot(u, u, d));
    for (size_t k = 0; k < d; k++) u[k] = (float)(u[k] / nu);
    const double h = 5e-2;
    double f[2];
    for (int s = 0; s < 2; s++) {
      for (size_t k = 0; k < d; k++) wp[k] = w[k] + (float)((s ? -h : h) * u[k]);
      memcpy(spry_model_w(m), wp, sizeof(float) * d);
      double ls;
      int correct;
      spry_client_evaluate(r, pool, n, &ls, &correct);
      f[s] = ls / n;
    }
    double fd = (f[0] - f[1]) / (2 * h), gu = test_dot(res->local_grad, u, d), atol = 2 * 2.4e-7 * ref_loss / h;
    TEST_CHECK(test_close(fd, gu, 1e-2, atol), "n=%d B=%d direction %d: FD %.7g vs <g,u> %.7g", n, B, t, fd, gu);
    printf("n=%2d B=%d direction %d: FD(h=5e-2) %.6g vs <local_grad,u> %.6g: rel diff %.2e (tol 1e-2 + %.1e abs)\n", n,
           B, t, fd, gu, fabs(fd - gu) / fabs(gu), atol);
  }
  free(u);
  free(wp);
  free(gb);
  free(var);
  free(sq);
  free(g2);
  free(tg);
  free(active);
  free(ex);
  free(ref);
  free(exloss);
  free(acc);
  free(w);
  spry_client_runner_free(&r);
  spry_model_free(&m);
}

int main(void) {
  spry_dataset *ds = spry_dataset_synthetic(200, 4, 32, 12, 0.25, 11);
  int n_pool;
  int32_t *pool = spry_dataset_split_indices(ds, 0, &n_pool);
  /* a client's split: every third train example (not contiguous, not sorted by class) */
  int32_t split[64];
  for (int i = 0; i < 23; i++) split[i] = pool[(3 * i + 1) % n_pool];
  check_split(ds, split, 23, 5); /* ragged: 5 + 5 + 5 + 5 + 3 */
  check_split(ds, split, 20, 5); /* equal batches: the variance identity */
  spry_free(&pool);
  spry_dataset_free(&ds);
  return test_finish("test_oracle");
}
