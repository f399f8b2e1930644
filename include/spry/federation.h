/* spry/federation.h -- the federated simulation over MPI: rank 0 serves, every rank runs a share of the clients.
 *
 * Round t (docs/federation.md):
 *   1. rank 0 broadcasts the global trainable weights w_t (and, for FwdLLM, the previous global estimate);
 *   2. every rank builds the round plan itself (a pure function of the configuration and t: the same bytes on
 *      every rank, so broadcasting it would change nothing) and runs the slots the plan maps to it, one client
 *      after another on one reusable runner;
 *   3. each client's result is serialised into its upload message; the messages return to rank 0 in slot order
 *      (MPI_Gatherv; a rank's slots are contiguous);
 *   4. rank 0 rebuilds each estimate (per-iteration forward/zeroth/FwdLLM: from the K scalars and the tangent
 *      keys), aggregates every block over exactly the clients that trained it, in slot order, applies the server
 *      optimizer, checks for NaN/Inf, and every eval_every rounds evaluates the global model on the held-out set
 *      (the ranks share the batches; the sums are added in batch order on rank 0).
 * Results depend only on the configuration: the same bits at any number of ranks.
 *
 * Bytes are counted per client as the size of the messages a real deployment would exchange: down = a header
 * (round, client, seed, number of blocks) + the assigned block ids + w (+ g_prev for FwdLLM); up = a header
 * (client, steps, examples, loss, local test counts) + the payload (K scalars, FwdLLM's K tangent indices, or
 * the client's blocks). Diagnostics carried for the run file (per-step scalars of per-epoch methods, sample
 * indices, the client's own dense estimate) travel in the same MPI message but are not counted.
 */
#ifndef SPRY_FEDERATION_H
#define SPRY_FEDERATION_H

#include <mpi.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "spry/checkpoint.h"
#include "spry/config.h"
#include "spry/dataset.h"
#include "spry/model.h"
#include "spry/partition.h"
#include "spry/plan.h"
#include "spry/round.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Collective. Loads the dataset and the model on every rank, partitions the clients, allocates everything. */
spry_fed *spry_fed_create(const spry_config *cfg, MPI_Comm comm);
void spry_fed_free(spry_fed **f);

/* Collective. Runs rounds [first_round, cfg->run.rounds); returns a SPRY_RUN_* status, the same on every rank.
 * After each round (and after the observer): if a stop was requested on any rank (the flag given to
 * spry_fed_set_stop_flag is non-zero), every rank learns it (MPI_Allreduce), rank 0 writes a checkpoint, and
 * every rank returns SPRY_RUN_STOPPED. Rank 0 also checkpoints every run.checkpoint_every rounds and after the
 * last round (when run.checkpoint_every > 0). Checkpoints need a path (spry_fed_set_checkpoint). */
int spry_fed_run(spry_fed *f, uint32_t first_round, const spry_fed_observer *obs);

/* Where rank 0 writes checkpoints (copied; NULL = nowhere: a stop then ends the run without a checkpoint). */
void spry_fed_set_checkpoint(spry_fed *f, const char *path);
/* A flag a signal handler sets (SIGTERM, SIGUSR1): read at every round boundary. NULL = none. */
void spry_fed_set_stop_flag(spry_fed *f, volatile sig_atomic_t *flag);
/* Rank 0: continue from checkpoint c (weights, server optimizer, FwdLLM's g_prev, running metrics); then run
 * from round c->rounds_done. Returns 0, or -1 with a message when c does not fit this federation (d, optimizer). */
int spry_fed_restore(spry_fed *f, const spry_checkpoint *c, char *err, size_t errlen);
/* Rank 0: the checkpoint of the current state after rounds_done rounds. The arrays point into the federation
 * (valid until the next round); config_text is allocated (label "checkpoint"): spry_free(&c->config_text). */
void spry_fed_checkpoint_view(spry_fed *f, uint32_t rounds_done, spry_checkpoint *c);

/* Accessors (valid on every rank unless noted). */
const spry_config *spry_fed_config(const spry_fed *f);
spry_model *spry_fed_model(spry_fed *f);
const spry_dataset *spry_fed_dataset(const spry_fed *f);
const spry_partition *spry_fed_partition(const spry_fed *f);
float *spry_fed_weights(spry_fed *f);    /* global w (authoritative on rank 0) */
int spry_fed_rank(const spry_fed *f);
int spry_fed_size(const spry_fed *f);
/* Held-out metrics (rank 0) of the last evaluated round, and of the initial model (evaluated before round 0
 * when a run starts from round 0; NaN otherwise). */
double spry_fed_final_accuracy(const spry_fed *f);
double spry_fed_final_loss(const spry_fed *f);
/* Rank 0: eval.personalize_epochs > 0: the participants' personalised local test accuracy of the last evaluated
 * round (NaN otherwise; not kept by a resume that has not evaluated since). */
double spry_fed_final_personal_accuracy(const spry_fed *f);
double spry_fed_initial_accuracy(const spry_fed *f);
double spry_fed_initial_loss(const spry_fed *f);
/* Rank 0: FNV-1a 64 over every round's (train loss, eval loss, eval accuracy) as doubles: a fingerprint of the
 * run's metrics, equal across rank counts iff the runs are bitwise identical. */
uint64_t spry_fed_metrics_hash(const spry_fed *f);
/* Rank 0: how many per-iteration estimates the server rebuilt from scalars and checked bitwise against the
 * client's own (needs log.gradients >= dense). */
long spry_fed_verified_rebuilds(const spry_fed *f);

#ifdef __cplusplus
}
#endif
#endif
