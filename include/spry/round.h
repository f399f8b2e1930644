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
  const float *true_grad;    /* [d] log.gradients = oracle: the client's true gradient over ALL blocks on the same
                                batches at the same weights (spry_client_result.true_grad); NULL otherwise */
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
  /* log.gradients = oracle, rank 0 (NULL / NaN otherwise). p_m = the aggregation weight of slot m normalised over
   * the round (n_m / sum n, or 1/M); q_{m,l} = the same weight normalised over M_l, the slots that trained block
   * l; g_m = slot m's true gradient (all blocks, its batches). Definitions in docs/runfile.md, "Oracle". */
  const float *true_gradient;   /* [d] g = sum_m p_m g_m: the participants' objective on the round's batches */
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
