/* The federated round loop over MPI; see include/spry/federation.h and docs/federation.md. */
#include "spry/federation.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spry/aggregate.h"
#include "spry/basemodel.h"
#include "spry/client.h"
#include "spry/core.h"
#include "spry/message.h"
#include "spry/mpi_util.h"
#include "spry/optim.h"
#include "spry/oracle.h"

struct spry_fed {
  spry_config cfg;
  MPI_Comm comm;
  int rank, size;
  spry_dataset *ds;
  spry_model *model;
  spry_client_runner *runner;
  spry_partition *part;
  int32_t *pool; /* dataset indices of the train pool; partition indices point into it */
  int32_t *held_out;
  int n_pool, n_held_out;
  spry_plan *plan;
  spry_range *blocks;
  spry_aggregator *agg;      /* rank 0 */
  spry_server_optimizer *server; /* rank 0 */
  size_t d;
  int L, B;
  float *w;      /* global weights */
  float *g_prev; /* FwdLLM: previous global estimate (NULL otherwise) */
  float *full;   /* d: scratch full-length vector */
  float *packed; /* d: scratch packed payload */
  float *aggregate, *delta;
  unsigned char *active;
  int32_t **client_train, **client_test; /* per client: dataset indices */
  spry_mailbox *mail;
  int *recv_counts, *recv_displs; /* held-out evaluation's gather */
  spry_slot_record *slots;
  spry_slot_record *local;
  float *dense_store; /* rank 0 / local: per-slot dense estimates when logged */
  size_t dense_cap;
  double final_acc, final_loss, initial_acc, initial_loss;
  double final_personal_acc; /* personalised local accuracy of the last evaluated round (NaN: off / not yet) */
  uint64_t metrics_hash; /* FNV-1a over every round's (train loss, eval loss, eval acc) bytes */
  long verified_rebuilds; /* per-iteration estimates rebuilt by the server and found bitwise equal to the client's */
  /* run file and oracle (log.gradients >= dense / oracle) */
  float *local_dense; /* [M*d] this rank's slots' dense estimates */
  float *w_start;     /* rank 0: [d] w_t, the weights broadcast at the start of the round in progress */
  spry_oracle *oracle; /* log.gradients = oracle, else NULL */
  char *ckpt_path;                 /* NULL = no checkpoints */
  volatile sig_atomic_t *stop_flag;
};

/* ---- setup -------------------------------------------------------------------------------------------- */

static spry_dataset *load_dataset(const spry_config *cfg) {
  if (strcmp(cfg->data.dataset, "synthetic") == 0)
    return spry_dataset_synthetic(cfg->data.n_examples, cfg->data.n_class, cfg->model.vocab_size, cfg->data.seq_len,
                                  cfg->fl.test_fraction, cfg->run.seed);
  return spry_dataset_load(cfg->data.dataset, spry_config_max_len(cfg));
}

static spry_model_config model_config(const spry_config *cfg, const spry_dataset *ds) {
  spry_model_config mc = spry_model_config_default();
  mc.n_layer = cfg->model.n_layer;
  mc.n_head = cfg->model.n_head;
  mc.n_embd = cfg->model.n_embd;
  mc.n_ctx = cfg->model.n_ctx;
  mc.vocab_size = cfg->model.vocab_size;
  mc.causal = cfg->model.causal;
  mc.task = cfg->model.task;
  mc.n_class = ds->n_class;
  mc.lora_rank = cfg->lora.rank;
  mc.lora_alpha = (float)cfg->lora.alpha;
  mc.lora_targets = cfg->lora.target_mask;
  mc.head_trainable = cfg->model.task == SPRY_TASK_CLASSIFY && cfg->lora.head;
  mc.lm_chunk = cfg->model.lm_chunk;
  return mc;
}

/* data.validation_fraction > 0: move a stratified share of the train pool into the evaluation set. Per class c
 * (pool order), the class's pool positions are shuffled with the stream (seed, PARTITION, round 1, client 0,
 * step 0, k = c) -- the partition itself uses round 0 -- and the first round(fraction * n_c) become validation
 * examples. Both lists stay ascending. The test split is then not used by the run at all. */
static void carve_validation(const spry_dataset *ds, double fraction, uint32_t seed, int32_t **pool, int *n_pool,
                             int32_t **held_out, int *n_held_out) {
  int C = ds->n_class, n = *n_pool;
  unsigned char *is_val = spry_alloc("federation", (size_t)(n > 0 ? n : 1));
  int32_t *members = spry_alloc("federation", sizeof(int32_t) * (size_t)(n > 0 ? n : 1));
  int n_val = 0;
  for (int c = 0; c < C; c++) {
    int nc = 0;
    for (int i = 0; i < n; i++)
      if (ds->labels[(*pool)[i]] == c) members[nc++] = i;
    spry_rng_stream s = spry_rng_stream_at((spry_rng_key){.seed = seed, .purpose = SPRY_RNG_PARTITION, .round = 1,
                                                          .client = 0, .step = 0, .k = (uint32_t)c});
    spry_stream_shuffle(&s, members, (size_t)nc);
    int take = (int)lround(fraction * nc);
    for (int i = 0; i < take; i++) is_val[members[i]] = 1;
    n_val += take;
  }
  int32_t *train = spry_alloc("dataset", sizeof(int32_t) * (size_t)(n - n_val > 0 ? n - n_val : 1));
  int32_t *val = spry_alloc("dataset", sizeof(int32_t) * (size_t)(n_val > 0 ? n_val : 1));
  int a = 0, b = 0;
  for (int i = 0; i < n; i++) {
    if (is_val[i]) val[b++] = (*pool)[i];
    else train[a++] = (*pool)[i];
  }
  spry_free(&is_val);
  spry_free(&members);
  spry_free(pool);
  spry_free(held_out);
  *pool = train;
  *n_pool = a;
  *held_out = val;
  *n_held_out = b;
}

spry_fed *spry_fed_create(const spry_config *cfg, MPI_Comm comm) {
  spry_fed *f = spry_alloc("federation", sizeof *f);
  f->cfg = *cfg;
  cfg = &f->cfg;
  f->comm = comm;
  SPRY_CHECK_MPI(MPI_Comm_rank(comm, &f->rank));
  SPRY_CHECK_MPI(MPI_Comm_size(comm, &f->size));
  f->ds = load_dataset(cfg);
  if (cfg->model.vocab_size < f->ds->vocab_size)
    spry_fatal("dataset %s uses token ids up to %d but model.vocab_size = %d", f->ds->source, f->ds->vocab_size - 1,
               cfg->model.vocab_size);
  spry_model_config mc = model_config(cfg, f->ds);
  char err[256];
  if (spry_model_config_check(&mc, err, sizeof err)) spry_fatal("invalid model configuration: %s", err);
  f->B = cfg->data.batch_size;
  f->model = spry_model_create(&mc, f->B, f->ds->max_len, spry_config_pass_K(cfg));
  spry_base_load(f->model, cfg->model.base, cfg->run.seed);
  spry_model_init_trainable(f->model, cfg->run.seed);
  f->d = spry_model_n_trainable(f->model);
  f->L = spry_model_n_blocks(f->model);
  f->runner = spry_client_runner_create(cfg, f->model, f->ds);

  /* the train pool and its partition over clients */
  f->pool = spry_dataset_split_indices(f->ds, 0, &f->n_pool);
  f->held_out = spry_dataset_split_indices(f->ds, 1, &f->n_held_out);
  if (cfg->data.validation_fraction > 0) {
    carve_validation(f->ds, cfg->data.validation_fraction, cfg->run.seed, &f->pool, &f->n_pool, &f->held_out,
                     &f->n_held_out);
    if (f->n_held_out == 0)
      spry_fatal("data.validation_fraction = %g selects no validation example from %d training examples; raise it",
                 cfg->data.validation_fraction, f->n_pool);
  }
  int32_t *pool_labels = spry_alloc("federation", sizeof(int32_t) * (size_t)f->n_pool);
  for (int i = 0; i < f->n_pool; i++) pool_labels[i] = f->ds->labels[f->pool[i]];
  spry_partition_config pc = spry_partition_config_default();
  pc.n_clients = cfg->fl.clients;
  pc.n_classes = f->ds->n_class;
  pc.alpha = cfg->fl.alpha;
  pc.seed = cfg->run.seed;
  pc.test_fraction = cfg->fl.test_fraction;
  pc.sizes = cfg->fl.quantity_skew == SPRY_SKEW_LOGNORMAL  ? SPRY_SIZES_LOGNORMAL
             : cfg->fl.quantity_skew == SPRY_SKEW_POWERLAW ? SPRY_SIZES_POWERLAW
                                                             : SPRY_SIZES_EQUAL;
  pc.size_param = cfg->fl.quantity_param;
  _Static_assert((int)SPRY_FL_PARTITION_SAMPLED == (int)SPRY_PARTITION_SAMPLED &&
                     (int)SPRY_FL_PARTITION_HOMOGENEOUS == (int)SPRY_PARTITION_HOMOGENEOUS,
                 "fl.partition values follow spry/partition.h");
  pc.mode = (spry_partition_mode)cfg->fl.partition;
  if (pc.mode == SPRY_PARTITION_POOL) /* pool: deal out N * examples_per_client examples (0 = all of them) */
    pc.total_examples = (size_t)cfg->fl.examples_per_client * (size_t)pc.n_clients;
  else
    pc.examples_per_client = cfg->fl.examples_per_client;
  if (pc.total_examples > (size_t)f->n_pool)
    spry_fatal("fl.partition = pool deals out fl.clients x fl.examples_per_client = %d x %d = %zu examples without "
               "replacement, but the dataset's train split has %d (allowed: fl.examples_per_client <= %d, or "
               "fl.partition = sampled, whose clients may share examples)",
               pc.n_clients, cfg->fl.examples_per_client, pc.total_examples, f->n_pool, f->n_pool / pc.n_clients);
  if (pc.mode == SPRY_PARTITION_POOL && (size_t)f->n_pool < (size_t)pc.n_clients * (size_t)pc.min_size)
    spry_fatal("fl.clients = %d need at least %d training examples (%d each), the dataset's train split has %d",
               pc.n_clients, pc.n_clients * pc.min_size, pc.min_size, f->n_pool);
  f->part = spry_partition_create(pool_labels, (size_t)f->n_pool, &pc);
  spry_free(&pool_labels);
  f->client_train = spry_alloc("federation", sizeof(int32_t *) * (size_t)pc.n_clients);
  f->client_test = spry_alloc("federation", sizeof(int32_t *) * (size_t)pc.n_clients);
  for (int m = 0; m < pc.n_clients; m++) {
    int ntr = spry_partition_n_train(f->part, m), nte = spry_partition_n_test(f->part, m);
    f->client_train[m] = spry_alloc("federation", sizeof(int32_t) * (size_t)(ntr > 0 ? ntr : 1));
    f->client_test[m] = spry_alloc("federation", sizeof(int32_t) * (size_t)(nte > 0 ? nte : 1));
    for (int i = 0; i < ntr; i++) f->client_train[m][i] = f->pool[spry_partition_train(f->part, m)[i]];
    for (int i = 0; i < nte; i++) f->client_test[m][i] = f->pool[spry_partition_test(f->part, m)[i]];
  }

  /* plan, blocks, aggregation */
  spry_plan_config plc = {.n_clients = cfg->fl.clients,
                          .clients_per_round = cfg->fl.clients_per_round,
                          .n_blocks = f->L,
                          .n_ranks = f->size,
                          .split_blocks = cfg->method.split == SPRY_SPLIT_SPRY,
                          .random_assign = cfg->method.assignment == SPRY_ASSIGN_RANDOM,
                          .head_is_last = mc.head_trainable,
                          .head_shared = cfg->method.head_shared && mc.head_trainable && cfg->method.split == SPRY_SPLIT_SPRY,
                          .seed = cfg->run.seed};
  f->plan = spry_plan_create(&plc);
  f->blocks = spry_alloc("federation", sizeof(spry_range) * (size_t)f->L);
  const spry_block *bl = spry_model_blocks(f->model);
  for (int l = 0; l < f->L; l++) f->blocks[l] = (spry_range){bl[l].offset, bl[l].size};
  f->w = spry_alloc_floats("federation", f->d);
  memcpy(f->w, spry_model_w(f->model), sizeof(float) * f->d);
  if (cfg->method.estimator == SPRY_EST_FWDLLM) f->g_prev = spry_alloc_floats("federation", f->d);
  f->full = spry_alloc_floats("federation", f->d);
  f->packed = spry_alloc_floats("federation", f->d);
  f->aggregate = spry_alloc_floats("federation", f->d);
  f->delta = spry_alloc_floats("federation", f->d);
  f->active = spry_alloc("federation", (size_t)f->L);
  int M = cfg->fl.clients_per_round;
  f->slots = spry_alloc("federation", sizeof(spry_slot_record) * (size_t)M);
  f->local = spry_alloc("federation", sizeof(spry_slot_record) * (size_t)M);
  f->recv_counts = spry_alloc("federation", sizeof(int) * (size_t)f->size);
  f->recv_displs = spry_alloc("federation", sizeof(int) * (size_t)f->size);
  if (f->rank == 0) {
    f->agg = spry_aggregator_create(f->blocks, f->L, f->d);
    spry_server_opt_kind kind = cfg->method.server_opt == SPRY_SERVER_OPT_FEDADAM   ? SPRY_SERVER_FEDADAM
                                : cfg->method.server_opt == SPRY_SERVER_OPT_FEDYOGI ? SPRY_SERVER_FEDYOGI
                                                                                    : SPRY_SERVER_FEDAVG;
    spry_server_opt_config sc = spry_server_opt_default(kind);
    sc.lr = cfg->method.server_lr;
    sc.beta1 = cfg->method.server_beta1;
    sc.beta2 = cfg->method.server_beta2;
    sc.tau = cfg->method.server_tau;
    f->server = spry_server_opt_create(&sc, f->d);
  }
  if (cfg->log.gradients >= SPRY_GRADLOG_DENSE) {
    f->local_dense = spry_alloc_floats("dense log", (size_t)M * f->d);
  }
  if (f->rank == 0) f->w_start = spry_alloc_floats("federation", f->d);
  f->mail = spry_mailbox_create(cfg, f->blocks, f->L, f->d, comm);
  if (cfg->log.gradients >= SPRY_GRADLOG_ORACLE) {
    spry_oracle_setup os = {.cfg = cfg, .runner = f->runner, .ds = f->ds, .pool = f->pool, .n_pool = f->n_pool,
                            .part = f->part, .blocks = f->blocks, .L = f->L, .d = f->d, .comm = comm};
    f->oracle = spry_oracle_create(&os);
  }
  f->final_acc = f->final_loss = f->initial_acc = f->initial_loss = f->final_personal_acc = NAN;
  f->metrics_hash = spry_fnv1a(NULL, 0, 0);
  return f;
}

void spry_fed_free(spry_fed **pf) {
  spry_fed *f = *pf;
  if (!f) return;
  for (int m = 0; m < f->cfg.fl.clients; m++) {
    spry_free(&f->client_train[m]);
    spry_free(&f->client_test[m]);
  }
  spry_free(&f->client_train);
  spry_free(&f->client_test);
  spry_client_runner_free(&f->runner);
  spry_model_free(&f->model);
  spry_partition_free(&f->part);
  spry_dataset_free(&f->ds);
  spry_plan_free(&f->plan);
  spry_aggregator_free(&f->agg);
  spry_server_opt_free(&f->server);
  spry_free(&f->pool);
  spry_free(&f->held_out);
  spry_free(&f->blocks);
  spry_free(&f->w);
  spry_free(&f->g_prev);
  spry_free(&f->full);
  spry_free(&f->packed);
  spry_free(&f->aggregate);
  spry_free(&f->delta);
  spry_free(&f->active);
  spry_free(&f->recv_counts);
  spry_free(&f->recv_displs);
  spry_free(&f->slots);
  spry_free(&f->local);
  spry_free(&f->dense_store);
  spry_free(&f->local_dense);
  spry_mailbox_free(&f->mail);
  spry_free(&f->w_start);
  spry_oracle_free(&f->oracle);
  spry_free(&f->ckpt_path);
  spry_free(pf);
}

const spry_config *spry_fed_config(const spry_fed *f) { return &f->cfg; }
spry_model *spry_fed_model(spry_fed *f) { return f->model; }
const spry_dataset *spry_fed_dataset(const spry_fed *f) { return f->ds; }
const spry_partition *spry_fed_partition(const spry_fed *f) { return f->part; }
float *spry_fed_weights(spry_fed *f) { return f->w; }
int spry_fed_rank(const spry_fed *f) { return f->rank; }
int spry_fed_size(const spry_fed *f) { return f->size; }
double spry_fed_final_accuracy(const spry_fed *f) { return f->final_acc; }
double spry_fed_final_loss(const spry_fed *f) { return f->final_loss; }
double spry_fed_final_personal_accuracy(const spry_fed *f) { return f->final_personal_acc; }
double spry_fed_initial_accuracy(const spry_fed *f) { return f->initial_acc; }
double spry_fed_initial_loss(const spry_fed *f) { return f->initial_loss; }
uint64_t spry_fed_metrics_hash(const spry_fed *f) { return f->metrics_hash; }
long spry_fed_verified_rebuilds(const spry_fed *f) { return f->verified_rebuilds; }

static void plan_active(const spry_plan *plan, int slot, unsigned char *active) {
  for (int l = 0; l < plan->n_blocks; l++) active[l] = spry_plan_trains(plan, slot, l);
}

static int dense_logging(const spry_config *cfg) { return cfg->log.gradients >= SPRY_GRADLOG_DENSE; }

/* ---- the server's side of a round --------------------------------------------------------------------- */

/* Rebuild slot j's full-length contribution (estimate or new weights) from its protocol payload into f->full. */
static void rebuild(spry_fed *f, const spry_slot_record *rec, const float *protocol) {
  const spry_config *cfg = &f->cfg;
  if (cfg->method.comm == SPRY_COMM_EPOCH || cfg->method.estimator == SPRY_EST_BACKPROP) {
    memset(f->full, 0, sizeof(float) * f->d);
    spry_unpack_slot(f->plan, f->blocks, rec->slot, protocol, f->full);
    return;
  }
  plan_active(f->plan, rec->slot, f->active);
  spry_tangent_spec spec = spry_client_tangent_spec(cfg, f->plan->round, rec->client, 0, rec->K, f->active);
  if (cfg->method.estimator == SPRY_EST_FWDLLM) {
    spec.K = rec->step_K[0];
    spec.k_list = (const uint32_t *)protocol;
    spry_forward_gradient(f->model, &spec, protocol + spec.K, f->full);
  } else {
    spry_forward_gradient(f->model, &spec, protocol, f->full);
  }
}

static int all_finite(const float *x, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!isfinite(x[i])) return 0;
  return 1;
}

/* Aggregate the gathered messages on rank 0 and step the server optimizer. Returns a SPRY_RUN_* status. */
static int server_update(spry_fed *f, double *train_loss) {
  const spry_config *cfg = &f->cfg;
  int M = f->plan->n_slots;
  const char *p = spry_mailbox_received(f->mail);
  spry_aggregator_begin(f->agg, f->plan);
  double wl = 0, ws = 0;
  int mismatches = 0, status = SPRY_RUN_OK;
  size_t dense_need = dense_logging(cfg) ? (size_t)M * f->d : 0;
  if (dense_need > f->dense_cap / sizeof(float)) {
    spry_free(&f->dense_store);
    f->dense_store = spry_alloc_floats("dense log", dense_need);
    f->dense_cap = dense_need * sizeof(float);
  }
  for (int j = 0; j < M; j++) {
    const float *protocol;
    spry_slot_record *rec = &f->slots[j];
    spry_message_store st =
        spry_oracle_store(f->oracle, 1, j, f->dense_store ? f->dense_store + (size_t)j * f->d : NULL);
    p = spry_message_parse(f->mail, f->plan, p, rec, &protocol, &st);
    SPRY_CHECK(rec->slot == j, "internal: message %d carries slot %d (results must arrive in slot order)", j,
               rec->slot);
    if (!isfinite(rec->loss)) {
      if (status == SPRY_RUN_OK)
        fprintf(stderr, "[rank 0] round %u: client %d reported a non-finite training loss (%g); stopping\n",
                f->plan->round, rec->client, rec->loss);
      status = SPRY_RUN_NONFINITE;
    }
    rebuild(f, rec, protocol);
    /* per-iteration forward/zeroth/FwdLLM: the server's rebuild must equal the client's own estimate, bit for bit */
    if (rec->estimate && cfg->method.comm == SPRY_COMM_ITERATION && cfg->method.estimator != SPRY_EST_BACKPROP &&
        memcmp(rec->estimate, f->full, sizeof(float) * f->d) != 0)
      mismatches++;
    double weight = cfg->fl.weighting == SPRY_WEIGHT_UNIFORM ? 1.0 : (double)rec->n_examples;
    spry_pack_slot(f->plan, f->blocks, j, f->full, f->packed);
    spry_aggregator_add(f->agg, j, weight, f->packed);
    wl += weight * rec->loss;
    ws += weight;
  }
  if (cfg->method.comm == SPRY_COMM_ITERATION && cfg->method.estimator != SPRY_EST_BACKPROP && f->dense_store)
    f->verified_rebuilds += M - mismatches;
  SPRY_CHECK(mismatches == 0,
             "round %u: the server's rebuilt estimates differ from the clients' own for %d of %d clients "
             "(tangent regeneration is not deterministic)",
             f->plan->round, mismatches, M);
  spry_aggregator_finish(f->agg, f->aggregate);
  *train_loss = wl / ws;
  if (cfg->method.comm == SPRY_COMM_EPOCH) {
    for (size_t i = 0; i < f->d; i++) f->delta[i] = f->aggregate[i] - f->w[i];
    memcpy(f->aggregate, f->delta, sizeof(float) * f->d); /* logged: the pseudo-gradient Delta */
  } else {
    for (size_t i = 0; i < f->d; i++) f->delta[i] = -f->aggregate[i];
  }
  if (f->g_prev)
    for (size_t i = 0; i < f->d; i++) f->g_prev[i] = -f->delta[i];
  spry_server_opt_step(f->server, f->w, f->delta, NULL, 0);
  if (status == SPRY_RUN_OK && !all_finite(f->w, f->d)) {
    fprintf(stderr, "[rank 0] round %u: the global weights became non-finite after the server step; stopping\n",
            f->plan->round);
    status = SPRY_RUN_NONFINITE;
  }
  return status;
}

/* Held-out evaluation of the current global weights, shared by the ranks batch by batch; rank 0 gets the sums
 * added in batch order, so the result does not depend on the number of ranks. */
static void evaluate_global(spry_fed *f, double *loss, double *acc) {
  int nb = (f->n_held_out + f->B - 1) / f->B;
  int first, count;
  spry_rank_slots(nb, f->size, f->rank, &first, &count);
  double *mine = spry_alloc("federation", sizeof(double) * 2 * (size_t)(count > 0 ? count : 1));
  memcpy(spry_model_w(f->model), f->w, sizeof(float) * f->d);
  for (int b = 0; b < count; b++) {
    int start = (first + b) * f->B, n = f->n_held_out - start < f->B ? f->n_held_out - start : f->B;
    int correct;
    spry_client_evaluate(f->runner, f->held_out + start, n, &mine[2 * b], &correct);
    mine[2 * b + 1] = correct;
  }
  double *all = NULL;
  if (f->rank == 0) {
    all = spry_alloc("federation", sizeof(double) * 2 * (size_t)(nb > 0 ? nb : 1));
    spry_rank_slot_layout(nb, f->size, 2, f->recv_counts, f->recv_displs);
  }
  SPRY_CHECK_MPI(MPI_Gatherv(mine, 2 * count, MPI_DOUBLE, all, f->recv_counts, f->recv_displs, MPI_DOUBLE, 0,
                             f->comm));
  if (f->rank == 0) {
    double ls = 0, c = 0;
    for (int b = 0; b < nb; b++) ls += all[2 * b], c += all[2 * b + 1];
    *loss = f->n_held_out ? ls / f->n_held_out : NAN;
    *acc = f->n_held_out ? c / f->n_held_out : NAN;
    spry_free(&all);
  }
  spry_free(&mine);
}

static int is_eval_round(const spry_config *cfg, uint32_t t) {
  if ((int)t == cfg->run.rounds - 1) return 1;
  return cfg->run.eval_every > 0 && (t + 1) % (uint32_t)cfg->run.eval_every == 0;
}

/* ---- checkpoints and stopping ------------------------------------------------------------------------- */

void spry_fed_set_checkpoint(spry_fed *f, const char *path) {
  spry_free(&f->ckpt_path);
  if (!path) return;
  f->ckpt_path = spry_alloc("federation", strlen(path) + 1);
  memcpy(f->ckpt_path, path, strlen(path) + 1);
}

void spry_fed_set_stop_flag(spry_fed *f, volatile sig_atomic_t *flag) { f->stop_flag = flag; }

void spry_fed_checkpoint_view(spry_fed *f, uint32_t rounds_done, spry_checkpoint *c) {
  memset(c, 0, sizeof *c);
  c->rounds_done = rounds_done;
  c->config_hash = spry_config_hash(&f->cfg);
  int n = spry_config_to_ini(&f->cfg, NULL, 0);
  SPRY_CHECK(n >= 0, "out of memory printing the configuration");
  c->config_text = spry_alloc("checkpoint", (size_t)n + 1);
  spry_config_to_ini(&f->cfg, c->config_text, (size_t)n + 1);
  c->d = f->d;
  c->w = f->w;
  c->server_m = f->server ? f->server->m : NULL;
  c->server_v = f->server ? f->server->v : NULL;
  c->server_step = f->server ? f->server->step : 0;
  c->g_prev = f->g_prev;
  c->metrics_hash = f->metrics_hash;
  c->final_acc = f->final_acc;
  c->final_loss = f->final_loss;
  c->initial_acc = f->initial_acc;
  c->initial_loss = f->initial_loss;
  c->verified_rebuilds = f->verified_rebuilds;
  const float *wp = NULL, *gp = NULL;
  spry_oracle_secant_state(f->oracle, &wp, &gp);
  c->oracle_w_prev = (float *)wp;
  c->oracle_pool_grad_prev = (float *)gp;
  c->status = SPRY_RUN_OK;
}

int spry_fed_restore(spry_fed *f, const spry_checkpoint *c, char *err, size_t errlen) {
  if (c->d != f->d) {
    snprintf(err, errlen, "the checkpoint holds d = %zu trainable weights, this model has d = %zu", c->d, f->d);
    return -1;
  }
  int has_moments = f->server && f->server->m;
  if (!c->server_m != !has_moments) {
    snprintf(err, errlen, "the checkpoint %s server-optimizer moments, method.server_opt = %s %s them",
             c->server_m ? "has" : "has no", f->cfg.method.server_opt == SPRY_SERVER_OPT_FEDAVG ? "fedavg" : "adaptive",
             has_moments ? "needs" : "has none of");
    return -1;
  }
  if (!c->g_prev != !f->g_prev) {
    snprintf(err, errlen, "the checkpoint %s FwdLLM's previous global estimate g_prev; this method %s it",
             c->g_prev ? "has" : "has no", f->g_prev ? "needs" : "does not use");
    return -1;
  }
  memcpy(f->w, c->w, sizeof(float) * f->d);
  if (has_moments) {
    memcpy(f->server->m, c->server_m, sizeof(float) * f->d);
    memcpy(f->server->v, c->server_v, sizeof(float) * f->d);
  }
  if (f->server) f->server->step = c->server_step;
  if (f->g_prev) memcpy(f->g_prev, c->g_prev, sizeof(float) * f->d);
  f->metrics_hash = c->metrics_hash;
  f->final_acc = c->final_acc;
  f->final_loss = c->final_loss;
  f->initial_acc = c->initial_acc;
  f->initial_loss = c->initial_loss;
  f->verified_rebuilds = c->verified_rebuilds;
  spry_oracle_restore_secant(f->oracle, c->oracle_w_prev, c->oracle_pool_grad_prev);
  return 0;
}

/* Rank 0 writes the checkpoint after rounds_done rounds; a failure ends the job (every rank) with the reason. */
static void write_checkpoint(spry_fed *f, uint32_t rounds_done, int status) {
  if (f->rank == 0) {
    spry_checkpoint c;
    spry_fed_checkpoint_view(f, rounds_done, &c);
    c.status = status;
    char err[4600];
    int rc = spry_checkpoint_write(f->ckpt_path, &c, err, sizeof err);
    spry_free(&c.config_text);
    if (rc != 0) spry_fatal("%s", err);
  }
  SPRY_CHECK_MPI(MPI_Barrier(f->comm));
}

/* Run this rank's slots of round t, one client after another on one runner, and pack their uploads; the
 * allocator's peak over the ranks goes to rec (rank 0). */
static void run_clients(spry_fed *f, uint32_t t, int eval, spry_round_record *rec) {
  int first, count;
  spry_rank_slots(f->plan->n_slots, f->size, f->rank, &first, &count);
  rec->first_local = first;
  rec->n_local = count;
  spry_mem_reset_peak();
  spry_mailbox_clear(f->mail);
  for (int j = first; j < first + count; j++) {
    int client = f->plan->client[j];
    plan_active(f->plan, j, f->active);
    const spry_client_result *res = spry_client_run(
        f->runner, t, client, f->active, f->w, f->client_train[client], spry_partition_n_train(f->part, client),
        eval ? f->client_test[client] : NULL, eval ? spry_partition_n_test(f->part, client) : 0, f->g_prev);
    spry_mailbox_pack(f->mail, f->plan, j, res, f->w);
  }
  uint64_t peak = spry_mem_peak(), peak_max = 0;
  SPRY_CHECK_MPI(MPI_Reduce(&peak, &peak_max, 1, MPI_UINT64_T, MPI_MAX, 0, f->comm));
  rec->peak_bytes = peak_max;
}

/* eval.personalize_epochs = F > 0 on an eval round: each rank personalises w_{t+1} for its own slots (F local
 * epochs of the method's client training on the slot's blocks of the round, then its local test split); rank 0
 * gathers the counts in slot order and sums them in slot order (the same bits at any rank count). */
static void personalize(spry_fed *f, spry_round_record *rec) {
  const spry_config *cfg = &f->cfg;
  if (f->g_prev) SPRY_CHECK_MPI(MPI_Bcast(f->g_prev, (int)f->d, MPI_FLOAT, 0, f->comm)); /* the latest estimate */
  int M = rec->n_slots, first = rec->first_local, count = rec->n_local;
  double *mine = spry_alloc("federation", sizeof(double) * 3 * (size_t)(count > 0 ? count : 1));
  for (int j = 0; j < count; j++) {
    spry_slot_record *r = &f->local[j];
    plan_active(f->plan, first + j, f->active);
    int correct;
    double loss;
    int nte = spry_partition_n_test(f->part, r->client);
    spry_client_personalize(f->runner, f->plan->round, r->client, f->active, f->w, f->client_train[r->client],
                            spry_partition_n_train(f->part, r->client), cfg->eval.personalize_epochs,
                            f->client_test[r->client], nte, f->g_prev, &correct, &loss);
    r->personal_correct = correct;
    r->personal_count = nte;
    r->personal_loss = loss;
    mine[3 * j] = correct, mine[3 * j + 1] = nte, mine[3 * j + 2] = loss;
  }
  double *all = f->rank == 0 ? spry_alloc("federation", sizeof(double) * 3 * (size_t)M) : NULL;
  spry_rank_slot_layout(M, f->size, 3, f->recv_counts, f->recv_displs);
  SPRY_CHECK_MPI(MPI_Gatherv(mine, 3 * count, MPI_DOUBLE, all, f->recv_counts, f->recv_displs, MPI_DOUBLE, 0,
                             f->comm));
  if (f->rank == 0) {
    double c = 0, n = 0, ls = 0;
    for (int j = 0; j < M; j++) {
      f->slots[j].personal_correct = (int)all[3 * j];
      f->slots[j].personal_count = (int)all[3 * j + 1];
      f->slots[j].personal_loss = all[3 * j + 2];
      c += all[3 * j];
      n += all[3 * j + 1];
      if (all[3 * j + 1] > 0) ls += all[3 * j + 2] * all[3 * j + 1];
    }
    rec->personal_acc = n > 0 ? c / n : NAN;
    rec->personal_loss = n > 0 ? ls / n : NAN;
  }
  spry_free(&all);
  spry_free(&mine);
}

/* After the server step: the held-out evaluation (eval rounds), every rank's records of its own slots (parsed from
 * its own uploads, so a writer can use them collectively), and on rank 0 the round's sums and oracle statistics. */
static void record(spry_fed *f, int eval, int status, spry_round_record *rec) {
  int M = rec->n_slots;
  if (status == SPRY_RUN_OK && eval) {
    SPRY_CHECK_MPI(MPI_Bcast(f->w, (int)f->d, MPI_FLOAT, 0, f->comm));
    evaluate_global(f, &rec->eval_loss, &rec->eval_acc);
    rec->evaluated = 1;
  }
  const char *p = spry_mailbox_sent(f->mail);
  for (int j = 0; j < rec->n_local; j++) {
    const float *protocol;
    spry_message_store st =
        spry_oracle_store(f->oracle, 0, j, f->local_dense ? f->local_dense + (size_t)j * f->d : NULL);
    p = spry_message_parse(f->mail, f->plan, p, &f->local[j], &protocol, &st);
  }
  if (f->oracle && status == SPRY_RUN_OK) spry_oracle_residuals(f->oracle, f->local, rec->n_local);
  for (int j = 0; j < rec->n_local; j++) f->local[j].personal_loss = NAN;
  if (status == SPRY_RUN_OK && eval && f->cfg.eval.personalize_epochs > 0) personalize(f, rec);
  rec->local = f->local;
  if (f->rank != 0) return;
  int tc = 0, tn = 0;
  for (int j = 0; j < M; j++) {
    rec->bytes_up += f->slots[j].bytes_up;
    rec->bytes_down += f->slots[j].bytes_down;
    tc += f->slots[j].test_correct;
    tn += f->slots[j].test_count;
  }
  if (eval && tn > 0) rec->local_acc = (double)tc / tn;
  rec->slots = f->slots;
  rec->w = f->w;
  rec->aggregate = f->aggregate;
  rec->w_start = f->w_start;
  if (f->oracle && status == SPRY_RUN_OK)
    spry_oracle_statistics(f->oracle, f->plan, f->slots, f->aggregate, f->w_start, rec);
  if (rec->evaluated) f->final_acc = rec->eval_acc, f->final_loss = rec->eval_loss;
  if (rec->evaluated) f->final_personal_acc = rec->personal_acc;
  double m3[3] = {rec->train_loss, rec->eval_loss, rec->eval_acc};
  f->metrics_hash = spry_fnv1a(m3, sizeof m3, f->metrics_hash);
}

int spry_fed_run(spry_fed *f, uint32_t first_round, const spry_fed_observer *obs) {
  const spry_config *cfg = &f->cfg;
  int M = cfg->fl.clients_per_round;
  int status = SPRY_RUN_OK;
  if (first_round == 0) { /* the starting point: held-out metrics of the initial global model */
    double loss = NAN, acc = NAN;
    SPRY_CHECK_MPI(MPI_Bcast(f->w, (int)f->d, MPI_FLOAT, 0, f->comm));
    evaluate_global(f, &loss, &acc);
    if (f->rank == 0) {
      f->initial_loss = loss;
      f->initial_acc = acc;
      if (!cfg->run.quiet) {
        printf("round %4d/%d  initial model: eval loss %.4f acc %.2f%%\n", 0, cfg->run.rounds, loss, 100 * acc);
        fflush(stdout);
      }
    }
  }
  double init[2] = {f->initial_loss, f->initial_acc}; /* every rank knows w_0's metrics (the run file keeps them) */
  SPRY_CHECK_MPI(MPI_Bcast(init, 2, MPI_DOUBLE, 0, f->comm));
  f->initial_loss = init[0];
  f->initial_acc = init[1];
  double t_start = spry_now();
  for (uint32_t t = first_round; t < (uint32_t)cfg->run.rounds; t++) {
    double t0 = spry_now();
    SPRY_CHECK_MPI(MPI_Bcast(f->w, (int)f->d, MPI_FLOAT, 0, f->comm));
    if (f->g_prev) SPRY_CHECK_MPI(MPI_Bcast(f->g_prev, (int)f->d, MPI_FLOAT, 0, f->comm));
    spry_plan_build(f->plan, t);
    int eval = is_eval_round(cfg, t);
    if (f->rank == 0) memcpy(f->w_start, f->w, sizeof(float) * f->d);
    spry_round_record rec = {.round = t, .plan = f->plan, .n_slots = M};
    rec.train_loss = rec.eval_loss = rec.eval_acc = rec.local_acc = NAN;
    rec.sq_error = rec.cosine = rec.z2 = rec.batch_z2 = NAN;
    rec.objective = rec.grad_sq = rec.pool_objective = rec.pool_grad_sq = rec.secant = NAN;
    rec.personal_acc = rec.personal_loss = NAN;
    rec.initial_eval_loss = f->initial_loss;
    rec.initial_eval_acc = f->initial_acc;

    run_clients(f, t, eval, &rec);                  /* this rank's clients -> their uploads */
    if (f->oracle) spry_oracle_classes(f->oracle, f->w); /* at w_t, after the clients' peak was taken */
    spry_mailbox_gather(f->mail, t);                /* uploads to rank 0 in slot order */
    if (f->rank == 0) status = server_update(f, &rec.train_loss);
    SPRY_CHECK_MPI(MPI_Bcast(&status, 1, MPI_INT, 0, f->comm));
    record(f, eval, status, &rec);                   /* evaluation, local records, oracle statistics */

    rec.seconds = spry_now() - t0;
    if (obs && obs->round) obs->round(obs->ctx, f, &rec);
    if (f->rank == 0 && !cfg->run.quiet) {
      double elapsed = spry_now() - t_start;
      int done = (int)(t - first_round + 1), left = cfg->run.rounds - (int)t - 1;
      printf("round %4u/%d  train loss %.4f", t + 1, cfg->run.rounds, rec.train_loss);
      if (rec.evaluated) printf("  eval loss %.4f acc %.2f%%", rec.eval_loss, 100 * rec.eval_acc);
      if (rec.evaluated && !isnan(rec.local_acc)) printf("  clients' local acc %.2f%%", 100 * rec.local_acc);
      if (rec.evaluated && !isnan(rec.personal_acc))
        printf("  personalised (%d epochs) local acc %.2f%%", cfg->eval.personalize_epochs, 100 * rec.personal_acc);
      printf("  %.2f s/round  ETA %.0f s\n", rec.seconds, elapsed / done * left);
      fflush(stdout);
    }
    if (status != SPRY_RUN_OK) break;
    /* the round boundary: a stop requested on any rank stops every rank, after a checkpoint */
    int stop = f->stop_flag && *f->stop_flag, stop_any = 0;
    SPRY_CHECK_MPI(MPI_Allreduce(&stop, &stop_any, 1, MPI_INT, MPI_MAX, f->comm));
    int last = (int)t + 1 == cfg->run.rounds;
    int every = cfg->run.checkpoint_every;
    if (f->ckpt_path && (stop_any || (every > 0 && ((t + 1) % (uint32_t)every == 0 || last))))
      write_checkpoint(f, t + 1, stop_any && !last ? SPRY_RUN_STOPPED : SPRY_RUN_OK);
    if (stop_any && !last) {
      if (f->rank == 0) {
        if (f->ckpt_path)
          printf("stopped by a signal after round %u/%d; checkpoint %s written: continue with --resume\n", t + 1,
                 cfg->run.rounds, f->ckpt_path);
        else
          printf("stopped by a signal after round %u/%d (no output file, so no checkpoint)\n", t + 1,
                 cfg->run.rounds);
        fflush(stdout);
      }
      status = SPRY_RUN_STOPPED;
      break;
    }
  }
  return status;
}
