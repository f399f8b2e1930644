/* spry/oracle.h -- log.gradients = oracle: true gradients by reverse mode that never feed back into training.
 *
 * One object owns every oracle buffer (per-class gradients, the slots' gradients gathered on rank 0, the round's
 * statistics). Per round:
 *   1. the clients' own oracle work runs on the rank that runs the client (spry_client_run fills its result: the
 *      full local gradient, its loss, the minibatch variance, the batch-path gradient) and travels in the upload;
 *   2. spry_oracle_classes (collective): the per-class gradients G_c = grad F_c(w_t) and losses F_c(w_t), class c
 *      on one rank (contiguous class ranges over the ranks), then gathered to every rank in class order;
 *   3. spry_oracle_residuals (every rank, its own slots): ||grad_l f_m - sum_c pihat_mc G_c^l||^2;
 *   4. spry_oracle_statistics (rank 0): g, the bias per block, Z^2 (full local and batch-path), ||g_hat - g||^2,
 *      cos(g_hat, g), V_l, f(w_t), ||grad f||^2, F(w_t), ||grad F||^2, the secant, in double in a fixed order.
 * Nothing depends on the number of ranks. Definitions: docs/runfile.md, "Oracle".
 */
#ifndef SPRY_ORACLE_H
#define SPRY_ORACLE_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include "spry/client.h"
#include "spry/config.h"
#include "spry/dataset.h"
#include "spry/message.h"
#include "spry/partition.h"
#include "spry/plan.h"
#include "spry/round.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct spry_oracle spry_oracle;

typedef struct {
  const spry_config *cfg;
  spry_client_runner *runner; /* this rank's runner (its model computes the gradients) */
  const spry_dataset *ds;
  const int32_t *pool; /* dataset indices of the train pool */
  int n_pool;
  const spry_partition *part;
  const spry_range *blocks;
  int L;
  size_t d;
  MPI_Comm comm;
} spry_oracle_setup;

spry_oracle *spry_oracle_create(const spry_oracle_setup *s);
void spry_oracle_free(spry_oracle **o);

/* Where slot j's oracle data is parsed to: all = 1 for rank 0's copy of every slot, 0 for this rank's own slots
 * (index j relative to the rank's first slot). */
spry_message_store spry_oracle_store(spry_oracle *o, int all, int j, float *dense);

/* Collective, at the broadcast weights w_t (every rank holds them). */
void spry_oracle_classes(spry_oracle *o, const float *w_t);

/* Rank 0, after the server step: the round's statistics from the gathered slots (slots[M], parsed into the
 * all-slots store), the aggregate (iteration: g_hat) and w_t (the broadcast weights); fills the oracle fields of
 * rec. Call once per round, in order (it keeps the secant's previous point). */
void spry_oracle_statistics(spry_oracle *o, const spry_plan *plan, const spry_slot_record *slots,
                            const float *aggregate, const float *w_t, spry_round_record *rec);

/* Every rank, after spry_oracle_classes: the finite-sample residual of each of its own slots local[n_local]
 * (records parsed from its own uploads); sets local[j].residual_sq. */
void spry_oracle_residuals(spry_oracle *o, spry_slot_record *local, int n_local);

/* Rank 0: the secant's previous point (w_{t-1}, grad F(w_{t-1}) as float32; NULL before the first round) for a
 * checkpoint, and its restoration on resume (NULL: none). */
void spry_oracle_secant_state(spry_oracle *o, const float **w_prev, const float **pool_grad_prev);
void spry_oracle_restore_secant(spry_oracle *o, const float *w_prev, const float *pool_grad_prev);

#ifdef __cplusplus
}
#endif
#endif
