/* spry/plan.h -- the plan of one federated round: who participates, which blocks each trains, which rank runs it,
 * and the keys of its tangents.
 *
 * A plan is a pure function of (configuration, round t): every rank can build it itself and gets the same bytes,
 * so the server may broadcast it or each rank may rebuild it -- both give the same plan.
 *
 * Steps, in this order (THEORY.md section 2):
 *   1. Sampling. M of the N clients, without replacement: a partial Fisher-Yates shuffle of (0, 1, ..., N-1) whose
 *      first M entries are kept, drawn from the stream (seed, SPRY_RNG_SAMPLE, round = t). The M ids are then
 *      SORTED ascending; slot j is the j-th smallest sampled id. Sorted order makes the slot order canonical (it
 *      does not depend on how the sampler happens to order its draws) and is the order of every per-slot array,
 *      of the results gathered from the ranks, and of the aggregation sums.
 *   2. Block assignment over L blocks (split_blocks = true, config method.split = spry):
 *        the "pool" is every block, except the head when head_shared (the head is then given to every slot in
 *        addition, step 3). Let Q = size of the pool (L or L-1); the pool is blocks 0..Q-1.
 *        - Q >= M: pool block i goes to slot i mod M     -> every slot gets floor(Q/M) or ceil(Q/M) blocks,
 *                                                           every pool block has s_l = 1;
 *        - M > Q:  slot j gets the one pool block j mod Q -> s_l = floor(M/Q) or ceil(M/Q), each >= 1.
 *        (Q == M: both rules give slot j <- block j.)
 *        Strategies (random_assign): ROUND_ROBIN (false) applies the rule to slots and pool blocks in natural
 *        order (the same block-to-slot map every round; which client sits in a slot changes with the sample).
 *        RANDOM (true) first draws a permutation of the slots, then a permutation of the pool blocks, both from
 *        ONE stream (seed, SPRY_RNG_ASSIGN, round = t), in that order, and applies the same rule to the permuted
 *        lists: pool block perm_b[i] -> slot perm_s[i mod M], or slot perm_s[j] -> pool block perm_b[j mod Q].
 *        So a random assignment is exactly as balanced as the round-robin one, and both are valid every round.
 *      split_blocks = false: every slot trains all L blocks (FedAvg, FedFGD, ...).
 *   3. head_shared (requires head_is_last): block L-1 (the task head) is assigned to every slot. With L = 1 and a
 *      shared head the pool is empty and every slot trains block 0.
 *   4. Ranks. Slots are split over P ranks in contiguous, balanced runs: rank r gets M/P slots, plus one for the
 *      first M mod P ranks, starting at r*(M/P) + min(r, M mod P). Rank 0 always has slots; with P = 1 it has all
 *      of them; ranks r >= M (P > M) have none. Contiguity lets the results of a rank be one piece of a Gatherv.
 *   5. Tangent keys. Slot j's tangent k at local step s is keyed (seed, SPRY_RNG_TANGENT, round = t,
 *      client = client[j], step = s, k): by the CLIENT id, never by slot or rank, so a client's directions do not
 *      depend on where it runs. Distinct k always give distinct streams (the public code's fault of one fixed
 *      seed for all k cannot happen). The element index within a stream is the coordinate of the trainable
 *      vector w, so the tangent over block l is elements [first_l, first_l + len_l) and can be regenerated per block.
 *
 * The plan takes plain flags rather than the configuration's enums (spry/config.h: method.split, method.assignment)
 * so that it depends on nothing but core and rng.
 *
 * Invariants of a built plan (checked by spry_plan_build, tested in tests/unit/test_plan.c): client[] strictly
 * increasing in [0, N); every block has s_l >= 1; every slot has >= 1 block; the pool counts s_l (M > Q) or the
 * pool blocks per slot (Q >= M) differ by at most 1, for both strategies.
 *
 * Representation of the assignment (L is up to ~100, M up to a few thousand): a dense membership matrix
 * assigned[M][L] (uint8, 1 = slot j trains block l; the run file's [M, L] dataset) plus both adjacency lists in
 * CSR form, ascending: slot -> its blocks, and block -> the slots that trained it (the aggregation iterates these).
 *
 * Memory: spry_plan_create allocates every array once for (N, M, L) under the label "plan"; spry_plan_build fills
 * them for a round (no allocation). spry_plan_free(&plan) releases and nulls.
 */
#ifndef SPRY_PLAN_H
#define SPRY_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "spry/rng.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A contiguous piece of the trainable vector w: coordinates [first, first + len). Block l of the model is one
 * range; blocks do not overlap, and there may be padding between them (64-byte aligned slices). */
typedef struct {
  size_t first;
  size_t len;
} spry_range;

typedef struct {
  int n_clients;         /* N >= 1 */
  int clients_per_round; /* M, 1 <= M <= N */
  int n_blocks;          /* L >= 1 */
  int n_ranks;           /* P >= 1: ranks that run clients (slot_rank[]) */
  bool split_blocks;  /* true: Spry block split (step 2); false: every slot trains every block */
  bool random_assign; /* true: RANDOM strategy; false: ROUND_ROBIN */
  bool head_is_last;  /* block L-1 is the task head */
  bool head_shared;   /* give the head to every slot (needs head_is_last; only meaningful with split_blocks) */
  uint32_t seed;      /* run seed: keys the SAMPLE, ASSIGN and TANGENT streams */
} spry_plan_config;

typedef struct {
  spry_plan_config cfg; /* copy of the configuration */
  uint32_t round;       /* t */
  int n_slots;          /* M */
  int n_blocks;         /* L */
  int32_t *client;      /* [M] client id of slot j, strictly increasing */
  uint8_t *assigned;    /* [M*L] assigned[j*L + l] = 1 iff slot j trains block l */
  int32_t *slot_block_offset; /* [M+1] blocks of slot j: slot_blocks[slot_block_offset[j] .. [j+1]), ascending */
  int32_t *slot_blocks;       /* [<= M*L] */
  int32_t *block_slot_offset; /* [L+1] slots that trained block l: block_slots[block_slot_offset[l] .. [l+1]) */
  int32_t *block_slots;       /* [<= M*L], ascending slot order (= aggregation order) */
  int32_t *block_count;       /* [L] s_l = number of slots that trained block l */
  int32_t *slot_rank;         /* [M] rank that runs slot j (step 4) */
  spry_rng_key *tangent_key;  /* [M] (seed, TANGENT, t, client[j], step 0, k 0); see spry_plan_tangent_key */
  int32_t *scratch_ids;       /* [N] sampling workspace (contents meaningless after build) */
  int32_t *scratch_perm;      /* [M + L] assignment workspace: slot permutation, then block permutation */
} spry_plan;

/* Validate the configuration (fatal error naming the field and allowed values) and allocate a plan. */
spry_plan *spry_plan_create(const spry_plan_config *cfg);
/* Fill the plan for round t (steps 1-5 above). Deterministic in (cfg, t). */
void spry_plan_build(spry_plan *plan, uint32_t round);
void spry_plan_free(spry_plan **plan);

/* Number of blocks of slot j, and whether slot j trains block l. */
static inline int spry_plan_slot_nblocks(const spry_plan *p, int slot) {
  return p->slot_block_offset[slot + 1] - p->slot_block_offset[slot];
}
static inline bool spry_plan_trains(const spry_plan *p, int slot, int block) {
  return p->assigned[(size_t)slot * (size_t)p->n_blocks + (size_t)block] != 0;
}

/* Key of tangent k at local step `step` of slot j (step 5 above). */
spry_rng_key spry_plan_tangent_key(const spry_plan *plan, int slot, uint32_t step, uint32_t k);

/* Step 4 as pure functions: the rank that runs `slot`, and the contiguous run [*first, *first + *count) of
 * slots of `rank` (count = 0 when rank >= n_slots). */
int spry_slot_rank(int n_slots, int n_ranks, int slot);
void spry_rank_slots(int n_slots, int n_ranks, int rank, int *first, int *count);
/* The MPI_Gatherv / MPI_Allgatherv layout of that split: counts[r] = per_item * (items of rank r), displs[r] =
 * per_item * (first item of rank r), for every rank r < n_ranks. */
void spry_rank_slot_layout(int n_items, int n_ranks, int per_item, int *counts, int *displs);

#ifdef __cplusplus
}
#endif
#endif
