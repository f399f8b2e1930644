/* spry/client.h -- one simulated client's local work in a round.
 *
 * A rank runs its clients one after another on ONE runner: the model (frozen backbone loaded once per rank), its
 * workspaces, the client optimizer state and the batch buffers are reused; nothing of a client survives into the
 * next one (the trainable vector is reset to the round's global weights and the optimizer state to zero).
 *
 * What a client does (THEORY.md section 2, axes of method in docs/configuration.md):
 *   comm = iteration: ONE step on one batch; the estimate is the upload (forward / zeroth / fwdllm: the K
 *     scalars, from which the server regenerates it; backprop: the gradient on the client's blocks).
 *   comm = epoch: local_epochs passes over its training examples in batches (or local_steps steps), each step
 *     an estimate followed by a client-optimizer step on the client's blocks only; the upload is the new values
 *     of its blocks.
 * Estimators per step, on the client's active blocks S with tangent keys (seed, TANGENT, round, client, step, k):
 *   forward:  j_k = <grad_S f, v_k> by one forward-mode pass with K stacked tangents; g = (1/K) sum_k j_k v_k.
 *   zeroth:   j_k = (f(w + eps v_k) - f(w - eps v_k)) / (2 eps), same g (MeZO with K = 1, BAFFLE with K > 1).
 *   backprop: g = grad_S f by reverse mode.
 *   fwdllm:   forward gradients whose k-th tangent is the best of C candidates by |cos(v, g_prev)| with the
 *             previous round's global gradient estimate g_prev, K doubling (up to max_K) until the estimated
 *             tr Var(g) is at most threshold x an unbiased estimate of ||g||^2 (spry_fwdllm_variance_test).
 * Batches: each local epoch (and the single iteration step) draws a permutation of the client's training
 * examples keyed (seed, DATA, round, client, step = epoch); batch b is its entries [bB, bB + B).
 * Everything is a function of (global weights, plan, configuration, client id): the rank does not matter.
 */
#ifndef SPRY_CLIENT_H
#define SPRY_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "spry/config.h"
#include "spry/dataset.h"
#include "spry/model.h"
#include "spry/optim.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What one client did in a round. Arrays are owned by the runner and valid until its next run. */
typedef struct {
  int client;       /* client id */
  int n_steps;      /* local steps taken */
  int K;            /* scalars per step (fwdllm: the largest K used; rows shorter than K are padded with NaN) */
  int n_examples;   /* training examples the client holds (its aggregation weight with weighting = samples) */
  double loss;      /* mean training loss over its steps (at the weights each step started from) */
  float *scalars;   /* [n_steps * K] jvp scalars (forward, fwdllm) or loss differences / 2 eps (zeroth); NULL for
                       backprop */
  uint32_t *k_index; /* [n_steps * K] fwdllm: stream index of each scalar's tangent; NULL otherwise */
  int *step_K;      /* [n_steps] tangents used per step (fwdllm varies; K otherwise) */
  float *update;    /* [d] iteration: the client's estimate g (d, zero off its blocks); epoch: its new weights
                       (d, its blocks updated, global values elsewhere) */
  int32_t *sample_idx; /* [n_steps * batch_size] dataset indices of each step's batch (-1 padding) */
  int test_correct, test_count; /* local test split on the global model (when evaluated) */
  double test_loss;             /* mean over the local test split (when evaluated) */
  /* log.gradients = oracle (NULL otherwise); all computed before the client's training or alongside it without
   * touching anything the training reads, so they never change training: */
  float *true_grad;       /* [d] the BATCH-PATH gradient: mean over the local steps of the gradient (reverse mode,
                             ALL blocks) of the step's batch loss at the weights the step started from */
  float *local_grad;      /* [d] the FULL local gradient grad f_m(w_t): mean loss over the client's whole train split
                             at the broadcast weights w_t, reverse mode over ALL blocks, in the batches of its
                             epoch-0 order (batch b weighs n_b / n; accumulated in double) */
  double *minibatch_var;  /* [L] sigma^2_{m,l} = mean over those epoch-0 batches b of
                             ||grad_l f_m(w_t; b) - grad_l f_m(w_t)||^2 */
  double local_loss;      /* f_m(w_t): mean loss over the whole train split at w_t (NaN without the oracle) */
} spry_client_result;

typedef struct spry_client_runner spry_client_runner;

/* model: this rank's model (shared by its clients); ds: the dataset (train pool + held-out). */
spry_client_runner *spry_client_runner_create(const spry_config *cfg, spry_model *model, const spry_dataset *ds);
void spry_client_runner_free(spry_client_runner **r);

/* Run client `client` of round `round` from the global weights w_global (d) on its blocks active[L], with its
 * training examples train_idx[n_train] (dataset indices). g_prev (d) is the previous global estimate (fwdllm
 * only; NULL = none yet). When test_idx != NULL the global model is first evaluated on the client's local test
 * examples. The result stays valid until the next call. */
const spry_client_result *spry_client_run(spry_client_runner *r, uint32_t round, int client,
                                          const unsigned char *active, const float *w_global,
                                          const int32_t *train_idx, int n_train, const int32_t *test_idx,
                                          int n_test, const float *g_prev);

/* FwdLLM's variance control (docs/federation.md). From K >= 2 single-tangent estimates X_k = j_k v_k (restricted to
 * the client's blocks), given sum_sq = sum_k ||X_k||^2 and mean_sq = ||(1/K) sum_k X_k||^2:
 *   var_mean = (sum_sq - K mean_sq) / (K (K-1))   unbiased estimate of tr Var(mean) (the mean's squared error)
 *   grad_sq  = mean_sq - var_mean                 unbiased estimate of ||E X||^2 (= ||g||^2 for plain tangents)
 *   enough   = var_mean <= threshold * max(grad_sq, 0)
 * i.e. the estimated relative squared error of the mean is at most `threshold`. For isotropic Gaussian tangents
 * over d_S coordinates, var_mean / ||g||^2 = (d_S + 1) / K, so the test passes at K ~ (d_S + 1) / threshold.
 * An all-zero estimate (g = 0) passes at once (0 <= 0). K < 2: var_mean and grad_sq are NaN, enough = 0. */
typedef struct {
  double var_mean, grad_sq;
  int enough;
} spry_fwdllm_variance;
spry_fwdllm_variance spry_fwdllm_variance_test(int K, double sum_sq, double mean_sq, double threshold);
/* The next K of the doubling schedule: K itself when the test passes or K >= K_max (stop), else min(2K, K_max). */
int spry_fwdllm_next_K(int K, int K_max, double sum_sq, double mean_sq, double threshold);

/* Loss sum and correct count of the model's current weights on examples idx[n] in batches of the runner's
 * batch size: *loss_sum = sum over examples of the loss, *correct = argmax hits (classification). */
void spry_client_evaluate(spry_client_runner *r, const int32_t *idx, int n, double *loss_sum, int *correct);

/* Gradient over ALL blocks of the mean loss of examples idx[n] (dataset indices) at the weights w (d), by
 * reverse mode, batch by batch in order (batch b weighs n_b / n, accumulated in double, rounded once): grad (d) is
 * overwritten; *loss_mean (if not NULL) = the mean loss (NaN when n = 0). Used by the oracle for the per-class
 * gradients. Leaves the runner's model weights at w. */
void spry_client_true_gradient(spry_client_runner *r, const float *w, const int32_t *idx, int n, float *grad,
                               double *loss_mean);

/* Personalisation (eval.personalize_epochs, docs/federation.md): starting from w_global, `epochs` local epochs of
 * the method's own client training on the blocks active[L] (its estimator and client optimizer, fresh state, one
 * optimizer step per batch, also for per-iteration methods), then the local test split: *correct hits and
 * *loss_mean (NaN when n_test = 0). Its random streams are those of the round's training with the step index
 * SPRY_PERSONAL_STEP | s (tangents of its s-th step) and SPRY_PERSONAL_STEP | e (batch order of epoch e), so they
 * never coincide with the round's own. g_prev: FwdLLM's latest global estimate (or NULL). Never changes the
 * federation's state (the runner resets everything for its next client). */
#define SPRY_PERSONAL_STEP 0x80000000u
void spry_client_personalize(spry_client_runner *r, uint32_t round, int client, const unsigned char *active,
                             const float *w_global, const int32_t *train_idx, int n_train, int epochs,
                             const int32_t *test_idx, int n_test, const float *g_prev, int *correct,
                             double *loss_mean);

/* The tangent specification of step `step` for client `client` in `round` (key, kind, K, active blocks). */
spry_tangent_spec spry_client_tangent_spec(const spry_config *cfg, uint32_t round, int client, uint32_t step,
                                           int K, const unsigned char *active);

#ifdef __cplusplus
}
#endif
#endif
