/* The oracle (log.gradients = oracle); see include/spry/oracle.h and docs/runfile.md "Oracle". */
#include "spry/oracle.h"

#include <math.h>
#include <string.h>

#include "spry/core.h"
#include "spry/mpi_util.h"

struct spry_oracle {
  const spry_config *cfg;
  spry_client_runner *runner;
  const spry_dataset *ds;
  const spry_partition *part;
  const spry_range *blocks;
  int L, C, M, rank, size, n_pool;
  size_t d;
  MPI_Comm comm;
  int *recv_counts, *recv_displs;
  /* the slots' data parsed from the uploads: rank 0 all M slots (*_all), every rank its own (*_local) */
  float *batch_all, *local_all;       /* rank 0: [M*d] */
  double *mbvar_all;                  /* rank 0: [M*L] */
  float *batch_local, *local_local;   /* [M*d] */
  double *mbvar_local, *resid_local;  /* [M*L] */
  int32_t *class_offset;   /* [C+1] class c's train-pool examples are class_examples[offset[c]..) */
  int32_t *class_examples; /* [n_pool] dataset indices grouped by class, ascending within a class */
  float *class_grads;      /* [C*d] per-class gradients G_c (every rank: all, after the allgather) */
  double *class_loss;      /* [C] F_c(w_t) (NaN for a class without examples) */
  double *gd, *gbd;        /* rank 0: [d] g and the batch-path g, in double (the statistics use them unrounded) */
  float *true_global, *batch_global; /* rank 0: [d] */
  double *bias_sq, *batch_bias_sq, *class_var; /* rank 0: [L] */
  double *mix;             /* [d] sum_c pihat_mc G_c for one slot */
  float *pool_grad;        /* rank 0: [d] grad F(w_t) rounded to float (the secant's point) */
  float *prev_w, *prev_pool; /* rank 0: [d] w_{t-1}, grad F(w_{t-1}) */
  int have_prev;
};

spry_oracle *spry_oracle_create(const spry_oracle_setup *s) {
  spry_oracle *o = spry_alloc("oracle", sizeof *o);
  o->cfg = s->cfg;
  o->runner = s->runner;
  o->ds = s->ds;
  o->part = s->part;
  o->blocks = s->blocks;
  o->L = s->L;
  o->d = s->d;
  o->C = s->ds->n_class;
  o->M = s->cfg->fl.clients_per_round;
  o->n_pool = s->n_pool;
  o->comm = s->comm;
  SPRY_CHECK_MPI(MPI_Comm_rank(s->comm, &o->rank));
  SPRY_CHECK_MPI(MPI_Comm_size(s->comm, &o->size));
  int C = o->C, M = o->M, L = o->L;
  size_t d = o->d;
  o->recv_counts = spry_alloc("oracle", sizeof(int) * (size_t)o->size);
  o->recv_displs = spry_alloc("oracle", sizeof(int) * (size_t)o->size);
  o->batch_local = spry_alloc_floats("oracle", (size_t)M * d);
  o->local_local = spry_alloc_floats("oracle", (size_t)M * d);
  o->mbvar_local = spry_alloc("oracle", sizeof(double) * (size_t)M * L);
  o->resid_local = spry_alloc("oracle", sizeof(double) * (size_t)M * L);
  o->class_offset = spry_alloc("oracle", sizeof(int32_t) * (size_t)(C + 1));
  o->class_examples = spry_alloc("oracle", sizeof(int32_t) * (size_t)(s->n_pool > 0 ? s->n_pool : 1));
  for (int i = 0; i < s->n_pool; i++) o->class_offset[s->ds->labels[s->pool[i]] + 1]++;
  for (int c = 0; c < C; c++) o->class_offset[c + 1] += o->class_offset[c];
  int32_t *fill = spry_alloc("oracle", sizeof(int32_t) * (size_t)(C > 0 ? C : 1));
  memcpy(fill, o->class_offset, sizeof(int32_t) * (size_t)C);
  for (int i = 0; i < s->n_pool; i++) o->class_examples[fill[s->ds->labels[s->pool[i]]]++] = s->pool[i];
  spry_free(&fill);
  o->class_grads = spry_alloc_floats("oracle", (size_t)C * d);
  o->class_loss = spry_alloc("oracle", sizeof(double) * (size_t)(C > 0 ? C : 1));
  o->mix = spry_alloc("oracle", sizeof(double) * d);
  if (o->rank == 0) {
    o->batch_all = spry_alloc_floats("oracle", (size_t)M * d);
    o->local_all = spry_alloc_floats("oracle", (size_t)M * d);
    o->mbvar_all = spry_alloc("oracle", sizeof(double) * (size_t)M * L);
    o->gd = spry_alloc("oracle", sizeof(double) * d);
    o->gbd = spry_alloc("oracle", sizeof(double) * d);
    o->true_global = spry_alloc_floats("oracle", d);
    o->batch_global = spry_alloc_floats("oracle", d);
    o->bias_sq = spry_alloc("oracle", sizeof(double) * (size_t)L);
    o->batch_bias_sq = spry_alloc("oracle", sizeof(double) * (size_t)L);
    o->class_var = spry_alloc("oracle", sizeof(double) * (size_t)L);
    o->pool_grad = spry_alloc_floats("oracle", d);
    o->prev_w = spry_alloc_floats("oracle", d);
    o->prev_pool = spry_alloc_floats("oracle", d);
  }
  return o;
}

void spry_oracle_free(spry_oracle **po) {
  spry_oracle *o = *po;
  if (!o) return;
  void *bufs[] = {&o->recv_counts, &o->recv_displs, &o->batch_all, &o->local_all, &o->mbvar_all, &o->batch_local,
                  &o->local_local, &o->mbvar_local, &o->resid_local, &o->class_offset, &o->class_examples,
                  &o->class_grads, &o->class_loss, &o->gd, &o->gbd, &o->true_global, &o->batch_global, &o->bias_sq,
                  &o->batch_bias_sq, &o->class_var, &o->mix, &o->pool_grad, &o->prev_w, &o->prev_pool};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) spry_free(bufs[i]);
  spry_free(po);
}

spry_message_store spry_oracle_store(spry_oracle *o, int all, int j, float *dense) {
  spry_message_store st = {.dense = dense};
  if (!o) return st;
  size_t d = o->d, L = (size_t)o->L;
  st.batch_gradient = (all ? o->batch_all : o->batch_local) + (size_t)j * d;
  st.local_gradient = (all ? o->local_all : o->local_local) + (size_t)j * d;
  st.minibatch_var = (all ? o->mbvar_all : o->mbvar_local) + (size_t)j * L;
  return st;
}

void spry_oracle_classes(spry_oracle *o, const float *w_t) {
  int C = o->C, first, count;
  size_t d = o->d;
  spry_rank_slots(C, o->size, o->rank, &first, &count);
  for (int c = first; c < first + count; c++)
    spry_client_true_gradient(o->runner, w_t, o->class_examples + o->class_offset[c],
                              o->class_offset[c + 1] - o->class_offset[c], o->class_grads + (size_t)c * d,
                              &o->class_loss[c]);
  SPRY_CHECK((size_t)C * d < (size_t)INT32_MAX, "oracle: %d classes x d = %zu floats exceed one MPI message", C, d);
  /* every rank gets every class (each rank computes its own slots' residuals) */
  spry_rank_slot_layout(C, o->size, (int)d, o->recv_counts, o->recv_displs);
  SPRY_CHECK_MPI(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_FLOAT, o->class_grads, o->recv_counts, o->recv_displs,
                                MPI_FLOAT, o->comm));
  spry_rank_slot_layout(C, o->size, 1, o->recv_counts, o->recv_displs);
  SPRY_CHECK_MPI(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DOUBLE, o->class_loss, o->recv_counts, o->recv_displs,
                                MPI_DOUBLE, o->comm));
}

void spry_oracle_residuals(spry_oracle *o, spry_slot_record *local, int n_local) {
  int C = o->C, L = o->L;
  size_t d = o->d;
  for (int j = 0; j < n_local; j++) {
    spry_slot_record *r = &local[j];
    const int32_t *cnt = o->part->train_counts + (size_t)r->client * C;
    int n = spry_partition_n_train(o->part, r->client);
    memset(o->mix, 0, sizeof(double) * d);
    for (int c = 0; c < C; c++) {
      if (!cnt[c]) continue;
      double pi = (double)cnt[c] / n;
      const float *G = o->class_grads + (size_t)c * d;
      for (size_t i = 0; i < d; i++) o->mix[i] += pi * G[i];
    }
    double *res = o->resid_local + (size_t)j * L;
    for (int l = 0; l < L; l++) {
      double s = 0;
      for (size_t i = o->blocks[l].first; i < o->blocks[l].first + o->blocks[l].len; i++) {
        double e = r->local_grad[i] - o->mix[i];
        s += e * e;
      }
      res[l] = s;
    }
    r->residual_sq = res;
  }
}

/* g = sum_j p_j x_j (double, slot order) and, per block, ||b^l||^2 and the block's share of Z^2. */
static double bias_and_z2(const spry_oracle *o, const spry_plan *plan, const double *wt, double wsum,
                          const float *x, double *g, float *gf, double *bias) {
  size_t d = o->d;
  int M = plan->n_slots;
  memset(g, 0, sizeof(double) * d);
  for (int j = 0; j < M; j++) {
    const float *xj = x + (size_t)j * d;
    double pj = wt[j] / wsum;
    for (size_t i = 0; i < d; i++) g[i] += pj * xj[i];
  }
  for (size_t i = 0; i < d; i++) gf[i] = (float)g[i];
  double z2 = 0;
  for (int l = 0; l < o->L; l++) {
    size_t off = o->blocks[l].first, n = o->blocks[l].len;
    int s0 = plan->block_slot_offset[l], s1 = plan->block_slot_offset[l + 1];
    double qsum = 0;
    for (int k = s0; k < s1; k++) qsum += wt[plan->block_slots[k]];
    double b2 = 0;
    for (size_t i = off; i < off + n; i++) {
      double mean = 0;
      for (int k = s0; k < s1; k++) {
        int j = plan->block_slots[k];
        double gji = x[(size_t)j * d + i];
        mean += wt[j] / qsum * gji;
        z2 += wt[j] / qsum * (gji - g[i]) * (gji - g[i]);
      }
      b2 += (mean - g[i]) * (mean - g[i]);
    }
    bias[l] = b2;
  }
  return z2;
}

void spry_oracle_statistics(spry_oracle *o, const spry_plan *plan, const spry_slot_record *slots,
                            const float *aggregate, const float *w_t, spry_round_record *rec) {
  const spry_config *cfg = o->cfg;
  int M = plan->n_slots, C = o->C;
  size_t d = o->d;
  double *wt = spry_alloc("oracle", sizeof(double) * (size_t)M), wsum = 0;
  for (int j = 0; j < M; j++) {
    wt[j] = cfg->fl.weighting == SPRY_WEIGHT_UNIFORM ? 1.0 : (double)slots[j].n_examples;
    wsum += wt[j];
  }
  double *g = o->gd;
  rec->z2 = bias_and_z2(o, plan, wt, wsum, o->local_all, g, o->true_global, o->bias_sq);
  rec->batch_z2 = bias_and_z2(o, plan, wt, wsum, o->batch_all, o->gbd, o->batch_global, o->batch_bias_sq);
  /* V_l over the classes that have examples */
  int Ce = 0;
  for (int c = 0; c < C; c++) Ce += o->class_offset[c + 1] > o->class_offset[c];
  for (int l = 0; l < o->L; l++) {
    size_t off = o->blocks[l].first, n = o->blocks[l].len;
    double n2 = 0, m2 = 0;
    for (size_t i = off; i < off + n; i++) {
      double mean = 0;
      for (int c = 0; c < C; c++) {
        if (o->class_offset[c + 1] == o->class_offset[c]) continue;
        double x = o->class_grads[(size_t)c * d + i];
        n2 += x * x;
        mean += x;
      }
      mean /= Ce > 0 ? Ce : 1;
      m2 += mean * mean;
    }
    o->class_var[l] = Ce > 0 ? n2 / Ce - m2 : NAN;
  }
  double g2 = 0;
  for (size_t i = 0; i < d; i++) g2 += g[i] * g[i];
  rec->sq_error = rec->cosine = NAN;
  if (cfg->method.comm == SPRY_COMM_ITERATION) {
    double e2 = 0, dot = 0, a2 = 0;
    for (size_t i = 0; i < d; i++) {
      double a = aggregate[i];
      e2 += (a - g[i]) * (a - g[i]);
      dot += a * g[i];
      a2 += a * a;
    }
    rec->sq_error = e2;
    rec->cosine = a2 > 0 && g2 > 0 ? dot / sqrt(a2 * g2) : NAN;
  }
  /* the participants' objective f(w_t) and ||grad f(w_t)||^2 */
  double obj = 0;
  for (int j = 0; j < M; j++) obj += wt[j] / wsum * slots[j].local_loss;
  rec->objective = obj;
  rec->grad_sq = g2;
  /* the whole train pool: F = sum_c (n_c/n) F_c, grad F = sum_c (n_c/n) G_c */
  double pobj = 0, pg2 = 0;
  double *pg = o->mix;
  memset(pg, 0, sizeof(double) * d);
  for (int c = 0; c < C; c++) {
    int nc = o->class_offset[c + 1] - o->class_offset[c];
    if (!nc) continue;
    double share = (double)nc / o->n_pool;
    pobj += share * o->class_loss[c];
    const float *G = o->class_grads + (size_t)c * d;
    for (size_t i = 0; i < d; i++) pg[i] += share * G[i];
  }
  for (size_t i = 0; i < d; i++) {
    pg2 += pg[i] * pg[i];
    o->pool_grad[i] = (float)pg[i];
  }
  rec->pool_objective = pobj;
  rec->pool_grad_sq = pg2;
  /* the secant against the previous round's point (float32 values, so a resume restores them exactly) */
  rec->secant = NAN;
  if (o->have_prev) {
    double dg = 0, dw = 0;
    for (size_t i = 0; i < d; i++) {
      double a = (double)o->pool_grad[i] - o->prev_pool[i], b = (double)w_t[i] - o->prev_w[i];
      dg += a * a;
      dw += b * b;
    }
    if (dw > 0) rec->secant = sqrt(dg) / sqrt(dw);
  }
  memcpy(o->prev_pool, o->pool_grad, sizeof(float) * d);
  memcpy(o->prev_w, w_t, sizeof(float) * d);
  o->have_prev = 1;
  rec->true_gradient = o->true_global;
  rec->batch_gradient = o->batch_global;
  rec->class_gradients = o->class_grads;
  rec->bias_sq = o->bias_sq;
  rec->batch_bias_sq = o->batch_bias_sq;
  rec->class_variance = o->class_var;
  spry_free(&wt);
}

void spry_oracle_secant_state(spry_oracle *o, const float **w_prev, const float **pool_grad_prev) {
  *w_prev = o && o->have_prev ? o->prev_w : NULL;
  *pool_grad_prev = o && o->have_prev ? o->prev_pool : NULL;
}

void spry_oracle_restore_secant(spry_oracle *o, const float *w_prev, const float *pool_grad_prev) {
  if (!o || o->rank != 0) return;
  o->have_prev = w_prev && pool_grad_prev;
  if (!o->have_prev) return;
  memcpy(o->prev_w, w_prev, sizeof(float) * o->d);
  memcpy(o->prev_pool, pool_grad_prev, sizeof(float) * o->d);
}
