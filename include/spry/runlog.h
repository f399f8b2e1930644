/* spry/runlog.h -- the run file: one parallel HDF5 file per run, written collectively every round.
 *
 * The schema (every group, dataset, shape, type, unit and meaning) is docs/runfile.md; format "spry-run",
 * version SPRY_RUNFILE_VERSION. In short:
 *   /                 attributes: format, version, spry version, git commit, configuration text and hash, sizes,
 *                     rounds_done (THE rule for readers: rows >= rounds_done are not finished), status, times
 *   /axes             dimension scales: round, slot, client, class, parameter, block, step, k, batch
 *   /model            parameter table, blocks and their sizes d_l, initial and final trainable weights
 *   /partition        per-client label counts [N, C], sizes, Dirichlet proportions, class names; realised
 *                     proportions and their distance to the draw, pool label counts
 *   /rounds           one row per round: metrics, resources, s_l, and (dense/oracle) global gradients and the
 *                     oracle's statistics
 *   /slots            one row per round and participant: client, rank, assignment, losses, steps, jvp scalars,
 *                     sample indices, and (dense/oracle) each client's estimate and true gradient
 *
 * Writing (the observer, collective on every rank after each round): every dataset along rounds is chunked with
 * one round per chunk, compressed (shuffle + deflate) and extended by one row; per-slot rows are written by the
 * rank that ran the slot and global rows by rank 0, in ONE collective H5Dwrite per dataset (MPI-IO collective
 * transfer; ranks with nothing to write select nothing). Then the root attribute rounds_done is set to t + 1
 * and the file is flushed (H5Fflush), so a process killed at any moment leaves a file that opens and holds every
 * finished round; a round half written when the kill came is beyond rounds_done and a resume truncates it.
 * Finished rounds are never rewritten (one round per chunk), so a crash cannot damage them.
 *
 * Determinism: every dataset's values are a function of the configuration only (the same bytes at any number
 * of ranks, and after kill + resume), except the items listed in the root attribute "nondeterministic"
 * (times, the world size, each slot's rank, resource use).
 *
 * Errors: opening returns NULL with a message (file, what is wrong) on every rank; HDF5 failures while writing
 * go through SPRY_CHECK_H5 (the job aborts with the call named).
 */
#ifndef SPRY_RUNLOG_H
#define SPRY_RUNLOG_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include "spry/config.h"
#include "spry/dataset.h"
#include "spry/round.h"
#include "spry/model.h"
#include "spry/partition.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SPRY_RUNFILE_FORMAT "spry-run"
#define SPRY_RUNFILE_VERSION 2

typedef struct {
  const char *path;
  const spry_config *cfg;
  spry_model *model;           /* for the parameter table, the blocks and w_init (rank 0's w) */
  const spry_dataset *ds;      /* class names */
  const spry_partition *part;  /* label counts */
  MPI_Comm comm;
  int overwrite;               /* create even if the file exists (--force) */
  int resume;                  /* open the existing file and truncate it to resume_rounds rounds */
  uint32_t resume_rounds;
  uint64_t resume_config_hash; /* the checkpoint's: the run file must carry the same one unless forced */
  int force;                   /* resume even when the run file's configuration hash differs */
  const char *resume_note;     /* appended to the root attribute resume_log (e.g. the configuration diff) */
  const char *git_commit;      /* recorded as is */
} spry_runlog_options;

typedef struct spry_runlog spry_runlog;

/* Collective. Create (or, resuming, open and truncate) the run file. NULL with err filled on failure (same
 * outcome on every rank). */
spry_runlog *spry_runlog_open(const spry_runlog_options *o, char *err, size_t errlen);

/* The observer that writes one round (pass it to spry_fed_run). */
spry_fed_observer spry_runlog_observer(spry_runlog *log);

/* Collective. Record the final state: status (SPRY_RUN_*: "complete", "stopped", "nonfinite"), the final weights
 * w_final (rank 0; d floats; written only for a complete run), then close. Nulls *log. */
void spry_runlog_close(spry_runlog **log, int status, const float *w_final);

/* Seconds this process spent in the writer so far (rounds only), and rounds written. */
double spry_runlog_seconds(const spry_runlog *log);

#ifdef __cplusplus
}
#endif
#endif
