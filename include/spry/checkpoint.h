/* spry/checkpoint.h -- the server state that lets a run continue bit for bit: written atomically by rank 0.
 *
 * A checkpoint after r finished rounds holds everything the next round depends on that is not a pure function of
 * the configuration (docs/runfile.md, "Checkpoints"):
 *   w (d floats)                        the global trainable weights after round r-1;
 *   server_m, server_v (d floats each)  the server optimizer's moments (absent for FedAvg), and server_step;
 *   g_prev (d floats)                   FwdLLM's previous global estimate (absent otherwise);
 *   oracle_w_prev, oracle_pool_grad_prev (d floats each)  log.gradients = oracle: w_{r-1} and grad F(w_{r-1}), the
 *                                       previous point of the secant (absent otherwise);
 *   the run's running fingerprints      metrics_hash, final accuracy/loss, verified rebuilds, initial metrics;
 *   the configuration                   its INI text (spry_config_to_ini) and hash (spry_config_hash).
 * Everything else (partition, plans, tangents, batches) is rebuilt from the configuration and the round number.
 *
 * File: a small serial HDF5 file (format "spry-checkpoint", version 2) after a 512-byte user block that holds
 * the FNV-1a 64 digest and size of every byte after it. The reader checks the digest before HDF5 opens the file,
 * so any flipped bit or cut (in the arrays, in attributes such as rounds_done, or in HDF5's own metadata) is
 * reported as corruption, never loaded and never handed to the HDF5 parser (which can crash on corrupt metadata).
 * Every array also carries an FNV-1a 64 checksum attribute over its bytes. Version 1 files (no digest) are refused
 * with a message. Writing is atomic: the file is written as PATH.tmp, flushed to disk (fsync), then renamed over PATH
 * (and the directory fsynced), so a kill at any moment leaves either the previous checkpoint or the new one.
 *
 * Errors: both functions return 0, or -1 with a message in err naming the file and what is wrong (unwritable
 * directory, missing file, not a checkpoint, wrong version, missing item, checksum mismatch, size mismatch).
 * They never abort: the app reports on rank 0 and ends every rank with a non-zero status.
 */
#ifndef SPRY_CHECKPOINT_H
#define SPRY_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SPRY_CHECKPOINT_FORMAT "spry-checkpoint"
#define SPRY_CHECKPOINT_VERSION 2
#define SPRY_CHECKPOINT_USERBLOCK 512 /* bytes before the HDF5 data: the whole-file digest */

typedef struct {
  uint32_t rounds_done; /* rounds finished: the run resumes at round rounds_done */
  uint64_t config_hash;
  char *config_text;    /* NUL-terminated INI text */
  size_t d;
  float *w;        /* [d] */
  float *server_m; /* [d] or NULL */
  float *server_v; /* [d] or NULL */
  uint64_t server_step;
  float *g_prev;   /* [d] or NULL */
  float *oracle_w_prev, *oracle_pool_grad_prev; /* [d] each or NULL (oracle: the secant's previous point) */
  uint64_t metrics_hash;
  double final_acc, final_loss, initial_acc, initial_loss;
  int64_t verified_rebuilds;
  int32_t status;  /* SPRY_RUN_* status at the time of writing (OK, or STOPPED for a signal) */
} spry_checkpoint;

/* The conventional checkpoint path of a run file: RUNFILE + ".ckpt". Writes at most len bytes. */
void spry_checkpoint_path(const char *runfile, char *out, size_t len);

/* Write c atomically to path (see above). Serial: call on one rank. */
int spry_checkpoint_write(const char *path, const spry_checkpoint *c, char *err, size_t errlen);

/* Read path into *c; arrays and config_text are allocated (label "checkpoint"), freed by spry_checkpoint_release. */
int spry_checkpoint_read(const char *path, spry_checkpoint *c, char *err, size_t errlen);
void spry_checkpoint_release(spry_checkpoint *c);

#ifdef __cplusplus
}
#endif
#endif
