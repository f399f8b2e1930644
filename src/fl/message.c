/* The wire messages of a round; see include/spry/message.h. */
#include "spry/message.h"

#include <math.h>
#include <string.h>

#include "spry/core.h"
#include "spry/mpi_util.h"

/* Upload header: what a real client sends besides its payload. */
typedef struct {
  int32_t slot, client, n_steps, K, n_examples, test_correct, test_count, n_protocol;
  double loss, test_loss;
  int64_t diag_floats; /* diagnostics after the payload (not counted as wire bytes) */
} up_header;

/* Download header: what a real server sends to a client besides the weights. */
typedef struct {
  uint32_t round, client, seed, n_blocks;
} down_header;

struct spry_mailbox {
  const spry_config *cfg;
  const spry_range *blocks;
  size_t d;
  int L, B, rank, size;
  MPI_Comm comm;
  float *full; /* d: scratch */
  char *send;
  size_t send_cap, send_len;
  char *recv;
  size_t recv_cap;
  int *recv_counts, *recv_displs;
};

static int dense_logging(const spry_config *cfg) { return cfg->log.gradients >= SPRY_GRADLOG_DENSE; }
static int oracle_logging(const spry_config *cfg) { return cfg->log.gradients >= SPRY_GRADLOG_ORACLE; }

spry_mailbox *spry_mailbox_create(const spry_config *cfg, const spry_range *blocks, int L, size_t d, MPI_Comm comm) {
  spry_mailbox *mb = spry_alloc("messages", sizeof *mb);
  mb->cfg = cfg;
  mb->blocks = blocks;
  mb->d = d;
  mb->L = L;
  mb->B = cfg->data.batch_size;
  mb->comm = comm;
  SPRY_CHECK_MPI(MPI_Comm_rank(comm, &mb->rank));
  SPRY_CHECK_MPI(MPI_Comm_size(comm, &mb->size));
  mb->full = spry_alloc_floats("messages", d);
  mb->recv_counts = spry_alloc("messages", sizeof(int) * (size_t)mb->size);
  mb->recv_displs = spry_alloc("messages", sizeof(int) * (size_t)mb->size);
  return mb;
}

void spry_mailbox_free(spry_mailbox **pmb) {
  spry_mailbox *mb = *pmb;
  if (!mb) return;
  spry_free(&mb->full);
  spry_free(&mb->send);
  spry_free(&mb->recv);
  spry_free(&mb->recv_counts);
  spry_free(&mb->recv_displs);
  spry_free(pmb);
}

static void *grow(void *p, size_t *cap, size_t need, const char *label) {
  if (need <= *cap) return p;
  size_t n = need + need / 2 + 256;
  void *q = spry_alloc(label, n);
  if (p) {
    memcpy(q, p, *cap);
    spry_free(&p);
  }
  *cap = n;
  return q;
}

void spry_mailbox_clear(spry_mailbox *mb) { mb->send_len = 0; }
const char *spry_mailbox_sent(const spry_mailbox *mb) { return mb->send; }
const char *spry_mailbox_received(const spry_mailbox *mb) { return mb->recv; }

/* Protocol payload floats of a result (what is counted as sent). */
static int protocol_floats(const spry_config *cfg, const spry_client_result *res, size_t packed_len) {
  if (cfg->method.comm == SPRY_COMM_EPOCH || cfg->method.estimator == SPRY_EST_BACKPROP) return (int)packed_len;
  if (cfg->method.estimator == SPRY_EST_FWDLLM) return 2 * res->step_K[0]; /* indices + scalars */
  return res->K;
}

void spry_mailbox_pack(spry_mailbox *mb, const spry_plan *plan, int slot, const spry_client_result *res,
                       const float *w_t) {
  const spry_config *cfg = mb->cfg;
  size_t plen = spry_slot_payload_len(plan, mb->blocks, slot);
  up_header h = {.slot = slot, .client = res->client, .n_steps = res->n_steps, .K = res->K,
                 .n_examples = res->n_examples, .test_correct = res->test_correct, .test_count = res->test_count,
                 .loss = res->loss, .test_loss = res->test_loss};
  h.n_protocol = protocol_floats(cfg, res, plen);
  size_t n_sc = (size_t)res->n_steps * res->K;
  int64_t diag = (int64_t)(2 * n_sc + (size_t)res->n_steps);
  if (cfg->log.sample_indices) diag += (int64_t)res->n_steps * mb->B;
  if (dense_logging(cfg)) diag += (int64_t)plen;
  if (oracle_logging(cfg)) diag += 2 * (int64_t)mb->d + 2 * (int64_t)mb->L + 2; /* 2 gradients, L + 1 doubles */
  h.diag_floats = diag;
  size_t bytes = sizeof h + 4 * ((size_t)h.n_protocol + (size_t)diag);
  mb->send = grow(mb->send, &mb->send_cap, mb->send_len + bytes, "messages");
  char *p = mb->send + mb->send_len;
  memcpy(p, &h, sizeof h);
  p += sizeof h;
  /* protocol payload */
  if (cfg->method.comm == SPRY_COMM_EPOCH || cfg->method.estimator == SPRY_EST_BACKPROP) {
    spry_pack_slot(plan, mb->blocks, slot, res->update, (float *)p);
  } else if (cfg->method.estimator == SPRY_EST_FWDLLM) {
    memcpy(p, res->k_index, 4 * (size_t)res->step_K[0]);
    memcpy(p + 4 * (size_t)res->step_K[0], res->scalars, 4 * (size_t)res->step_K[0]);
  } else {
    memcpy(p, res->scalars, 4 * (size_t)res->K);
  }
  p += 4 * (size_t)h.n_protocol;
  /* diagnostics */
  memcpy(p, res->scalars, 4 * n_sc), p += 4 * n_sc;
  memcpy(p, res->k_index, 4 * n_sc), p += 4 * n_sc;
  for (int s = 0; s < res->n_steps; s++, p += 4) memcpy(p, &res->step_K[s], 4);
  if (cfg->log.sample_indices) {
    memcpy(p, res->sample_idx, 4 * (size_t)res->n_steps * mb->B);
    p += 4 * (size_t)res->n_steps * mb->B;
  }
  if (dense_logging(cfg)) {
    /* the client's own estimate (iteration) or update w_m - w_t (epoch), on its blocks */
    if (cfg->method.comm == SPRY_COMM_EPOCH) {
      for (size_t i = 0; i < mb->d; i++) mb->full[i] = res->update[i] - w_t[i];
      spry_pack_slot(plan, mb->blocks, slot, mb->full, (float *)p);
    } else {
      spry_pack_slot(plan, mb->blocks, slot, res->update, (float *)p);
    }
    p += 4 * plen;
  }
  if (oracle_logging(cfg)) {
    memcpy(p, res->true_grad, 4 * mb->d), p += 4 * mb->d;
    memcpy(p, res->local_grad, 4 * mb->d), p += 4 * mb->d;
    memcpy(p, res->minibatch_var, 8 * (size_t)mb->L), p += 8 * (size_t)mb->L;
    memcpy(p, &res->local_loss, 8), p += 8;
  }
  mb->send_len += bytes;
}

void spry_mailbox_gather(spry_mailbox *mb, uint32_t round) {
  SPRY_CHECK(mb->send_len < (size_t)INT32_MAX, "rank %d's results for round %u are %zu bytes (over 2 GiB per rank)",
             mb->rank, round, mb->send_len);
  int mylen = (int)mb->send_len;
  SPRY_CHECK_MPI(MPI_Gather(&mylen, 1, MPI_INT, mb->recv_counts, 1, MPI_INT, 0, mb->comm));
  size_t total = 0;
  if (mb->rank == 0)
    for (int r = 0; r < mb->size; r++) {
      mb->recv_displs[r] = (int)total;
      total += (size_t)mb->recv_counts[r];
    }
  if (mb->rank == 0) mb->recv = grow(mb->recv, &mb->recv_cap, total + 1, "messages");
  SPRY_CHECK_MPI(MPI_Gatherv(mb->send, mylen, MPI_BYTE, mb->recv, mb->recv_counts, mb->recv_displs, MPI_BYTE, 0,
                             mb->comm));
}

uint64_t spry_message_down_bytes(const spry_mailbox *mb, const spry_plan *plan, int slot) {
  int fwdllm = mb->cfg->method.estimator == SPRY_EST_FWDLLM; /* g_prev travels down too */
  return sizeof(down_header) + 4u * (uint64_t)spry_plan_slot_nblocks(plan, slot) + 4u * (uint64_t)mb->d +
         (fwdllm ? 4u * (uint64_t)mb->d : 0);
}

const char *spry_message_parse(const spry_mailbox *mb, const spry_plan *plan, const char *p, spry_slot_record *rec,
                               const float **protocol, const spry_message_store *dst) {
  const spry_config *cfg = mb->cfg;
  up_header h;
  memcpy(&h, p, sizeof h);
  p += sizeof h;
  *rec = (spry_slot_record){.slot = h.slot, .client = h.client, .n_steps = h.n_steps, .K = h.K,
                            .n_examples = h.n_examples, .loss = h.loss, .test_correct = h.test_correct,
                            .test_count = h.test_count, .test_loss = h.test_loss};
  rec->rank = plan->slot_rank[h.slot];
  rec->bytes_up = sizeof h + 4u * (uint64_t)h.n_protocol;
  rec->bytes_down = spry_message_down_bytes(mb, plan, h.slot);
  *protocol = (const float *)p;
  p += 4 * (size_t)h.n_protocol;
  size_t n_sc = (size_t)h.n_steps * h.K;
  rec->scalars = n_sc ? (const float *)p : NULL;
  p += 4 * n_sc;
  rec->k_index = cfg->method.estimator == SPRY_EST_FWDLLM ? (const uint32_t *)p : NULL;
  p += 4 * n_sc;
  rec->step_K = (const int32_t *)p;
  p += 4 * (size_t)h.n_steps;
  rec->sample_idx = NULL;
  if (cfg->log.sample_indices) {
    rec->sample_idx = (const int32_t *)p;
    p += 4 * (size_t)h.n_steps * mb->B;
  }
  rec->estimate = NULL;
  if (dense_logging(cfg)) {
    memset(dst->dense, 0, sizeof(float) * mb->d);
    spry_unpack_slot(plan, mb->blocks, h.slot, (const float *)p, dst->dense);
    rec->estimate = dst->dense;
    p += 4 * spry_slot_payload_len(plan, mb->blocks, h.slot);
  }
  rec->batch_grad = rec->local_grad = NULL;
  rec->minibatch_var = rec->residual_sq = NULL;
  rec->local_loss = rec->personal_loss = NAN;
  if (oracle_logging(cfg)) {
    memcpy(dst->batch_gradient, p, 4 * mb->d), p += 4 * mb->d;
    memcpy(dst->local_gradient, p, 4 * mb->d), p += 4 * mb->d;
    memcpy(dst->minibatch_var, p, 8 * (size_t)mb->L), p += 8 * (size_t)mb->L;
    memcpy(&rec->local_loss, p, 8), p += 8;
    rec->batch_grad = dst->batch_gradient;
    rec->local_grad = dst->local_gradient;
    rec->minibatch_var = dst->minibatch_var;
  }
  return p;
}
