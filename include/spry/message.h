/* spry/message.h -- the wire messages of a round: what a client uploads, how it is packed and parsed, what counts
 * as sent, and how the messages travel to rank 0.
 *
 * Bytes are counted per client as the size of the messages a real deployment would exchange (docs/federation.md):
 *   down = a header (round, client, seed, number of blocks) + the assigned block ids + w (+ g_prev for FwdLLM);
 *   up   = a header (client, steps, examples, loss, local test counts) + the protocol payload (K scalars, FwdLLM's
 *          K tangent indices and scalars, or the client's blocks).
 * Diagnostics for the run file (per-step scalars of per-epoch methods, sample indices, the client's own dense
 * estimate, the oracle's gradients) travel after the payload in the same MPI message and are not counted.
 * Layout of one upload: header, protocol payload, diagnostics; every item a multiple of 4 bytes. A rank's slots are
 * contiguous, so gathering the ranks' send buffers in rank order puts the messages in slot order on rank 0.
 */
#ifndef SPRY_MESSAGE_H
#define SPRY_MESSAGE_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include "spry/aggregate.h"
#include "spry/client.h"
#include "spry/config.h"
#include "spry/plan.h"
#include "spry/round.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct spry_mailbox spry_mailbox;

/* Where spry_message_parse copies the diagnostics of one slot (each NULL when not logged): dense (d) receives the
 * dense estimate unpacked to full length (log.gradients >= dense), batch_gradient (d) the oracle's batch-path
 * gradient, local_gradient (d) its full local gradient, minibatch_var (L) its minibatch variance. */
typedef struct {
  float *dense;
  float *batch_gradient, *local_gradient; /* oracle: [d] each */
  double *minibatch_var;                  /* oracle: [L] */
} spry_message_store;

/* blocks[L] of the model; d = trainable weights; B = batch size (for sample indices). */
spry_mailbox *spry_mailbox_create(const spry_config *cfg, const spry_range *blocks, int L, size_t d, MPI_Comm comm);
void spry_mailbox_free(spry_mailbox **mb);

/* Start this rank's uploads of a round (empties the send buffer). */
void spry_mailbox_clear(spry_mailbox *mb);
/* Append slot `slot`'s upload, built from the client's result; w_t = the broadcast weights (a per-epoch dense
 * estimate is logged as the update w_m - w_t). */
void spry_mailbox_pack(spry_mailbox *mb, const spry_plan *plan, int slot, const spry_client_result *res,
                       const float *w_t);
/* Collective: every rank's uploads to rank 0, in rank order (= slot order). */
void spry_mailbox_gather(spry_mailbox *mb, uint32_t round);
/* This rank's packed uploads, and (rank 0, after the gather) everyone's. */
const char *spry_mailbox_sent(const spry_mailbox *mb);
const char *spry_mailbox_received(const spry_mailbox *mb);

/* Parse one upload at p into a slot record (pointers into the message or into dst); *protocol = its protocol
 * payload. Returns a pointer past it. */
const char *spry_message_parse(const spry_mailbox *mb, const spry_plan *plan, const char *p, spry_slot_record *rec,
                               const float **protocol, const spry_message_store *dst);

/* Protocol bytes of a download to slot `slot`. */
uint64_t spry_message_down_bytes(const spry_mailbox *mb, const spry_plan *plan, int slot);

#ifdef __cplusplus
}
#endif
#endif
