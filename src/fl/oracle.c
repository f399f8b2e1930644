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
  const spry_range *blocks;
  int L, C, M, rank, size;
  size_t d;
  MPI_Comm comm;
  int *recv_counts, *recv_displs;
  float *batch_all;      /* rank 0: [M*d] slots' batch-path gradients */
  float *batch_local;    /* [M*d] this rank's slots */
  int32_t *class_offset;   /* [C+1] class c's train-pool examples are class_examples[offset[c]..) */
  int32_t *class_examples; /* [n_pool] dataset indices grouped by class, ascending within a class */
  float *class_grads;      /* [C*d] per-class gradients (rank 0: all; others: their classes) */
  float *true_global;      /* rank 0: [d] g */
  double *true_global_d;   /* rank 0: [d] g in double (the statistics use it unrounded) */
  double *bias_sq, *class_var; /* rank 0: [L] */
};

spry_oracle *spry_oracle_create(const spry_oracle_setup *s) {
  spry_oracle *o = spry_alloc("oracle", sizeof *o);
  o->cfg = s->cfg;
  o->runner = s->runner;
  o->ds = s->ds;
  o->blocks = s->blocks;
  o->L = s->L;
  o->d = s->d;
  o->C = s->ds->n_class;
  o->M = s->cfg->fl.clients_per_round;
  o->comm = s->comm;
  SPRY_CHECK_MPI(MPI_Comm_rank(s->comm, &o->rank));
  SPRY_CHECK_MPI(MPI_Comm_size(s->comm, &o->size));
  int C = o->C, M = o->M;
  size_t d = o->d;
  o->recv_counts = spry_alloc("oracle", sizeof(int) * (size_t)o->size);
  o->recv_displs = spry_alloc("oracle", sizeof(int) * (size_t)o->size);
  o->batch_local = spry_alloc_floats("oracle", (size_t)M * d);
  o->class_offset = spry_alloc("oracle", sizeof(int32_t) * (size_t)(C + 1));
  o->class_examples = spry_alloc("oracle", sizeof(int32_t) * (size_t)(s->n_pool > 0 ? s->n_pool : 1));
  for (int i = 0; i < s->n_pool; i++) o->class_offset[s->ds->labels[s->pool[i]] + 1]++;
  for (int c = 0; c < C; c++) o->class_offset[c + 1] += o->class_offset[c];
  int32_t *fill = spry_alloc("oracle", sizeof(int32_t) * (size_t)(C > 0 ? C : 1));
  memcpy(fill, o->class_offset, sizeof(int32_t) * (size_t)C);
  for (int i = 0; i < s->n_pool; i++) o->class_examples[fill[s->ds->labels[s->pool[i]]]++] = s->pool[i];
  spry_free(&fill);
  o->class_grads = spry_alloc_floats("oracle", (size_t)C * d);
  if (o->rank == 0) {
    o->batch_all = spry_alloc_floats("oracle", (size_t)M * d);
    o->true_global = spry_alloc_floats("oracle", d);
    o->true_global_d = spry_alloc("oracle", sizeof(double) * d);
    o->bias_sq = spry_alloc("oracle", sizeof(double) * (size_t)o->L);
    o->class_var = spry_alloc("oracle", sizeof(double) * (size_t)o->L);
  }
  return o;
}

void spry_oracle_free(spry_oracle **po) {
  spry_oracle *o = *po;
  if (!o) return;
  spry_free(&o->recv_counts);
  spry_free(&o->recv_displs);
  spry_free(&o->batch_all);
  spry_free(&o->batch_local);
  spry_free(&o->class_offset);
  spry_free(&o->class_examples);
  spry_free(&o->class_grads);
  spry_free(&o->true_global);
  spry_free(&o->true_global_d);
  spry_free(&o->bias_sq);
  spry_free(&o->class_var);
  spry_free(po);
}

spry_message_store spry_oracle_store(spry_oracle *o, int all, int j, float *dense) {
  spry_message_store st = {.dense = dense};
  if (o) st.batch_gradient = (all ? o->batch_all : o->batch_local) + (size_t)j * o->d;
  return st;
}

void spry_oracle_classes(spry_oracle *o, const float *w_t) {
  int C = o->C, first, count;
  size_t d = o->d;
  spry_rank_slots(C, o->size, o->rank, &first, &count);
  for (int c = first; c < first + count; c++)
    spry_client_true_gradient(o->runner, w_t, o->class_examples + o->class_offset[c],
                              o->class_offset[c + 1] - o->class_offset[c], o->class_grads + (size_t)c * d);
  SPRY_CHECK((size_t)C * d < (size_t)INT32_MAX, "oracle: %d classes x d = %zu floats exceed one MPI message", C, d);
  for (int r = 0; r < o->size; r++) {
    int fr, cr;
    spry_rank_slots(C, o->size, r, &fr, &cr);
    o->recv_counts[r] = cr * (int)d;
    o->recv_displs[r] = fr * (int)d;
  }
  float *mine = o->class_grads + (size_t)first * d;
  SPRY_CHECK_MPI(MPI_Gatherv(o->rank == 0 ? MPI_IN_PLACE : mine, count * (int)d, MPI_FLOAT, o->class_grads,
                             o->recv_counts, o->recv_displs, MPI_FLOAT, 0, o->comm));
}

void spry_oracle_statistics(spry_oracle *o, const spry_plan *plan, const spry_slot_record *slots,
                            const float *aggregate, spry_round_record *rec) {
  const spry_config *cfg = o->cfg;
  int M = plan->n_slots, C = o->C;
  size_t d = o->d;
  double *wt = spry_alloc("oracle", sizeof(double) * (size_t)M), wsum = 0;
  for (int j = 0; j < M; j++) {
    wt[j] = cfg->fl.weighting == SPRY_WEIGHT_UNIFORM ? 1.0 : (double)slots[j].n_examples;
    wsum += wt[j];
  }
  const float *store = o->batch_all;
  double *g = o->true_global_d;
  memset(g, 0, sizeof(double) * d);
  for (int j = 0; j < M; j++) {
    const float *gj = store + (size_t)j * d;
    double pj = wt[j] / wsum;
    for (size_t i = 0; i < d; i++) g[i] += pj * gj[i];
  }
  for (size_t i = 0; i < d; i++) o->true_global[i] = (float)g[i];
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
        double gji = store[(size_t)j * d + i];
        mean += wt[j] / qsum * gji;
        z2 += wt[j] / qsum * (gji - g[i]) * (gji - g[i]);
      }
      b2 += (mean - g[i]) * (mean - g[i]);
    }
    o->bias_sq[l] = b2;
    /* V_l over the classes that have examples */
    double n2 = 0, m2 = 0;
    int Ce = 0;
    for (int c = 0; c < C; c++) Ce += o->class_offset[c + 1] > o->class_offset[c];
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
  rec->z2 = z2;
  rec->sq_error = rec->cosine = NAN;
  if (cfg->method.comm == SPRY_COMM_ITERATION) {
    double e2 = 0, dot = 0, a2 = 0, g2 = 0;
    for (size_t i = 0; i < d; i++) {
      double a = aggregate[i];
      e2 += (a - g[i]) * (a - g[i]);
      dot += a * g[i];
      a2 += a * a;
      g2 += g[i] * g[i];
    }
    rec->sq_error = e2;
    rec->cosine = a2 > 0 && g2 > 0 ? dot / sqrt(a2 * g2) : NAN;
  }
  rec->true_gradient = o->true_global;
  rec->class_gradients = o->class_grads;
  rec->bias_sq = o->bias_sq;
  rec->class_variance = o->class_var;
  spry_free(&wt);
}
