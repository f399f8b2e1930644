/* spry/round.h -- what one federated round produces: the per-slot and per-round records handed to observers (the
 * run-file writer), and the run's exit statuses. Shared by the round loop (src/fl/federation.c) and its readers
 * (src/io/runlog.c), so that a reader needs neither the federation nor MPI's round machinery.
 */
#ifndef SPRY_ROUND_H
#define SPRY_ROUND_H

#include <stddef.h>
#include <stdint.h>

#include "spry/plan.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Exit statuses of a run (also the process exit codes). */
enum {
  SPRY_RUN_OK = 0,
  SPRY_RUN_NONFINITE = 3, /* a loss or the weights became NaN/Inf */
  SPRY_RUN_STOPPED = 4    /* stopped by a signal after checkpointing (resumable) */
};

/* One participant's part of a round. */
typedef struct {
  int slot, client, rank;
  int n_steps, K, n_examples;
  double loss;
  uint64_t bytes_up, bytes_down;
  int test_correct, test_count;
  double test_loss;
  const float *scalars;      /* [n_steps * K] or NULL */
  const uint32_t *k_index;   /* [n_steps * K] (FwdLLM) or NULL */
  const int32_t *step_K;     /* [n_steps] tangents used per step, or NULL */
  const int32_t *sample_idx; /* [n_steps * batch_size] or NULL */
  const float *estimate;     /* [d] the client's estimate (iteration) / its update w_m - w_t (epoch), zero off its
                                blocks; or NULL when dense logging is off */
  /* log.gradients = oracle (NULL / NaN otherwise); spry_client_result documents them */
  const float *batch_grad;       /* [d] the batch-path gradient (spry_client_result.true_grad) */
  const float *local_grad;       /* [d] the full local gradient grad f_m(w_t) */
  const double *minibatch_var;   /* [L] sigma^2_{m,l} over the client's epoch-0 batches at w_t */
  const double *residual_sq;     /* [L] ||grad_l f_m(w_t) - sum_c pihat_mc G_c^l(w_t)||^2 (this rank's slots) */
  double local_loss;             /* f_m(w_t) */
  /* eval.personalize_epochs > 0, eval rounds (0 / NaN otherwise): the client's local test split after personalising
   * w_{t+1} for F local epochs */
  int personal_correct, personal_count;
  double personal_loss;
} spry_slot_record;

typedef struct spry_fed spry_fed;

typedef struct {
  uint32_t round; /* t, 0-based */
  double seconds, train_loss;
  int evaluated;
  double eval_loss, eval_acc, local_acc;
  uint64_t bytes_up, bytes_down; /* sums over the participants */
  uint64_t peak_bytes;           /* max over ranks of the allocator's peak during the round */
  const spry_plan *plan;
  int n_slots;
  const spry_slot_record *slots; /* rank 0: all M slots; other ranks: NULL */
  int first_local, n_local;      /* this rank's slots [first_local, first_local + n_local) */
  const spry_slot_record *local; /* every rank: its own slots */
  const float *w;                /* rank 0: global weights after the round */
  const float *aggregate;        /* rank 0: aggregated estimate (iteration) or pseudo-gradient Delta (epoch) */
  const float *w_start;          /* rank 0: w_t, the weights broadcast at the start of the round */
  double initial_eval_loss, initial_eval_acc; /* every rank: held-out metrics of w_0 (NaN when unknown) */
  double personal_acc, personal_loss; /* rank 0, eval.personalize_epochs > 0 and eval rounds; NaN otherwise */
  /* log.gradients = oracle, rank 0 (NULL / NaN otherwise). p_m = the aggregation weight of slot m normalised over
   * the round (n_m / sum n, or 1/M); q_{m,l} = the same weight normalised over M_l, the slots that trained block
   * l; g_m = slot m's FULL local gradient grad f_m(w_t); the batch_* statistics use the batch-path gradients
   * instead. Definitions in docs/runfile.md, "Oracle". */
  const float *true_gradient;   /* [d] g = sum_m p_m g_m = grad f(w_t) over the participants' data */
  const float *batch_gradient;  /* [d] sum_m p_m (batch-path gradient of m) */
  const double *batch_bias_sq;  /* [L] the bias from the batch-path gradients */
  double batch_z2;              /* Z^2 from the batch-path gradients */
  double objective, grad_sq;    /* f(w_t) = sum_m p_m f_m(w_t); ||g||^2 */
  double pool_objective, pool_grad_sq; /* F(w_t) over the whole train pool; ||grad F(w_t)||^2, grad F = sum_c (n_c/n) G_c */
  double secant;                /* ||grad F(w_t) - grad F(w_{t-1})|| / ||w_t - w_{t-1}|| (NaN at t = 0 / zero step) */
  const float *class_gradients; /* [C*d] grad F_c at w_t, F_c = mean loss over the train pool's class-c examples
                                   (a class without examples: zeros) */
  double sq_error;              /* ||g_hat - g||^2, g_hat = aggregate (iteration; NaN for epoch) */
  double cosine;                /* cos(g_hat, g) (iteration; NaN for epoch) */
  double z2;                    /* Z^2 = sum_l sum_{m in M_l} q_{m,l} ||g_m^l - g^l||^2 */
  const double *bias_sq;        /* [L] ||b^l||^2, b^l = sum_{m in M_l} q_{m,l} g_m^l - g^l */
  const double *class_variance; /* [L] V_l = (1/C') sum_c ||grad_l F_c||^2 - ||(1/C') sum_c grad_l F_c||^2 over the
                                   C' classes with examples */
} spry_round_record;

/* Called collectively on every rank after each round (the run-file writer). */
typedef struct {
  void *ctx;
  void (*round)(void *ctx, const spry_fed *f, const spry_round_record *rec);
} spry_fed_observer;

#ifdef __cplusplus
}
#endif
#endif
