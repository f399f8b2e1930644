/* One client's local work in a round; see include/spry/client.h. */
#include "spry/client.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "spry/core.h"

struct spry_client_runner {
  const spry_config *cfg;
  spry_model *model;
  const spry_dataset *ds;
  size_t d;
  int n_blocks, B, Kcap;
  spry_client_optimizer *opt;
  spry_range *ranges; /* active blocks of the current client */
  int32_t *tokens, *lengths, *labels, *batch_idx, *perm;
  int perm_cap;
  float *probs, *g;
  float *true_step; /* [d] oracle: one step's true gradient (NULL unless log.gradients = oracle) */
  double *acc, *acc2; /* [d] oracle: double accumulators */
  float *p_scalars;   /* [Kcap] personalisation: one step's scalars */
  uint32_t *p_kidx;   /* [Kcap] */
  /* fwdllm: candidates per kept tangent, squared norms of the kept tangents on the active blocks */
  int n_cand;
  double *cand_norm2;
  float *blk_buf;
  /* result storage, grown on demand */
  spry_client_result res;
  int steps_cap;
};

spry_client_runner *spry_client_runner_create(const spry_config *cfg, spry_model *model, const spry_dataset *ds) {
  spry_client_runner *r = spry_alloc("client", sizeof *r);
  r->cfg = cfg;
  r->model = model;
  r->ds = ds;
  r->d = spry_model_n_trainable(model);
  r->n_blocks = spry_model_n_blocks(model);
  r->B = cfg->data.batch_size;
  r->Kcap = spry_config_step_K(cfg) > 0 ? spry_config_step_K(cfg) : 1;
  int T = ds->max_len;
  spry_client_opt_config oc =
      spry_client_opt_default(cfg->method.client_opt == SPRY_CLIENT_OPT_ADAMW ? SPRY_CLIENT_ADAMW : SPRY_CLIENT_SGD);
  oc.lr = cfg->method.client_lr;
  oc.weight_decay = cfg->method.client_weight_decay;
  r->opt = spry_client_opt_create(&oc, r->d);
  r->ranges = spry_alloc("client", sizeof(spry_range) * (size_t)r->n_blocks);
  r->tokens = spry_alloc("client", sizeof(int32_t) * (size_t)r->B * T);
  r->lengths = spry_alloc("client", sizeof(int32_t) * (size_t)r->B);
  r->labels = spry_alloc("client", sizeof(int32_t) * (size_t)r->B);
  r->batch_idx = spry_alloc("client", sizeof(int32_t) * (size_t)r->B);
  r->probs = spry_alloc_floats("client", (size_t)r->B * (ds->n_class > 0 ? ds->n_class : 1));
  r->g = spry_alloc_floats("client", r->d);
  r->res.update = spry_alloc_floats("client", r->d);
  if (cfg->log.gradients >= SPRY_GRADLOG_ORACLE) {
    r->res.true_grad = spry_alloc_floats("oracle", r->d);
    r->true_step = spry_alloc_floats("oracle", r->d);
    r->res.local_grad = spry_alloc_floats("oracle", r->d);
    r->res.minibatch_var = spry_alloc("oracle", sizeof(double) * (size_t)r->n_blocks);
  }
  if (cfg->method.estimator == SPRY_EST_FWDLLM) {
    r->n_cand = cfg->method.fwdllm_candidates;
    r->cand_norm2 = spry_alloc("client", sizeof(double) * (size_t)r->Kcap);
    size_t maxb = 0;
    for (int b = 0; b < r->n_blocks; b++)
      if (spry_model_blocks(model)[b].size > maxb) maxb = spry_model_blocks(model)[b].size;
    r->blk_buf = spry_alloc_floats("client", maxb);
  }
  return r;
}

void spry_client_runner_free(spry_client_runner **pr) {
  spry_client_runner *r = *pr;
  if (!r) return;
  spry_client_opt_free(&r->opt);
  spry_free(&r->ranges);
  spry_free(&r->tokens);
  spry_free(&r->lengths);
  spry_free(&r->labels);
  spry_free(&r->batch_idx);
  spry_free(&r->perm);
  spry_free(&r->probs);
  spry_free(&r->g);
  spry_free(&r->cand_norm2);
  spry_free(&r->blk_buf);
  spry_free(&r->res.update);
  spry_free(&r->res.true_grad);
  spry_free(&r->true_step);
  spry_free(&r->res.local_grad);
  spry_free(&r->res.minibatch_var);
  spry_free(&r->acc);
  spry_free(&r->acc2);
  spry_free(&r->p_scalars);
  spry_free(&r->p_kidx);
  spry_free(&r->res.scalars);
  spry_free(&r->res.k_index);
  spry_free(&r->res.step_K);
  spry_free(&r->res.sample_idx);
  spry_free(pr);
}

spry_tangent_spec spry_client_tangent_spec(const spry_config *cfg, uint32_t round, int client, uint32_t step, int K,
                                           const unsigned char *active) {
  spry_tangent_spec s = {.K = K, .active = active, .kind = cfg->method.tangent};
  s.key = (spry_rng_key){.seed = cfg->run.seed, .purpose = SPRY_RNG_TANGENT, .round = round,
                         .client = (uint32_t)client, .step = step, .k = 0};
  return s;
}

/* Batch of dataset examples idx[n] into the runner's buffers. */
static spry_batch make_batch(spry_client_runner *r, const int32_t *idx, int n) {
  int T = spry_dataset_gather(r->ds, idx, n, r->tokens, r->lengths, r->labels);
  spry_batch b = {.B = n, .T = T, .tokens = r->tokens, .lengths = r->lengths,
                  .labels = r->cfg->model.task == SPRY_TASK_CLASSIFY ? r->labels : NULL};
  return b;
}

void spry_client_evaluate(spry_client_runner *r, const int32_t *idx, int n, double *loss_sum, int *correct) {
  *loss_sum = 0;
  *correct = 0;
  int C = r->ds->n_class;
  for (int i = 0; i < n; i += r->B) {
    int nb = n - i < r->B ? n - i : r->B;
    spry_batch b = make_batch(r, idx + i, nb);
    int cls = r->cfg->model.task == SPRY_TASK_CLASSIFY;
    float loss = spry_model_forward(r->model, &b, cls ? r->probs : NULL);
    *loss_sum += (double)loss * nb;
    if (!cls) continue;
    for (int j = 0; j < nb; j++) {
      int best = 0;
      for (int c = 1; c < C; c++)
        if (r->probs[j * C + c] > r->probs[j * C + best]) best = c;
      *correct += best == r->labels[j];
    }
  }
}

static void ensure_steps(spry_client_runner *r, int steps) {
  if (steps <= r->steps_cap) return;
  spry_free(&r->res.scalars);
  spry_free(&r->res.k_index);
  spry_free(&r->res.step_K);
  spry_free(&r->res.sample_idx);
  r->res.scalars = spry_alloc_floats("client", (size_t)steps * r->Kcap);
  r->res.k_index = spry_alloc("client", sizeof(uint32_t) * (size_t)steps * r->Kcap);
  r->res.step_K = spry_alloc("client", sizeof(int) * (size_t)steps);
  r->res.sample_idx = spry_alloc("client", sizeof(int32_t) * (size_t)steps * r->B);
  r->steps_cap = steps;
}

spry_fwdllm_variance spry_fwdllm_variance_test(int K, double sum_sq, double mean_sq, double threshold) {
  spry_fwdllm_variance v = {.var_mean = NAN, .grad_sq = NAN, .enough = 0};
  if (K < 2) return v;
  v.var_mean = (sum_sq - K * mean_sq) / ((double)K * (K - 1));
  v.grad_sq = mean_sq - v.var_mean;
  v.enough = v.var_mean <= threshold * (v.grad_sq > 0 ? v.grad_sq : 0.0);
  return v;
}

int spry_fwdllm_next_K(int K, int K_max, double sum_sq, double mean_sq, double threshold) {
  if (K >= K_max || spry_fwdllm_variance_test(K, sum_sq, mean_sq, threshold).enough) return K;
  return 2 * K < K_max ? 2 * K : K_max;
}

/* FwdLLM on one batch (docs/federation.md): the k-th kept tangent is the candidate, among stream indices
 * k*C .. k*C + C-1, with the largest |cos(v, g_prev)| over the active blocks (ties: the lowest index; no g_prev
 * yet: the first candidate). K starts at method.K and doubles, up to the cap, until the variance test
 * (spry_fwdllm_variance_test: tr Var(mean) <= threshold * unbiased ||g||^2) passes. */
static float fwdllm_step(spry_client_runner *r, const spry_batch *b, spry_tangent_spec spec, const float *g_prev,
                         float *scalars, uint32_t *k_index, int *K_used) {
  const spry_block *blocks = spry_model_blocks(r->model);
  int C = r->n_cand;
  double gp2 = 0;
  if (g_prev)
    for (int blk = 0; blk < r->n_blocks; blk++)
      if (spec.active[blk])
        for (size_t i = 0; i < blocks[blk].size; i++)
          gp2 += (double)g_prev[blocks[blk].offset + i] * g_prev[blocks[blk].offset + i];
  int K = spec.K, done = 0, Kmax = r->Kcap;
  float loss = 0;
  for (;;) {
    for (int k = done; k < K; k++) { /* select tangents done..K-1 */
      uint32_t best = (uint32_t)k * (uint32_t)C;
      double best_cos = -1, best_n2 = 0;
      for (int j = 0; j < (gp2 > 0 ? C : 1); j++) {
        spry_rng_key key = spec.key;
        key.k = (uint32_t)k * (uint32_t)C + (uint32_t)j;
        double dot = 0, n2 = 0;
        for (int blk = 0; blk < r->n_blocks; blk++) {
          if (!spec.active[blk]) continue;
          spry_rng_fill(key, spec.kind, blocks[blk].offset, blocks[blk].size, r->blk_buf);
          for (size_t i = 0; i < blocks[blk].size; i++) {
            n2 += (double)r->blk_buf[i] * r->blk_buf[i];
            if (gp2 > 0) dot += (double)r->blk_buf[i] * g_prev[blocks[blk].offset + i];
          }
        }
        double c = gp2 > 0 ? fabs(dot) / sqrt(n2 * gp2) : 0.0;
        if (c > best_cos) best_cos = c, best = key.k, best_n2 = n2;
      }
      k_index[k] = best;
      r->cand_norm2[k] = best_n2;
    }
    spry_tangent_spec part = spec;
    part.k_list = k_index + done;
    part.K = K - done;
    loss = spry_model_jvp(r->model, b, &part, scalars + done);
    done = K;
    spry_tangent_spec all = spec;
    all.k_list = k_index;
    all.K = K;
    spry_forward_gradient(r->model, &all, scalars, r->g);
    if (K >= Kmax) break;
    /* the K single-tangent estimates j_k v_k: sum of their squared norms, and the squared norm of their mean */
    double g2 = 0, e2 = 0;
    for (size_t i = 0; i < r->d; i++) g2 += (double)r->g[i] * r->g[i];
    for (int k = 0; k < K; k++) e2 += (double)scalars[k] * scalars[k] * r->cand_norm2[k];
    int next = spry_fwdllm_next_K(K, Kmax, e2, g2, r->cfg->method.fwdllm_threshold);
    if (next == K) break;
    K = next;
  }
  *K_used = K;
  return loss;
}

static void ensure_oracle(spry_client_runner *r) {
  if (!r->true_step) r->true_step = spry_alloc_floats("oracle", r->d);
  if (!r->acc) r->acc = spry_alloc("oracle", sizeof(double) * r->d);
  if (!r->acc2) r->acc2 = spry_alloc("oracle", sizeof(double) * r->d);
}

void spry_client_true_gradient(spry_client_runner *r, const float *w, const int32_t *idx, int n, float *grad,
                               double *loss_mean) {
  memcpy(spry_model_w(r->model), w, sizeof(float) * r->d);
  memset(grad, 0, sizeof(float) * r->d);
  if (loss_mean) *loss_mean = NAN;
  if (n <= 0) return;
  ensure_oracle(r);
  memset(r->acc, 0, sizeof(double) * r->d);
  double ls = 0;
  for (int i = 0; i < n; i += r->B) {
    int nb = n - i < r->B ? n - i : r->B;
    spry_batch b = make_batch(r, idx + i, nb);
    ls += (double)spry_model_backward(r->model, &b, NULL, r->true_step) * nb;
    for (size_t k = 0; k < r->d; k++) r->acc[k] += (double)nb * r->true_step[k];
  }
  for (size_t k = 0; k < r->d; k++) grad[k] = (float)(r->acc[k] / n);
  if (loss_mean) *loss_mean = ls / n;
}

/* The oracle's full local gradient at the broadcast weights (the model's weights on entry), its loss, and the
 * minibatch variance per block over the client's epoch-0 batches (client.h): one reverse pass per batch. With
 * a_b = the gradient of batch b (n_b examples) and g = sum_b (n_b/n) a_b, sigma_l^2 = (1/nb) sum_b ||a_b^l - g^l||^2
 * = (1/nb) (sum_b ||a_b^l||^2 - 2 <sum_b a_b^l, g^l> + nb ||g^l||^2), all in double. */
static void local_oracle(spry_client_runner *r, uint32_t round, int client, const int32_t *train_idx, int n_train) {
  spry_client_result *res = &r->res;
  ensure_oracle(r);
  memcpy(r->perm, train_idx, sizeof(int32_t) * (size_t)n_train);
  spry_rng_stream st = spry_rng_stream_at((spry_rng_key){.seed = r->cfg->run.seed, .purpose = SPRY_RNG_DATA,
                                                         .round = round, .client = (uint32_t)client, .step = 0});
  spry_stream_shuffle(&st, r->perm, (size_t)n_train);
  const spry_block *blocks = spry_model_blocks(r->model);
  double *full = r->acc, *sum = r->acc2, *s1 = res->minibatch_var;
  memset(full, 0, sizeof(double) * r->d);
  memset(sum, 0, sizeof(double) * r->d);
  for (int l = 0; l < r->n_blocks; l++) s1[l] = 0;
  double ls = 0;
  int nbat = 0;
  for (int i = 0; i < n_train; i += r->B, nbat++) {
    int nb = n_train - i < r->B ? n_train - i : r->B;
    spry_batch b = make_batch(r, r->perm + i, nb);
    ls += (double)spry_model_backward(r->model, &b, NULL, r->true_step) * nb;
    for (size_t k = 0; k < r->d; k++) {
      full[k] += (double)nb * r->true_step[k];
      sum[k] += r->true_step[k];
    }
    for (int l = 0; l < r->n_blocks; l++) {
      double q = 0;
      for (size_t k = blocks[l].offset; k < blocks[l].offset + blocks[l].size; k++)
        q += (double)r->true_step[k] * r->true_step[k];
      s1[l] += q;
    }
  }
  for (size_t k = 0; k < r->d; k++) {
    full[k] /= n_train;
    res->local_grad[k] = (float)full[k];
  }
  for (int l = 0; l < r->n_blocks; l++) {
    double cross = 0, g2 = 0;
    for (size_t k = blocks[l].offset; k < blocks[l].offset + blocks[l].size; k++) {
      cross += sum[k] * full[k];
      g2 += full[k] * full[k];
    }
    double v = (s1[l] - 2 * cross + nbat * g2) / nbat;
    s1[l] = v > 0 ? v : 0; /* rounding can leave -tiny for a zero variance */
  }
  res->local_loss = ls / n_train;
}

/* One estimate of the method on batch b at the model's weights into r->g; returns the loss. */
static float estimate(spry_client_runner *r, const spry_batch *b, spry_tangent_spec spec, const unsigned char *active,
                      const float *g_prev, float *sc, uint32_t *ki, int *K_used) {
  const spry_config_method *mc = &r->cfg->method;
  float loss = 0;
  *K_used = mc->estimator == SPRY_EST_BACKPROP ? 0 : r->Kcap;
  switch (mc->estimator) {
    case SPRY_EST_FORWARD:
      loss = spry_model_jvp(r->model, b, &spec, sc);
      spry_forward_gradient(r->model, &spec, sc, r->g);
      break;
    case SPRY_EST_ZEROTH:
      spry_model_zeroth(r->model, b, &spec, (float)mc->zo_eps, sc, &loss);
      spry_forward_gradient(r->model, &spec, sc, r->g);
      break;
    case SPRY_EST_BACKPROP:
      loss = spry_model_backward(r->model, b, active, r->g);
      break;
    case SPRY_EST_FWDLLM:
      loss = fwdllm_step(r, b, spec, g_prev, sc, ki, K_used);
      break;
  }
  return loss;
}

const spry_client_result *spry_client_run(spry_client_runner *r, uint32_t round, int client,
                                          const unsigned char *active, const float *w_global,
                                          const int32_t *train_idx, int n_train, const int32_t *test_idx, int n_test,
                                          const float *g_prev) {
  const spry_config *cfg = r->cfg;
  const spry_config_method *mc = &cfg->method;
  SPRY_CHECK(n_train >= 1, "client %d has no training examples", client);
  float *w = spry_model_w(r->model);
  memcpy(w, w_global, sizeof(float) * r->d);
  spry_client_result *res = &r->res;
  res->client = client;
  res->n_examples = n_train;
  res->test_correct = res->test_count = 0;
  res->test_loss = 0;
  if (test_idx && n_test > 0) {
    double ls;
    spry_client_evaluate(r, test_idx, n_test, &ls, &res->test_correct);
    res->test_count = n_test;
    res->test_loss = ls / n_test;
  }

  int n_ranges = 0;
  const spry_block *blocks = spry_model_blocks(r->model);
  for (int b = 0; b < r->n_blocks; b++)
    if (active[b]) r->ranges[n_ranges++] = (spry_range){blocks[b].offset, blocks[b].size};
  SPRY_CHECK(n_ranges > 0, "client %d was assigned no block", client);

  int per_epoch = (n_train + r->B - 1) / r->B;
  int steps = mc->comm == SPRY_COMM_ITERATION ? 1 : (mc->local_steps > 0 ? mc->local_steps : mc->local_epochs * per_epoch);
  ensure_steps(r, steps);
  if (n_train > r->perm_cap) {
    spry_free(&r->perm);
    r->perm = spry_alloc("client", sizeof(int32_t) * (size_t)n_train);
    r->perm_cap = n_train;
  }
  res->local_loss = NAN;
  if (res->local_grad) local_oracle(r, round, client, train_idx, n_train); /* at w_t, before any step */
  spry_client_opt_reset(r->opt);
  res->n_steps = steps;
  res->K = mc->estimator == SPRY_EST_BACKPROP ? 0 : r->Kcap;
  double loss_sum = 0;
  if (res->true_grad) memset(res->true_grad, 0, sizeof(float) * r->d);
  for (int s = 0; s < steps; s++) {
    int batch = s % per_epoch;
    if (batch == 0) { /* a new local epoch: a fresh permutation of the client's examples */
      memcpy(r->perm, train_idx, sizeof(int32_t) * (size_t)n_train);
      spry_rng_stream st = spry_rng_stream_at((spry_rng_key){.seed = cfg->run.seed, .purpose = SPRY_RNG_DATA,
                                                             .round = round, .client = (uint32_t)client,
                                                             .step = (uint32_t)(s / per_epoch)});
      spry_stream_shuffle(&st, r->perm, (size_t)n_train);
    }
    int first = batch * r->B, nb = n_train - first < r->B ? n_train - first : r->B;
    int32_t *sidx = res->sample_idx + (size_t)s * r->B;
    for (int i = 0; i < r->B; i++) sidx[i] = i < nb ? r->perm[first + i] : -1;
    spry_batch b = make_batch(r, r->perm + first, nb);
    if (res->true_grad) { /* the oracle: before the estimate, at the same weights and on the same batch */
      spry_model_backward(r->model, &b, NULL, r->true_step);
      for (size_t i = 0; i < r->d; i++) res->true_grad[i] += r->true_step[i];
    }
    spry_tangent_spec spec = spry_client_tangent_spec(cfg, round, client, (uint32_t)s, mc->K, active);
    float *sc = res->scalars + (size_t)s * r->Kcap;
    uint32_t *ki = res->k_index + (size_t)s * r->Kcap;
    float loss = estimate(r, &b, spec, active, g_prev, sc, ki, &res->step_K[s]);
    if (mc->estimator == SPRY_EST_FWDLLM) /* the step's unused slots (K grew to step_K[s] <= Kcap) */
      for (int k = res->step_K[s]; k < r->Kcap; k++) sc[k] = NAN, ki[k] = UINT32_MAX;
    loss_sum += loss;
    if (mc->comm == SPRY_COMM_EPOCH) spry_client_opt_step(r->opt, w, r->g, r->ranges, n_ranges);
  }
  res->loss = loss_sum / steps;
  if (res->true_grad && steps > 1)
    for (size_t i = 0; i < r->d; i++) res->true_grad[i] /= (float)steps;
  memcpy(res->update, mc->comm == SPRY_COMM_ITERATION ? r->g : w, sizeof(float) * r->d);
  return res;
}

void spry_client_personalize(spry_client_runner *r, uint32_t round, int client, const unsigned char *active,
                             const float *w_global, const int32_t *train_idx, int n_train, int epochs,
                             const int32_t *test_idx, int n_test, const float *g_prev, int *correct,
                             double *loss_mean) {
  const spry_config *cfg = r->cfg;
  *correct = 0;
  *loss_mean = NAN;
  SPRY_CHECK(n_train >= 1, "client %d has no training examples", client);
  float *w = spry_model_w(r->model);
  memcpy(w, w_global, sizeof(float) * r->d);
  int n_ranges = 0;
  const spry_block *blocks = spry_model_blocks(r->model);
  for (int b = 0; b < r->n_blocks; b++)
    if (active[b]) r->ranges[n_ranges++] = (spry_range){blocks[b].offset, blocks[b].size};
  SPRY_CHECK(n_ranges > 0, "client %d was assigned no block", client);
  if (n_train > r->perm_cap) {
    spry_free(&r->perm);
    r->perm = spry_alloc("client", sizeof(int32_t) * (size_t)n_train);
    r->perm_cap = n_train;
  }
  if (!r->p_scalars) {
    r->p_scalars = spry_alloc_floats("client", (size_t)r->Kcap);
    r->p_kidx = spry_alloc("client", sizeof(uint32_t) * (size_t)r->Kcap);
  }
  spry_client_opt_reset(r->opt);
  int per_epoch = (n_train + r->B - 1) / r->B;
  for (int e = 0, s = 0; e < epochs; e++) {
    memcpy(r->perm, train_idx, sizeof(int32_t) * (size_t)n_train);
    spry_rng_stream st = spry_rng_stream_at((spry_rng_key){.seed = cfg->run.seed, .purpose = SPRY_RNG_DATA,
                                                           .round = round, .client = (uint32_t)client,
                                                           .step = SPRY_PERSONAL_STEP | (uint32_t)e});
    spry_stream_shuffle(&st, r->perm, (size_t)n_train);
    for (int bi = 0; bi < per_epoch; bi++, s++) {
      int first = bi * r->B, nb = n_train - first < r->B ? n_train - first : r->B;
      spry_batch b = make_batch(r, r->perm + first, nb);
      spry_tangent_spec spec =
          spry_client_tangent_spec(cfg, round, client, SPRY_PERSONAL_STEP | (uint32_t)s, cfg->method.K, active);
      int K_used;
      estimate(r, &b, spec, active, g_prev, r->p_scalars, r->p_kidx, &K_used);
      spry_client_opt_step(r->opt, w, r->g, r->ranges, n_ranges);
    }
  }
  if (n_test > 0) {
    double ls;
    spry_client_evaluate(r, test_idx, n_test, &ls, correct);
    *loss_mean = ls / n_test;
  }
}
