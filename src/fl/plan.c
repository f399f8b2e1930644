/* Round plan: client sampling, Spry block assignment, slot -> rank map, tangent keys. See spry/plan.h. */
#include "spry/plan.h"

#include <stdlib.h>
#include <string.h>

#include "spry/core.h"

#define PLAN_LABEL "plan"

spry_plan *spry_plan_create(const spry_plan_config *cfg) {
  SPRY_CHECK(cfg != NULL, "spry_plan_create: configuration is NULL");
  SPRY_CHECK(cfg->n_clients >= 1, "plan: n_clients = %d, must be >= 1", cfg->n_clients);
  SPRY_CHECK(cfg->clients_per_round >= 1 && cfg->clients_per_round <= cfg->n_clients,
             "plan: clients_per_round = %d, must be in [1, n_clients = %d]", cfg->clients_per_round,
             cfg->n_clients);
  SPRY_CHECK(cfg->n_blocks >= 1, "plan: n_blocks = %d, must be >= 1", cfg->n_blocks);
  SPRY_CHECK(cfg->n_ranks >= 1, "plan: n_ranks = %d, must be >= 1", cfg->n_ranks);
  SPRY_CHECK(!cfg->head_shared || cfg->head_is_last,
             "plan: head_shared = true needs head_is_last = true (which block is the head?)");
  const size_t M = (size_t)cfg->clients_per_round, L = (size_t)cfg->n_blocks, N = (size_t)cfg->n_clients;
  SPRY_CHECK(M * L <= (size_t)INT32_MAX, "plan: clients_per_round * n_blocks = %zu exceeds 2^31-1", M * L);

  spry_plan *p = spry_alloc(PLAN_LABEL, sizeof *p);
  p->cfg = *cfg;
  p->n_slots = (int)M;
  p->n_blocks = (int)L;
  p->client = spry_alloc(PLAN_LABEL, M * sizeof(int32_t));
  p->assigned = spry_alloc(PLAN_LABEL, M * L);
  p->slot_block_offset = spry_alloc(PLAN_LABEL, (M + 1) * sizeof(int32_t));
  p->slot_blocks = spry_alloc(PLAN_LABEL, M * L * sizeof(int32_t));
  p->block_slot_offset = spry_alloc(PLAN_LABEL, (L + 1) * sizeof(int32_t));
  p->block_slots = spry_alloc(PLAN_LABEL, M * L * sizeof(int32_t));
  p->block_count = spry_alloc(PLAN_LABEL, L * sizeof(int32_t));
  p->slot_rank = spry_alloc(PLAN_LABEL, M * sizeof(int32_t));
  p->tangent_key = spry_alloc(PLAN_LABEL, M * sizeof(spry_rng_key));
  p->scratch_ids = spry_alloc(PLAN_LABEL, N * sizeof(int32_t));
  p->scratch_perm = spry_alloc(PLAN_LABEL, (M + L) * sizeof(int32_t));
  return p;
}

void spry_plan_free(spry_plan **pp) {
  if (!pp || !*pp) return;
  spry_plan *p = *pp;
  spry_free(&p->client);
  spry_free(&p->assigned);
  spry_free(&p->slot_block_offset);
  spry_free(&p->slot_blocks);
  spry_free(&p->block_slot_offset);
  spry_free(&p->block_slots);
  spry_free(&p->block_count);
  spry_free(&p->slot_rank);
  spry_free(&p->tangent_key);
  spry_free(&p->scratch_ids);
  spry_free(&p->scratch_perm);
  spry_free(pp);
}

static int cmp_int32(const void *a, const void *b) {
  int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
  return (x > y) - (x < y);
}

/* Step 1: M of N without replacement (partial Fisher-Yates), then sorted. */
static void sample_clients(spry_plan *p) {
  const int N = p->cfg.n_clients, M = p->n_slots;
  int32_t *ids = p->scratch_ids;
  for (int i = 0; i < N; i++) ids[i] = i;
  spry_rng_key key = {.seed = p->cfg.seed, .purpose = SPRY_RNG_SAMPLE, .round = p->round};
  spry_rng_stream s = spry_rng_stream_at(key);
  for (int i = 0; i < M; i++) {
    int j = i + (int)spry_stream_below(&s, (uint32_t)(N - i));
    int32_t t = ids[i];
    ids[i] = ids[j];
    ids[j] = t;
  }
  memcpy(p->client, ids, (size_t)M * sizeof(int32_t));
  qsort(p->client, (size_t)M, sizeof(int32_t), cmp_int32);
}

/* Step 2 (+3): fill the membership matrix. */
static void assign_blocks(spry_plan *p) {
  const int M = p->n_slots, L = p->n_blocks;
  uint8_t *a = p->assigned;
  memset(a, 0, (size_t)M * (size_t)L);
  if (!p->cfg.split_blocks) {
    memset(a, 1, (size_t)M * (size_t)L);
    return;
  }
  const int P = p->cfg.head_shared ? L - 1 : L; /* pool = blocks 0..P-1 (a shared head is L-1, outside) */
  int32_t *perm_s = p->scratch_perm, *perm_b = p->scratch_perm + M;
  for (int j = 0; j < M; j++) perm_s[j] = j;
  for (int i = 0; i < P; i++) perm_b[i] = i;
  if (p->cfg.random_assign) {
    /* One stream, slots first then blocks; both drawn whatever P is, so the layout never depends on P. */
    spry_rng_stream s = spry_rng_stream_at(
        (spry_rng_key){.seed = p->cfg.seed, .purpose = SPRY_RNG_ASSIGN, .round = p->round});
    spry_stream_shuffle(&s, perm_s, (size_t)M);
    spry_stream_shuffle(&s, perm_b, (size_t)P);
  }
  if (P >= M) {
    for (int i = 0; i < P; i++) a[(size_t)perm_s[i % M] * (size_t)L + (size_t)perm_b[i]] = 1;
  } else if (P > 0) {
    for (int j = 0; j < M; j++) a[(size_t)perm_s[j] * (size_t)L + (size_t)perm_b[j % P]] = 1;
  }
  if (p->cfg.head_shared)
    for (int j = 0; j < M; j++) a[(size_t)j * (size_t)L + (size_t)(L - 1)] = 1;
}

/* CSR adjacency both ways from the membership matrix, and the validity checks. */
static void build_lists(spry_plan *p) {
  const int M = p->n_slots, L = p->n_blocks;
  int32_t n = 0;
  for (int j = 0; j < M; j++) {
    p->slot_block_offset[j] = n;
    for (int l = 0; l < L; l++)
      if (spry_plan_trains(p, j, l)) p->slot_blocks[n++] = l;
    SPRY_CHECK(n > p->slot_block_offset[j], "plan round %u: slot %d (client %d) has no block", p->round, j,
               p->client[j]);
  }
  p->slot_block_offset[M] = n;
  n = 0;
  for (int l = 0; l < L; l++) {
    p->block_slot_offset[l] = n;
    for (int j = 0; j < M; j++)
      if (spry_plan_trains(p, j, l)) p->block_slots[n++] = j;
    p->block_count[l] = n - p->block_slot_offset[l];
    SPRY_CHECK(p->block_count[l] >= 1, "plan round %u: block %d is trained by no client", p->round, l);
  }
  p->block_slot_offset[L] = n;
}

void spry_plan_build(spry_plan *p, uint32_t round) {
  SPRY_CHECK(p != NULL, "spry_plan_build: plan is NULL");
  p->round = round;
  sample_clients(p);
  assign_blocks(p);
  build_lists(p);
  for (int j = 0; j < p->n_slots; j++) {
    p->slot_rank[j] = spry_slot_rank(p->n_slots, p->cfg.n_ranks, j);
    p->tangent_key[j] = (spry_rng_key){.seed = p->cfg.seed,
                                       .purpose = SPRY_RNG_TANGENT,
                                       .round = round,
                                       .client = (uint32_t)p->client[j],
                                       .step = 0,
                                       .k = 0};
  }
}

spry_rng_key spry_plan_tangent_key(const spry_plan *p, int slot, uint32_t step, uint32_t k) {
  SPRY_CHECK(slot >= 0 && slot < p->n_slots, "tangent key: slot %d out of [0, %d)", slot, p->n_slots);
  spry_rng_key key = p->tangent_key[slot];
  key.step = step;
  key.k = k;
  return key;
}

void spry_rank_slots(int n_slots, int n_ranks, int rank, int *first, int *count) {
  SPRY_CHECK(n_slots >= 0 && n_ranks >= 1 && rank >= 0 && rank < n_ranks,
             "rank slots: n_slots = %d, n_ranks = %d, rank = %d (need n_slots >= 0, 0 <= rank < n_ranks)", n_slots,
             n_ranks, rank);
  int base = n_slots / n_ranks, extra = n_slots % n_ranks;
  *count = base + (rank < extra ? 1 : 0);
  *first = rank * base + (rank < extra ? rank : extra);
}

void spry_rank_slot_layout(int n_items, int n_ranks, int per_item, int *counts, int *displs) {
  for (int r = 0; r < n_ranks; r++) {
    int first, count;
    spry_rank_slots(n_items, n_ranks, r, &first, &count);
    counts[r] = per_item * count;
    displs[r] = per_item * first;
  }
}

int spry_slot_rank(int n_slots, int n_ranks, int slot) {
  SPRY_CHECK(n_ranks >= 1 && slot >= 0 && slot < n_slots, "slot rank: slot %d out of [0, %d) or n_ranks = %d < 1",
             slot, n_slots, n_ranks);
  int base = n_slots / n_ranks, extra = n_slots % n_ranks;
  /* The first `extra` ranks hold base+1 slots each, covering slots [0, extra*(base+1)). */
  int big = extra * (base + 1);
  if (slot < big) return slot / (base + 1);
  return extra + (slot - big) / base; /* base >= 1 here: slot >= big implies n_slots > extra*(base+1) */
}
