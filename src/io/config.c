/* src/io/config.c -- the configuration key table and the functions that walk it (see spry/config.h).
 *
 * Everything here goes through one table (KEYS): a key is parsed by set_value(), printed by format_value(),
 * documented by spry_config_doc() and hashed by spry_config_canonical(); defaults and presets are text that
 * set_value() parses like user input. Rules between keys are the CROSS_CHECKS table.
 * No MPI, no HDF5, no exit(): errors go into an errbuf the caller reads.
 */
#include "spry/config.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "spry/core.h"

/* Enum keys are written through an int*: every enum type must be int-sized. */
_Static_assert(sizeof(spry_task) == sizeof(int), "enum size");
_Static_assert(sizeof(spry_quantity_skew) == sizeof(int), "enum size");
_Static_assert(sizeof(spry_weighting) == sizeof(int), "enum size");
_Static_assert(sizeof(spry_fl_partition) == sizeof(int), "enum size");
_Static_assert(sizeof(spry_preset) == sizeof(int), "enum size");
_Static_assert(sizeof(spry_estimator) == sizeof(int), "enum size");
_Static_assert(sizeof(spry_split) == sizeof(int), "enum size");
_Static_assert(sizeof(spry_comm) == sizeof(int), "enum size");
_Static_assert(sizeof(spry_client_opt) == sizeof(int), "enum size");
_Static_assert(sizeof(spry_server_opt) == sizeof(int), "enum size");
_Static_assert(sizeof(spry_tangent_kind) == sizeof(int), "enum size");
_Static_assert(sizeof(spry_assignment) == sizeof(int), "enum size");
_Static_assert(sizeof(spry_grad_log) == sizeof(int), "enum size");

/* ---- enum names, in value order ---------------------------------------------------------------------- */

#define NAMES_MATCH(names, last) _Static_assert(sizeof(names) / sizeof(*(names)) == (size_t)(last) + 2, #names)

static const char *const TASK_NAMES[] = {"classify", "lm", NULL};
NAMES_MATCH(TASK_NAMES, SPRY_TASK_LM);
static const char *const SKEW_NAMES[] = {"none", "lognormal", "powerlaw", NULL};
NAMES_MATCH(SKEW_NAMES, SPRY_SKEW_POWERLAW);
static const char *const WEIGHTING_NAMES[] = {"samples", "uniform", NULL};
NAMES_MATCH(WEIGHTING_NAMES, SPRY_WEIGHT_UNIFORM);
static const char *const PARTITION_NAMES[] = {"pool", "sampled", "homogeneous", NULL};
NAMES_MATCH(PARTITION_NAMES, SPRY_FL_PARTITION_HOMOGENEOUS);
static const char *const PRESET_NAMES[] = {"spry",    "fedfgd", "fedavg", "fedyogi",      "fedsgd",
                                           "fedmezo", "baffle", "fwdllm", "fedavg-split", "custom", NULL};
NAMES_MATCH(PRESET_NAMES, SPRY_PRESET_CUSTOM);
static const char *const ESTIMATOR_NAMES[] = {"forward", "backprop", "zeroth", "fwdllm", NULL};
NAMES_MATCH(ESTIMATOR_NAMES, SPRY_EST_FWDLLM);
static const char *const SPLIT_NAMES[] = {"none", "spry", NULL};
NAMES_MATCH(SPLIT_NAMES, SPRY_SPLIT_SPRY);
static const char *const COMM_NAMES[] = {"iteration", "epoch", NULL};
NAMES_MATCH(COMM_NAMES, SPRY_COMM_EPOCH);
static const char *const CLIENT_OPT_NAMES[] = {"sgd", "adamw", NULL};
NAMES_MATCH(CLIENT_OPT_NAMES, SPRY_CLIENT_OPT_ADAMW);
static const char *const SERVER_OPT_NAMES[] = {"fedavg", "fedadam", "fedyogi", NULL};
NAMES_MATCH(SERVER_OPT_NAMES, SPRY_SERVER_OPT_FEDYOGI);
static const char *const TANGENT_NAMES[] = {"gaussian", "rademacher", NULL};
_Static_assert(SPRY_TANGENT_GAUSSIAN == 0 && SPRY_TANGENT_RADEMACHER == 1, "tangent names follow spry/rng.h");
static const char *const ASSIGNMENT_NAMES[] = {"roundrobin", "random", NULL};
NAMES_MATCH(ASSIGNMENT_NAMES, SPRY_ASSIGN_RANDOM);
static const char *const GRADLOG_NAMES[] = {"none", "scalars", "dense", "oracle", NULL};
NAMES_MATCH(GRADLOG_NAMES, SPRY_GRADLOG_ORACLE);

/* ---- string rules ---------------------------------------------------------------------------------- */

static int check_nonempty(char *value, char *why, size_t whylen) {
  if (value[0]) return 0;
  snprintf(why, whylen, "must not be empty");
  return -1;
}

/* lora.targets: a comma list of known projections, each at most once; rewritten in canonical order. */
static const char *const TARGET_NAMES[] = {"q", "k", "v", "o", "fc", "proj", NULL};
_Static_assert(SPRY_LORA_Q == 1u << 0 && SPRY_LORA_K == 1u << 1 && SPRY_LORA_V == 1u << 2 && SPRY_LORA_O == 1u << 3 &&
                   SPRY_LORA_FC == 1u << 4 && SPRY_LORA_PROJ == 1u << 5,
               "TARGET_NAMES[i] is bit i of spry/model.h's SPRY_LORA_* mask");

static int targets_mask(const char *value, unsigned *mask, char *why, size_t whylen) {
  *mask = 0;
  const char *p = value;
  while (*p) {
    while (*p == ' ' || *p == '\t') p++;
    const char *start = p;
    while (*p && *p != ',') p++;
    const char *end = p;
    while (end > start && (end[-1] == ' ' || end[-1] == '\t')) end--;
    size_t n = (size_t)(end - start);
    if (n == 0) {
      snprintf(why, whylen, "has an empty item (allowed items: q, k, v, o, fc, proj)");
      return -1;
    }
    int found = -1;
    for (int i = 0; TARGET_NAMES[i]; i++)
      if (strlen(TARGET_NAMES[i]) == n && strncmp(TARGET_NAMES[i], start, n) == 0) found = i;
    if (found < 0) {
      snprintf(why, whylen, "has unknown item '%.*s' (allowed items: q, k, v, o, fc, proj)", (int)n, start);
      return -1;
    }
    if (*mask & (1u << found)) {
      snprintf(why, whylen, "lists '%s' twice", TARGET_NAMES[found]);
      return -1;
    }
    *mask |= 1u << found;
    if (*p == ',') {
      p++;
      if (!*p) {
        snprintf(why, whylen, "ends with a comma");
        return -1;
      }
    }
  }
  return 0;
}

static int check_targets(char *value, char *why, size_t whylen) {
  unsigned mask;
  if (targets_mask(value, &mask, why, whylen)) return -1;
  char canon[SPRY_CONFIG_STR_MAX + 1] = "";
  for (int i = 0; TARGET_NAMES[i]; i++) {
    if (!(mask & (1u << i))) continue;
    if (canon[0]) strcat(canon, ",");
    strcat(canon, TARGET_NAMES[i]);
  }
  strcpy(value, canon); /* canonical text is never longer than the input */
  return 0;
}

/* ---- the key table --------------------------------------------------------------------------------- */

#define OFF(field) offsetof(spry_config, field)
#define BIG 1e9
#define KEY_INT(sec, name, field, def, lo, hi, fl, doc_)                                                  \
  {sec, name, SPRY_CT_INT, OFF(field), def, lo, hi, NULL, fl, NULL, doc_, NULL}
#define KEY_U32(sec, name, field, def, doc_)                                                              \
  {sec, name, SPRY_CT_UINT32, OFF(field), def, 0, 4294967295.0, NULL, 0, NULL, doc_, NULL}
#define KEY_DBL(sec, name, field, def, lo, hi, fl, doc_)                                                  \
  {sec, name, SPRY_CT_DOUBLE, OFF(field), def, lo, hi, NULL, fl, NULL, doc_, NULL}
#define KEY_DBL_INF(sec, name, field, def, lo, fl, doc_)                                                  \
  {sec, name, SPRY_CT_DOUBLE_INF, OFF(field), def, lo, INFINITY, NULL, fl, NULL, doc_, NULL}
#define KEY_BOOL(sec, name, field, def, fl, doc_)                                                         \
  {sec, name, SPRY_CT_BOOL, OFF(field), def, 0, 1, NULL, fl, NULL, doc_, NULL}
#define KEY_ENUM(sec, name, field, def, names, fl, doc_)                                                  \
  {sec, name, SPRY_CT_ENUM, OFF(field), def, 0, 0, names, fl, NULL, doc_, NULL}
#define KEY_STR(sec, name, field, def, allowed_, check_, doc_)                                            \
  {sec, name, SPRY_CT_STRING, OFF(field), def, 0, 0, NULL, 0, allowed_, doc_, check_}

enum {
  P = SPRY_CK_PRESET,
  NOHASH = SPRY_CK_NOHASH,
  GT = SPRY_CK_MIN_EXCL,
  LT = SPRY_CK_MAX_EXCL,
  HASH_SET = SPRY_CK_HASH_SET
};

static const char *const SECTIONS[] = {"run", "model", "lora", "data", "fl", "method", "eval", "log", "pretrain",
                                       NULL};

static const spry_config_key KEYS[] = {
    /* [run] */
    KEY_U32("run", "seed", run.seed, "1",
            "Seed of every random stream (initialisation, data, partition, sampling, assignment, tangents)."),
    KEY_INT("run", "rounds", run.rounds, "60", 1, BIG, NOHASH,
            "Federated rounds. Not hashed: a resumed run may extend it (nothing depends on the total)."),
    KEY_INT("run", "eval_every", run.eval_every, "20", 0, BIG, 0,
            "Evaluate the global model on the test split every this many rounds and after the last one "
            "(0 = after the last one only)."),
    KEY_INT("run", "checkpoint_every", run.checkpoint_every, "0", 0, BIG, NOHASH,
            "Write a checkpoint every this many rounds (0 = off)."),
    KEY_BOOL("run", "quiet", run.quiet, "false", NOHASH, "No per-round progress lines."),
    KEY_INT("run", "threads", run.threads, "1", 0, 1024, 0,
            "OpenBLAS threads per rank. The thread count changes the rounding of matrix products, so 1 (the "
            "default) gives the same bits at any rank count; 0 = leave OpenBLAS's own setting."),
    /* [model] */
    KEY_STR("model", "base", model.base, "data/base-m8000.h5",
            "random, a spry base model (.h5), or a Hugging Face GPT-2 checkpoint (.safetensors)", check_nonempty,
            "Backbone: random initialisation from run.seed, or a pretrained checkpoint whose shapes must "
            "match the keys below (the app checks; docs/models.md)."),
    KEY_INT("model", "n_layer", model.n_layer, "4", 1, 256, 0, "Transformer blocks."),
    KEY_INT("model", "n_head", model.n_head, "4", 1, 256, 0, "Attention heads per block (divides n_embd)."),
    KEY_INT("model", "n_embd", model.n_embd, "128", 1, 16384, 0, "Embedding width C."),
    KEY_INT("model", "n_ctx", model.n_ctx, "64", 1, 16384, 0, "Context length (learned position embeddings)."),
    KEY_INT("model", "vocab_size", model.vocab_size, "8257", 2, 1048576, 0, "Vocabulary size V."),
    KEY_BOOL("model", "causal", model.causal, "true", 0,
             "Causal attention mask (false = bidirectional, encoder-style)."),
    KEY_ENUM("model", "task", model.task, "classify", TASK_NAMES, 0,
             "Task head: sequence classification at the last real token, or causal LM with the output head "
             "tied to the token embedding."),
    KEY_INT("model", "lm_chunk", model.lm_chunk, "2048", 1, 1048576, 0,
            "Vocabulary columns per chunk of the LM loss (bounds the logits buffer; hashed because the "
            "summation order may change the rounding)."),
    /* [lora] */
    KEY_INT("lora", "rank", lora.rank, "1", 1, 4096, 0, "LoRA rank r (at most model.n_embd)."),
    KEY_DBL("lora", "alpha", lora.alpha, "2", 0, 1e6, GT, "LoRA scale numerator: an adapter adds (alpha/r) B A x."),
    KEY_STR("lora", "targets", lora.targets, "q,v",
            "comma list of q, k, v, o, fc, proj, each at most once (may be empty)", check_targets,
            "Projections with adapters: q, k, v = slices of attn.c_attn, o = attn.c_proj, fc = mlp.c_fc, "
            "proj = mlp.c_proj. Stored in that canonical order."),
    KEY_BOOL("lora", "head", lora.head, "true", 0,
             "Classification head trainable (one block of its own). Must be false for model.task = lm."),
    /* [data] */
    KEY_STR("data", "dataset", data.dataset, "data/build/gpt2-bpe-m8000/wordnet.h5", "synthetic, or a path to an HDF5 dataset file",
            check_nonempty, "Token dataset: generated from run.seed, or a file made by the data scripts."),
    KEY_INT("data", "n_class", data.n_class, "4", 2, 100000, 0, "Synthetic data: number of classes."),
    KEY_INT("data", "n_examples", data.n_examples, "4000", 1, BIG, 0,
            "Synthetic data: number of examples (train and test)."),
    KEY_INT("data", "seq_len", data.seq_len, "32", 1, 16384, 0,
            "Synthetic data: maximum sequence length (at most model.n_ctx)."),
    KEY_INT("data", "batch_size", data.batch_size, "16", 1, 1000000, 0, "Examples per client step."),
    KEY_INT("data", "max_len", data.max_len, "0", 0, 16384, 0,
            "Truncate sequences to this many tokens (0 = model.n_ctx)."),
    KEY_DBL("data", "validation_fraction", data.validation_fraction, "0", 0, 0.5, 0,
            "Share of the training split held out as a validation set (never given to clients, stratified by "
            "class): when > 0 the global model's evaluation (eval_loss, eval_acc) uses it instead of the test "
            "split. For tuning learning rates without looking at the test split; 0 = off."),
    /* [fl] */
    KEY_INT("fl", "clients", fl.clients, "100", 1, 10000000, 0, "Clients N."),
    KEY_INT("fl", "clients_per_round", fl.clients_per_round, "10", 1, 10000000, 0,
            "Clients sampled per round M (at most N)."),
    KEY_DBL_INF("fl", "alpha", fl.alpha, "0.1", 0, GT,
                "Dirichlet label-skew concentration (THEORY 1); `inf` = IID."),
    KEY_ENUM("fl", "quantity_skew", fl.quantity_skew, "none", SKEW_NAMES, 0,
             "Client dataset sizes: as the label skew gives them, or with lognormal / power-law proportions."),
    KEY_DBL("fl", "quantity_param", fl.quantity_param, "1", 0, 100, GT,
            "Lognormal sigma, or power-law exponent, of quantity_skew."),
    KEY_DBL("fl", "test_fraction", fl.test_fraction, "0.2", 0, 0.9, GT,
            "Share of the examples held out as the global test set (above 0: accuracy is measured on it)."),
    KEY_ENUM("fl", "weighting", fl.weighting, "samples", WEIGHTING_NAMES, 0,
             "Aggregation weights: p_m = n_m / sum n (samples) or 1/M (uniform)."),
    KEY_ENUM("fl", "partition", fl.partition, "pool", PARTITION_NAMES, 0,
             "Client data from the train pool: pool = dealt out without replacement (classes run out, so the realised "
             "label mix follows the Dirichlet draw only roughly); sampled = each client draws its own "
             "examples_per_client examples from class pools that never run out (clients may share examples; realised "
             "train proportions = the draw up to rounding, error < 1/n_train per class); homogeneous = every client "
             "holds the same examples (Theorem 1.1)."),
    KEY_INT("fl", "examples_per_client", fl.examples_per_client, "0", 0, BIG, 0,
            "Examples per client, train + local test (0 = unused). sampled: required, >= 2, the mean size under "
            "quantity_skew; homogeneous: every client's size (0 = the whole train pool); pool: deal out only "
            "clients x this many examples (0 = the whole pool)."),
    /* [method] */
    KEY_ENUM("method", "preset", method.preset, "spry", PRESET_NAMES, NOHASH,
             "Named method (THEORY 2-3) supplying the preset keys; `custom` = none (table defaults). Not "
             "hashed: it acts only through the keys it sets."),
    KEY_ENUM("method", "estimator", method.estimator, "forward", ESTIMATOR_NAMES, P,
             "Gradient estimator: forward-mode JVPs, backprop, two-point zeroth order, or FwdLLM."),
    KEY_ENUM("method", "split", method.split, "spry", SPLIT_NAMES, P,
             "Split the trainable blocks among the round's clients (spry) or give every client all (none)."),
    KEY_ENUM("method", "comm", method.comm, "epoch", COMM_NAMES, P,
             "Per iteration: one step per round, K scalars (or a gradient) sent. Per epoch: the client's "
             "blocks sent after local training."),
    KEY_ENUM("method", "client_opt", method.client_opt, "adamw", CLIENT_OPT_NAMES, P,
             "Client optimizer of local training (comm = epoch), fresh each round."),
    KEY_ENUM("method", "server_opt", method.server_opt, "fedyogi", SERVER_OPT_NAMES, P,
             "Server optimizer applied to the aggregated gradient or pseudo-gradient."),
    KEY_INT("method", "K", method.K, "1", 1, 65536, P,
            "Perturbations (tangents or directions) per client step; fwdllm: the initial number."),
    KEY_INT("method", "tangent_chunk", method.tangent_chunk, "0", 0, 65536, HASH_SET,
            "Most tangents propagated together in one forward-mode pass (0 = all K of a step at once). A step "
            "with more runs in several passes, each repeating the primal: the tangent workspace of tangent_chunk "
            "tangents instead of K, for one more primal per extra pass. Results agree to fp32 rounding, not "
            "bitwise (the stacked GEMMs change shape), so it is hashed when set."),
    KEY_ENUM("method", "tangent", method.tangent, "gaussian", TANGENT_NAMES, 0,
             "Distribution of tangents and zeroth-order directions: N(0, I) or Rademacher (+1 or -1)."),
    KEY_INT("method", "local_epochs", method.local_epochs, "1", 1, 10000, P, "Local epochs per round."),
    KEY_INT("method", "local_steps", method.local_steps, "0", 0, BIG, P,
            "Local steps per round instead of epochs (0 = local_epochs full epochs)."),
    KEY_DBL("method", "client_lr", method.client_lr, "1e-3", 0, 100, P | GT, "Client learning rate."),
    KEY_DBL("method", "client_weight_decay", method.client_weight_decay, "0", 0, 10, 0,
            "Client weight decay (adamw: decoupled; sgd: added to the gradient as decay * w)."),
    KEY_DBL("method", "server_lr", method.server_lr, "1e-2", 0, 100, P | GT,
            "Server learning rate (fedavg per epoch: 1 = plain averaging; per iteration: the step size)."),
    KEY_DBL("method", "server_beta1", method.server_beta1, "0.9", 0, 1, LT,
            "Server fedadam/fedyogi first-moment decay."),
    KEY_DBL("method", "server_beta2", method.server_beta2, "0.99", 0, 1, LT,
            "Server fedadam/fedyogi second-moment decay."),
    KEY_DBL("method", "server_tau", method.server_tau, "1e-3", 0, 1, GT,
            "Server fedadam/fedyogi adaptivity (added to the root of the second moment)."),
    KEY_DBL("method", "zo_eps", method.zo_eps, "1e-3", 0, 1, GT,
            "Zeroth order: perturbation size eps in f(w + eps v) - f(w - eps v)."),
    KEY_ENUM("method", "assignment", method.assignment, "roundrobin", ASSIGNMENT_NAMES, 0,
             "Spry block assignment: fixed round-robin (block l to slots l mod M) or random each round."),
    KEY_BOOL("method", "head_shared", method.head_shared, "true", 0,
             "Spry: the head block goes to every client of the round (no effect with method.split = none, where "
             "every client trains every block, or without a trainable head)."),
    KEY_DBL("method", "fwdllm_threshold", method.fwdllm_threshold, "0.15", 0, 1e6, GT,
            "FwdLLM: double the perturbations (up to fwdllm_max_K) until the estimated tr Var of the averaged "
            "estimate is at most this times an unbiased estimate of the squared gradient norm (a relative squared "
            "error; Gaussian tangents over d coordinates pass at K ~ (d+1) / this). docs/federation.md."),
    KEY_INT("method", "fwdllm_candidates", method.fwdllm_candidates, "10", 1, 10000, 0,
            "FwdLLM: candidate tangents drawn per kept one; the kept one has the largest absolute cosine with "
            "the previous round's global gradient (1 = no selection)."),
    KEY_INT("method", "fwdllm_max_K", method.fwdllm_max_K, "50", 1, 65536, 0,
            "FwdLLM: most perturbations per client step."),
    /* [eval] */
    KEY_INT("eval", "personalize_epochs", eval.personalize_epochs, "0", 0, 100000, 0,
            "On evaluation rounds, each participant personalises the new global model w_{t+1} by this many local "
            "epochs of the method's own client training (its estimator, optimizer and blocks of the round) and "
            "reports its local test accuracy/loss as personal_acc/personal_loss, never mixed with eval_acc (the "
            "seed paper's Spry accuracy uses 5). 0 = off."),
    /* [log] */
    KEY_ENUM("log", "gradients", log.gradients, "scalars", GRADLOG_NAMES, 0,
             "Gradient data in the run file: none; scalars = jvp scalars or loss differences with seeds; "
             "dense = + each client's estimate and the aggregate; oracle = + true gradients (extra backprop)."),
    KEY_BOOL("log", "sample_indices", log.sample_indices, "false", 0,
             "Record the example indices of every client batch."),
    KEY_INT("log", "weights_every", log.weights_every, "0", 0, BIG, 0,
            "Record the global weights w_t at the start of rounds 0, n, 2n, ... and after the last round in "
            "/weights (0 = off)."),
    /* [pretrain]: `spry pretrain` only. Not in the run hash: they do not change a federated run; pretraining
     * records the keys that define its result in its checkpoints and checks them on resume. */
    {"pretrain", "corpus", SPRY_CT_STRING, OFF(pretrain.corpus), "data/build/gpt2-bpe-m8000/pretrain.h5", 0, 0, NULL,
     NOHASH, "a path to a pretraining corpus (.h5)",
     "Token streams (train, val) made by data/build_datasets.py; its vocab_size must equal model.vocab_size.",
     check_nonempty},
    {"pretrain", "output", SPRY_CT_STRING, OFF(pretrain.output), "base-model.h5", 0, 0, NULL, NOHASH, "a path (.h5)",
     "Base-model file written at the end (Hugging Face GPT-2 names; what model.base reads). Checkpoints go to the "
     "same path + `.ckpt`.",
     check_nonempty},
    KEY_INT("pretrain", "steps", pretrain.steps, "1000", 1, BIG, NOHASH,
            "Optimizer steps; the cosine schedule reaches min_lr at the last one."),
    KEY_INT("pretrain", "batch_size", pretrain.batch_size, "32", 1, 1000000, NOHASH,
            "Sequences per step, all ranks together (the result does not depend on the number of ranks)."),
    KEY_INT("pretrain", "micro_batch", pretrain.micro_batch, "8", 1, 1000000, NOHASH,
            "Sequences per gradient evaluation (divides batch_size); a step's micro-batches are dealt to the ranks."),
    KEY_INT("pretrain", "seq_len", pretrain.seq_len, "0", 0, 16384, NOHASH,
            "Tokens per training window (0 = model.n_ctx); a window of n tokens gives n - 1 next-token predictions."),
    KEY_DBL("pretrain", "lr", pretrain.lr, "1e-3", 0, 10, GT | NOHASH, "Peak learning rate (after warm-up)."),
    KEY_DBL("pretrain", "min_lr", pretrain.min_lr, "1e-4", 0, 10, NOHASH,
            "Learning rate at the last step (cosine decay from lr; at most lr)."),
    KEY_INT("pretrain", "warmup", pretrain.warmup, "100", 0, BIG, NOHASH,
            "Steps of linear warm-up from lr/warmup to lr (at most steps)."),
    KEY_DBL("pretrain", "weight_decay", pretrain.weight_decay, "0.1", 0, 10, NOHASH,
            "AdamW decoupled weight decay on the 2-d tensors (embeddings, projections); none on biases and "
            "LayerNorm gains."),
    KEY_DBL("pretrain", "beta1", pretrain.beta1, "0.9", 0, 1, LT | NOHASH, "AdamW first-moment decay."),
    KEY_DBL("pretrain", "beta2", pretrain.beta2, "0.95", 0, 1, LT | NOHASH, "AdamW second-moment decay."),
    KEY_DBL("pretrain", "clip", pretrain.clip, "1", 0, 1e6, NOHASH,
            "Clip the global gradient norm (all tensors together) to this (0 = no clipping)."),
    KEY_INT("pretrain", "val_every", pretrain.val_every, "100", 0, BIG, NOHASH,
            "Validation loss every this many steps and at the end (0 = at the end only)."),
    KEY_INT("pretrain", "val_windows", pretrain.val_windows, "256", 1, 10000000, NOHASH,
            "Fixed validation windows, evenly spaced over the val stream."),
    KEY_INT("pretrain", "checkpoint_every", pretrain.checkpoint_every, "200", 0, BIG, NOHASH,
            "Checkpoint (weights + AdamW state) every this many steps (0 = off)."),
    KEY_INT("pretrain", "stop_at", pretrain.stop_at, "0", 0, BIG, NOHASH,
            "Stop after this step with a checkpoint, e.g. to fit a job's time limit; continue with --resume "
            "(0 = run to steps)."),
    KEY_BOOL("pretrain", "resume", pretrain.resume, "false", NOHASH,
             "Continue from the checkpoint (output + `.ckpt`), bitwise as if never stopped (`--resume` sets it)."),
};

enum { NKEYS = (int)(sizeof(KEYS) / sizeof(KEYS[0])) };
_Static_assert(NKEYS <= SPRY_CONFIG_MAX_KEYS, "raise SPRY_CONFIG_MAX_KEYS");

int spry_config_key_count(void) { return NKEYS; }
const spry_config_key *spry_config_key_at(int i) { return i >= 0 && i < NKEYS ? &KEYS[i] : NULL; }

/* ---- presets: the preset keys' values per named method (THEORY 2-3; docs/configuration.md) ------------
 * Every preset but custom sets every key flagged P (a unit test checks). Values are text, parsed by set_value. */

typedef struct {
  const char *values; /* "key=value" items of [method], space-separated */
  const char *source;
} preset_row;

#define EPOCH_ADAMW "comm=epoch client_opt=adamw local_epochs=1 local_steps=0 client_lr=1e-3"
#define ITER_SGD "comm=iteration client_opt=sgd local_epochs=1 local_steps=1 client_lr=1e-3"

static const preset_row PRESETS[] = {
    [SPRY_PRESET_SPRY] = {"estimator=forward split=spry " EPOCH_ADAMW " server_opt=fedyogi server_lr=1e-2 K=1",
                          "Panchal et al. 2024 (THEORY 2): forward gradients on split blocks, per-epoch, AdamW "
                          "clients, FedYogi server (eta 1e-2, beta1 0.9, beta2 0.99, tau 1e-3), K = 1."},
    [SPRY_PRESET_FEDFGD] = {"estimator=forward split=none " EPOCH_ADAMW " server_opt=fedyogi server_lr=1e-2 K=1",
                            "THEORY 3: forward gradients over all trainable weights (no split); otherwise as spry."},
    [SPRY_PRESET_FEDAVG] = {"estimator=backprop split=none " EPOCH_ADAMW " server_opt=fedavg server_lr=1 K=1",
                            "McMahan et al. 2017: backprop local epochs, server averaging (rate 1). AdamW clients "
                            "as in spry (project choice), so that only the estimator, split and server differ."},
    [SPRY_PRESET_FEDYOGI] = {"estimator=backprop split=none " EPOCH_ADAMW " server_opt=fedyogi server_lr=1e-2 K=1",
                             "Reddi et al. 2021: backprop local epochs, FedYogi server with spry's settings."},
    [SPRY_PRESET_FEDSGD] = {"estimator=backprop split=none " ITER_SGD " server_opt=fedavg server_lr=1e-2 K=1",
                            "THEORY 3: one backprop gradient per client per round; the server steps with "
                            "server_lr (1e-2: project starting point)."},
    [SPRY_PRESET_FEDMEZO] = {"estimator=zeroth split=none comm=epoch client_opt=sgd local_epochs=1 local_steps=0 "
                             "client_lr=1e-4 server_opt=fedavg server_lr=1 K=1",
                             "Malladi et al. 2023 (MeZO) federated (THEORY 3): two-point zeroth order, local SGD "
                             "epochs, server averaging; client_lr 1e-4 is a project starting point."},
    [SPRY_PRESET_BAFFLE] = {"estimator=zeroth split=none " ITER_SGD " server_opt=fedavg server_lr=1e-3 K=20",
                            "BAFFLE (THEORY 3): K = 20 two-point perturbations per client, only loss differences "
                            "sent, the server rebuilds from the seeds and steps with server_lr (project choice)."},
    [SPRY_PRESET_FWDLLM] = {"estimator=fwdllm split=none " ITER_SGD " server_opt=fedavg server_lr=1e-3 K=2",
                            "Xu et al. 2023 (FwdLLM, THEORY 3): forward gradients with tangent selection and "
                            "variance control, per iteration; K = 2 perturbations to start (the variance test "
                            "needs two); fwdllm_threshold 0.15 follows FwdLLM's public run scripts."},
    [SPRY_PRESET_FEDAVG_SPLIT] = {"estimator=backprop split=spry " EPOCH_ADAMW
                                  " server_opt=fedyogi server_lr=1e-2 K=1",
                                  "THEORY 3: backprop on Spry's split. Differs from spry in the estimator only (so "
                                  "FedYogi server, not averaging): spry vs fedavg-split isolates forward mode, "
                                  "fedavg-split vs fedyogi isolates the split."},
    [SPRY_PRESET_CUSTOM] = {"", "No preset: the preset keys keep their table defaults (equal to spry's) unless set."},
};
_Static_assert(sizeof(PRESETS) / sizeof(PRESETS[0]) == SPRY_PRESET_CUSTOM + 1, "one row per preset");

/* ---- error collection --------------------------------------------------------------------------------- */

enum { ERR_MAX_SHOWN = 12 };

typedef struct {
  char *buf;
  size_t cap, used;
  int count;
  int first; /* spry_config_status of the first error */
} errbuf;

static errbuf errbuf_make(char *buf, size_t cap) {
  errbuf e = {buf, buf ? cap : 0, 0, 0, SPRY_CONFIG_OK};
  if (e.cap) e.buf[0] = '\0';
  return e;
}

static void errbuf_append(errbuf *e, const char *fmt, va_list ap) {
  if (e->used + 1 >= e->cap) return;
  int n = vsnprintf(e->buf + e->used, e->cap - e->used, fmt, ap);
  if (n < 0) return;
  e->used += (size_t)n;
  if (e->used >= e->cap) e->used = e->cap - 1;
}

static void errbuf_raw(errbuf *e, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  errbuf_append(e, fmt, ap);
  va_end(ap);
}

__attribute__((format(printf, 3, 4))) static void err_add(errbuf *e, int kind, const char *fmt, ...) {
  if (!e->first) e->first = kind;
  e->count++;
  if (e->count > ERR_MAX_SHOWN) {
    if (e->count == ERR_MAX_SHOWN + 1) errbuf_raw(e, "\n(further errors not shown)");
    return;
  }
  if (e->count > 1) errbuf_raw(e, "\n");
  va_list ap;
  va_start(ap, fmt);
  errbuf_append(e, fmt, ap);
  va_end(ap);
}

/* ---- growable text (printing, canonical text) --------------------------------------------------------- */

typedef struct {
  char *s;
  size_t len, cap;
  bool oom;
} strbuf;

__attribute__((format(printf, 2, 3))) static void sb_printf(strbuf *b, const char *fmt, ...) {
  if (b->oom) return;
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    size_t room = b->cap - b->len;
    int n = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? room : 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
      b->oom = true;
      return;
    }
    if (b->s && (size_t)n < room) {
      b->len += (size_t)n;
      return;
    }
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + (size_t)n + 1) cap *= 2;
    char *s = realloc(b->s, cap);
    if (!s) {
      b->oom = true;
      return;
    }
    b->s = s;
    b->cap = cap;
  }
}

/* Copy into a caller buffer with snprintf's return convention; frees the strbuf. */
static int sb_finish(strbuf *b, char *buf, size_t len) {
  int ret = -1;
  if (!b->oom) {
    if (len) {
      size_t n = b->len < len - 1 ? b->len : len - 1;
      if (n) memcpy(buf, b->s, n);
      buf[n] = '\0';
    }
    ret = (int)b->len;
  } else if (len) {
    buf[0] = '\0';
  }
  free(b->s);
  b->s = NULL;
  return ret;
}

/* ---- values: text <-> field --------------------------------------------------------------------------- */

static void *field_of(spry_config *c, const spry_config_key *k) { return (char *)c + k->offset; }
static const void *cfield_of(const spry_config *c, const spry_config_key *k) {
  return (const char *)c + k->offset;
}

/* Shortest decimal text that reads back as exactly v. */
static void fmt_double(double v, char *out, size_t len) {
  if (isinf(v)) {
    snprintf(out, len, v > 0 ? "inf" : "-inf");
    return;
  }
  if (v == floor(v) && fabs(v) < 1e15) { /* integral: plain digits read back exactly ("100", not "1e+02") */
    snprintf(out, len, "%.0f", v);
    return;
  }
  char text[32];
  for (int prec = 1; prec <= 17; prec++) {
    snprintf(text, sizeof text, "%.*g", prec, v);
    if (strtod(text, NULL) == v) break; /* %.17g always reads back exactly */
  }
  snprintf(out, len, "%s", text);
}

static void format_value(const spry_config *c, const spry_config_key *k, char *out, size_t len) {
  const void *f = cfield_of(c, k);
  switch (k->type) {
  case SPRY_CT_INT: snprintf(out, len, "%d", *(const int *)f); break;
  case SPRY_CT_UINT32: snprintf(out, len, "%" PRIu32, *(const uint32_t *)f); break;
  case SPRY_CT_DOUBLE:
  case SPRY_CT_DOUBLE_INF: fmt_double(*(const double *)f, out, len); break;
  case SPRY_CT_BOOL: snprintf(out, len, "%s", *(const bool *)f ? "true" : "false"); break;
  case SPRY_CT_ENUM: {
    int v = *(const int *)f, n = 0;
    while (k->choices[n]) n++;
    snprintf(out, len, "%s", v >= 0 && v < n ? k->choices[v] : "?");
    break;
  }
  case SPRY_CT_STRING: snprintf(out, len, "%s", (const char *)f); break;
  }
}

static const char *type_name(spry_config_type t) {
  switch (t) {
  case SPRY_CT_INT: return "int";
  case SPRY_CT_UINT32: return "uint32";
  case SPRY_CT_DOUBLE: return "double";
  case SPRY_CT_DOUBLE_INF: return "double-or-inf";
  case SPRY_CT_BOOL: return "bool";
  case SPRY_CT_ENUM: return "enum";
  case SPRY_CT_STRING: return "string";
  }
  return "?";
}

/* What a key accepts, in words; used by error messages and the documentation alike. */
static void describe_allowed(const spry_config_key *k, char *out, size_t len) {
  char lo[32], hi[32];
  switch (k->type) {
  case SPRY_CT_INT:
  case SPRY_CT_UINT32: snprintf(out, len, "%.0f .. %.0f", k->min, k->max); return;
  case SPRY_CT_DOUBLE:
  case SPRY_CT_DOUBLE_INF:
    fmt_double(k->min, lo, sizeof lo);
    fmt_double(k->max, hi, sizeof hi);
    if (isinf(k->max))
      snprintf(out, len, "x %s %s, or inf", (k->flags & SPRY_CK_MIN_EXCL) ? ">" : ">=", lo);
    else
      snprintf(out, len, "%s %s x %s %s", lo, (k->flags & SPRY_CK_MIN_EXCL) ? "<" : "<=",
               (k->flags & SPRY_CK_MAX_EXCL) ? "<" : "<=", hi);
    return;
  case SPRY_CT_BOOL: snprintf(out, len, "true, false"); return;
  case SPRY_CT_ENUM: {
    size_t used = 0;
    out[0] = '\0';
    for (int i = 0; k->choices[i] && used < len; i++) {
      int n = snprintf(out + used, len - used, "%s%s", i ? ", " : "", k->choices[i]);
      if (n < 0) break;
      used += (size_t)n;
    }
    return;
  }
  case SPRY_CT_STRING: snprintf(out, len, "%s", k->allowed); return;
  }
}

static bool in_range(const spry_config_key *k, double v) {
  bool lo_ok = (k->flags & SPRY_CK_MIN_EXCL) ? v > k->min : v >= k->min;
  bool hi_ok = (k->flags & SPRY_CK_MAX_EXCL) ? v < k->max : v <= k->max;
  return lo_ok && hi_ok;
}

static bool ieq(const char *a, const char *b) { return strcasecmp(a, b) == 0; }

/* Parse `text` for key ki and store it in c (origin recorded). `where` prefixes messages ("file:12: "). */
static bool set_value(spry_config *c, int ki, const char *text, int origin, const char *where, errbuf *eb) {
  const spry_config_key *k = &KEYS[ki];
  void *f = field_of(c, k);
  char allowed[256];
  describe_allowed(k, allowed, sizeof allowed);
  switch (k->type) {
  case SPRY_CT_INT:
  case SPRY_CT_UINT32: {
    const char *s = text;
    bool digits = true;
    if (*s == '+' || *s == '-') s++; /* a negative uint32 is reported as out of range */
    if (!*s) digits = false;
    for (; *s; s++)
      if (!isdigit((unsigned char)*s)) digits = false;
    if (!digits) {
      err_add(eb, SPRY_CONFIG_ERR_VALUE, "%s%s.%s = '%s' is not a whole number (allowed: integers %s)", where,
              k->section, k->key, text, allowed);
      return false;
    }
    errno = 0;
    long long v = strtoll(text, NULL, 10);
    if (errno == ERANGE || !in_range(k, (double)v)) {
      err_add(eb, SPRY_CONFIG_ERR_VALUE, "%s%s.%s = %s is out of range (allowed: %s)", where, k->section, k->key,
              text, allowed);
      return false;
    }
    if (k->type == SPRY_CT_INT)
      *(int *)f = (int)v;
    else
      *(uint32_t *)f = (uint32_t)v;
    break;
  }
  case SPRY_CT_DOUBLE:
  case SPRY_CT_DOUBLE_INF: {
    char *end = NULL;
    errno = 0;
    double v = *text ? strtod(text, &end) : 0.0;
    if (!*text || *end || isnan(v)) {
      err_add(eb, SPRY_CONFIG_ERR_VALUE, "%s%s.%s = '%s' is not a number (allowed: %s)", where, k->section,
              k->key, text, allowed);
      return false;
    }
    bool inf_written = isinf(v) && errno != ERANGE; /* "inf" itself, not an overflowing literal */
    if (errno == ERANGE || (isinf(v) && !(k->type == SPRY_CT_DOUBLE_INF && inf_written)) || !in_range(k, v)) {
      err_add(eb, SPRY_CONFIG_ERR_VALUE, "%s%s.%s = %s is out of range (allowed: %s)", where, k->section, k->key,
              text, allowed);
      return false;
    }
    *(double *)f = v;
    break;
  }
  case SPRY_CT_BOOL: {
    bool v;
    if (ieq(text, "true") || ieq(text, "yes") || ieq(text, "on") || strcmp(text, "1") == 0)
      v = true;
    else if (ieq(text, "false") || ieq(text, "no") || ieq(text, "off") || strcmp(text, "0") == 0)
      v = false;
    else {
      err_add(eb, SPRY_CONFIG_ERR_VALUE,
              "%s%s.%s = '%s' is not a boolean (allowed: true, false; also yes/no, on/off, 1/0)", where,
              k->section, k->key, text);
      return false;
    }
    *(bool *)f = v;
    break;
  }
  case SPRY_CT_ENUM: {
    int found = -1;
    for (int i = 0; k->choices[i]; i++)
      if (ieq(text, k->choices[i])) found = i;
    if (found < 0) {
      err_add(eb, SPRY_CONFIG_ERR_VALUE, "%s%s.%s = '%s' is not allowed (allowed: %s)", where, k->section, k->key,
              text, allowed);
      return false;
    }
    *(int *)f = found;
    break;
  }
  case SPRY_CT_STRING: {
    size_t n = strlen(text);
    const char *bad = NULL;
    if (n > SPRY_CONFIG_STR_MAX) bad = "is too long";
    for (size_t i = 0; !bad && i < n; i++) {
      if (iscntrl((unsigned char)text[i])) bad = "contains a control character";
      if (text[i] == ';') bad = "contains ';' (the INI comment character)";
    }
    if (!bad && n && (isspace((unsigned char)text[0]) || isspace((unsigned char)text[n - 1])))
      bad = "has leading or trailing blanks";
    char value[SPRY_CONFIG_STR_MAX + 1], why[160] = "";
    if (!bad) {
      memcpy(value, text, n + 1);
      if (k->check && k->check(value, why, sizeof why)) {
        err_add(eb, SPRY_CONFIG_ERR_VALUE, "%s%s.%s = '%s' %s", where, k->section, k->key, text, why);
        return false;
      }
    }
    if (bad) {
      if (n > SPRY_CONFIG_STR_MAX)
        err_add(eb, SPRY_CONFIG_ERR_VALUE, "%s%s.%s = '%.40s...' %s: %zu characters (allowed: at most %d; %s)",
                where, k->section, k->key, text, bad, n, SPRY_CONFIG_STR_MAX, allowed);
      else
        err_add(eb, SPRY_CONFIG_ERR_VALUE, "%s%s.%s = '%s' %s (allowed: %s)", where, k->section, k->key, text,
                bad, allowed);
      return false;
    }
    memset(f, 0, SPRY_CONFIG_STR_MAX + 1); /* whole array: equal configs are equal bytes */
    memcpy(f, value, strlen(value));
    break;
  }
  }
  c->origin[ki] = (unsigned char)origin;
  return true;
}

/* ---- names: sections, keys, suggestions --------------------------------------------------------------- */

static bool section_exists(const char *section) {
  for (int i = 0; SECTIONS[i]; i++)
    if (strcmp(SECTIONS[i], section) == 0) return true;
  return false;
}

static int find_key(const char *section, const char *key) {
  for (int i = 0; i < NKEYS; i++)
    if (strcmp(KEYS[i].section, section) == 0 && strcmp(KEYS[i].key, key) == 0) return i;
  return -1;
}

/* Levenshtein distance of short names (longer names compare as far apart). */
static int edit_distance(const char *a, const char *b) {
  enum { MAXN = 40 };
  size_t na = strlen(a), nb = strlen(b);
  if (na >= MAXN || nb >= MAXN) return 99;
  int row[MAXN + 1];
  for (size_t j = 0; j <= nb; j++) row[j] = (int)j;
  for (size_t i = 1; i <= na; i++) {
    int diag = row[0];
    row[0] = (int)i;
    for (size_t j = 1; j <= nb; j++) {
      int up = row[j];
      int best = diag + (a[i - 1] != b[j - 1]);
      if (up + 1 < best) best = up + 1;
      if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
      row[j] = best;
      diag = up;
    }
  }
  return row[nb];
}

/* Report an unknown section or key, with the valid names and a suggestion. */
static void report_unknown(errbuf *eb, const char *where, const char *section, const char *key, const char *value) {
  if (!key) key = "";
  char list[512] = "", hint[128] = "";
  size_t used = 0;
  if (!section_exists(section)) {
    int best = 3;
    for (int i = 0; SECTIONS[i]; i++) {
      used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", SECTIONS[i]);
      int d = edit_distance(section, SECTIONS[i]);
      if (d < best) {
        best = d;
        snprintf(hint, sizeof hint, " (did you mean [%s]?)", SECTIONS[i]);
      }
    }
    if (!*section)
      err_add(eb, SPRY_CONFIG_ERR_UNKNOWN, "%skey '%s' = '%s' comes before any [section]; valid sections: %s", where,
              key, value, list);
    else
      err_add(eb, SPRY_CONFIG_ERR_UNKNOWN, "%sunknown section [%s]%s at key %s.%s = '%s'; valid sections: %s", where,
              section, hint, section, key, value, list);
    return;
  }
  /* the same name in another section is the likelier intent than a near miss in this one */
  for (int i = 0; i < NKEYS && !hint[0]; i++)
    if (strcmp(KEYS[i].key, key) == 0)
      snprintf(hint, sizeof hint, " ('%s' is a key of [%s])", key, KEYS[i].section);
  int best = strlen(key) > 3 ? 3 : 2;
  bool first = true;
  for (int i = 0; i < NKEYS; i++) {
    if (strcmp(KEYS[i].section, section) != 0) continue;
    used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", first ? "" : ", ", KEYS[i].key);
    if (used >= sizeof list) used = sizeof list - 1;
    first = false;
    int d = edit_distance(key, KEYS[i].key);
    if (d < best && !strstr(hint, "is a key of")) {
      best = d;
      snprintf(hint, sizeof hint, " (did you mean %s.%s?)", section, KEYS[i].key);
    }
  }
  err_add(eb, SPRY_CONFIG_ERR_UNKNOWN, "%sunknown key %s.%s = '%s'%s; valid keys of [%s]: %s", where, section, key,
          value, hint, section, list);
}

/* ---- reading INI text with inih ----------------------------------------------------------------------- */

typedef struct {
  spry_config *cfg;
  errbuf *eb;
  const char *name; /* file name for messages */
  const char *text;
  size_t len, pos;
  int line;              /* number of the line last handed to inih (inih counts the same way) */
  int long_line;         /* first line too long for inih's buffer (0 = none) */
  int long_line_limit;   /* the limit it broke */
  int key_line[NKEYS];   /* line where each key was set in this text (0 = not set) */
  int first_error_line;  /* line of the first error the handler reported (0 = none) */
  int bad_line;          /* first line that is not blank, a comment, [section] or key = value (0 = none) */
} ini_reader_ctx;

/* Strict line check, before inih sees the line (inih ignores text after a section's ']' and never sees the
 * lines of a file with CR-only line ends): the comment-free, trimmed line s[0..n) must be empty, "[name]" alone,
 * or "key = value" with a key. Returns NULL if it is, else what is wrong. */
static const char *line_problem(const char *s, size_t n) {
  if (n == 0) return NULL;
  if (s[0] == '[') {
    const char *close = memchr(s, ']', n);
    if (!close) return "a section header needs its closing ']'";
    if ((size_t)(close - s) != n - 1) return "text after a section header's ']' (put each key = value on its own line)";
    size_t b = 1, e = n - 1;
    while (b < e && (s[b] == ' ' || s[b] == '\t')) b++;
    if (b == e) return "empty section name '[]' (expected [section], e.g. [run])";
    return NULL;
  }
  const char *eq = memchr(s, '=', n), *colon = memchr(s, ':', n); /* inih takes either as the separator */
  if (!eq || (colon && colon < eq)) eq = colon;
  if (!eq) return "not a [section], key = value, or ; comment";
  size_t k = (size_t)(eq - s);
  while (k > 0 && (s[k - 1] == ' ' || s[k - 1] == '\t')) k--;
  if (k == 0) return "no key before the '=' (or ':')";
  for (size_t i = 0; i < k; i++)
    if (s[i] == '[' || s[i] == ']') return "a key name cannot contain '[' or ']' (a section header and a key on one line?)";
  return NULL;
}

/* inih's fgets-style reader, one line per call. It drops comments and leading blanks before inih sees the line,
 * so inih's multi-line continuation never applies and comment length is unlimited; a UTF-8 BOM is skipped.
 * Lines end at "\n", "\r\n" or a lone "\r" (old Mac files). A line that fails line_problem() is reported here
 * with its file and number, and inih gets an empty line instead. */
static char *read_line(char *str, int num, void *stream) {
  ini_reader_ctx *r = stream;
  if (r->pos >= r->len) return NULL;
  const char *s = r->text + r->pos;
  size_t n = 0;
  while (r->pos + n < r->len && s[n] != '\n' && s[n] != '\r') n++;
  size_t eol = r->pos + n < r->len ? (s[n] == '\r' && r->pos + n + 1 < r->len && s[n + 1] == '\n' ? 2 : 1) : 0;
  r->pos += n + eol;
  r->line++;
  size_t b = 0, e = n;
  if (r->line == 1 && e >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) b = 3;
  while (b < e && (s[b] == ' ' || s[b] == '\t')) b++;
  if (b < e && (s[b] == ';' || s[b] == '#')) e = b;
  for (size_t i = b + 1; i < e; i++)
    if (s[i] == ';' && (s[i - 1] == ' ' || s[i - 1] == '\t')) {
      e = i;
      break;
    }
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t')) e--;
  size_t m = e - b;
  const char *problem = line_problem(s + b, m);
  if (problem) {
    err_add(r->eb, SPRY_CONFIG_ERR_SYNTAX, "%s:%d: syntax error in line %d: '%.*s': %s", r->name, r->line, r->line,
            (int)(m > 120 ? 120 : m), s + b, problem);
    if (!r->bad_line) r->bad_line = r->line;
    m = 0;
  }
  if (m + 2 > (size_t)num) { /* would be split by inih: refuse the line, hand inih an empty one */
    if (!r->long_line) {
      r->long_line = r->line;
      r->long_line_limit = num - 2;
    }
    m = 0;
  }
  memcpy(str, s + b, m);
  str[m] = '\n';
  str[m + 1] = '\0';
  return str;
}

static int on_ini_value(void *user, const char *section, const char *name, const char *value) {
  ini_reader_ctx *r = user;
  /* inih built with "call handler on new section" passes name NULL; with "allow no value", value NULL */
  if (!name) return 1;
  if (!value) value = "";
  char where[320];
  snprintf(where, sizeof where, "%s:%d: ", r->name, r->line);
  int ki = find_key(section, name);
  int errors_before = r->eb->count;
  if (ki < 0) {
    report_unknown(r->eb, where, section, name, value);
  } else if (r->key_line[ki]) {
    err_add(r->eb, SPRY_CONFIG_ERR_DUPLICATE, "%sduplicate key %s.%s = '%s' (already set at line %d)", where,
            section, name, value, r->key_line[ki]);
  } else {
    r->key_line[ki] = r->line;
    set_value(r->cfg, ki, value, SPRY_ORIGIN_FILE, where, r->eb);
  }
  if (r->eb->count > errors_before && !r->first_error_line) r->first_error_line = r->line;
  return 1; /* errors are ours to report; inih's return then means a syntax error only */
}

/* The text of line `lineno` (1-based), trimmed, for syntax messages. */
static void line_text(const char *text, size_t len, int lineno, char *out, size_t outlen) {
  size_t pos = 0;
  for (int l = 1; l < lineno && pos < len; pos++)
    if (text[pos] == '\n' || (text[pos] == '\r' && !(pos + 1 < len && text[pos + 1] == '\n'))) l++;
  size_t n = 0;
  while (pos + n < len && text[pos + n] != '\n' && text[pos + n] != '\r') n++;
  while (n && (text[pos] == ' ' || text[pos] == '\t')) pos++, n--;
  snprintf(out, outlen, "%.*s", (int)(n > 120 ? 120 : n), text + pos);
}

static void parse_ini(spry_config *c, const char *text, size_t len, const char *name, errbuf *eb) {
  ini_reader_ctx r = {.cfg = c, .eb = eb, .name = name, .text = text, .len = len};
  bool clean_before = eb->count == 0;
  int rc = ini_parse_stream(read_line, &r, on_ini_value, &r);
  /* the status names the error of the earliest line: a syntax error often explains what follows it */
  int first_bad = rc > 0 ? rc : 0;
  if (r.long_line && (!first_bad || r.long_line < first_bad)) first_bad = r.long_line;
  if (r.bad_line && (!first_bad || r.bad_line < first_bad)) first_bad = r.bad_line;
  bool syntax_first = first_bad && (!r.first_error_line || first_bad <= r.first_error_line) && clean_before;
  if (rc == -2) {
    err_add(eb, SPRY_CONFIG_ERR_FILE, "%s: out of memory while parsing", name);
  } else if (rc > 0) {
    char shown[160];
    line_text(text, len, rc, shown, sizeof shown);
    err_add(eb, SPRY_CONFIG_ERR_SYNTAX,
            "%s:%d: syntax error in line %d: '%s' (expected [section], key = value, or a ; comment)", name, rc, rc,
            shown);
  }
  if (r.long_line) {
    char shown[160];
    line_text(text, len, r.long_line, shown, sizeof shown);
    err_add(eb, SPRY_CONFIG_ERR_SYNTAX, "%s:%d: line %d is longer than %d characters: '%.60s...'", name,
            r.long_line, r.long_line, r.long_line_limit, shown);
  }
  if (syntax_first) eb->first = SPRY_CONFIG_ERR_SYNTAX;
}

enum { FILE_MAX_BYTES = 1 << 20 };

static int read_file(const char *path, char **text, size_t *len, errbuf *eb) {
  *text = NULL;
  *len = 0;
  FILE *f = fopen(path, "rb");
  if (!f) {
    err_add(eb, SPRY_CONFIG_ERR_FILE, "cannot open configuration file '%s': %s", path, strerror(errno));
    return -1;
  }
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap);
  int status = 0;
  while (buf) {
    if (n + 1 >= cap) {
      char *grown = cap < FILE_MAX_BYTES ? realloc(buf, cap * 2) : NULL;
      if (!grown) {
        err_add(eb, SPRY_CONFIG_ERR_FILE, "configuration file '%s' is larger than %d bytes", path,
                FILE_MAX_BYTES);
        status = -1;
        break;
      }
      buf = grown;
      cap *= 2;
    }
    size_t got = fread(buf + n, 1, cap - 1 - n, f);
    n += got;
    if (got == 0) {
      if (ferror(f)) {
        err_add(eb, SPRY_CONFIG_ERR_FILE, "cannot read configuration file '%s': %s", path, strerror(errno));
        status = -1;
      }
      break;
    }
  }
  fclose(f);
  if (!buf) {
    err_add(eb, SPRY_CONFIG_ERR_FILE, "configuration file '%s': out of memory", path);
    return -1;
  }
  if (!status && memchr(buf, '\0', n)) {
    err_add(eb, SPRY_CONFIG_ERR_FILE, "configuration file '%s' contains a NUL byte: not a text file", path);
    status = -1;
  }
  if (status) {
    free(buf);
    return -1;
  }
  buf[n] = '\0';
  *text = buf;
  *len = n;
  return 0;
}

/* ---- overrides: "section.key=value" ------------------------------------------------------------------- */

static void trim_copy(char *out, size_t outlen, const char *s, size_t n) {
  while (n && isspace((unsigned char)*s)) s++, n--;
  while (n && isspace((unsigned char)s[n - 1])) n--;
  snprintf(out, outlen, "%.*s", (int)n, s);
}

static void apply_override(spry_config *c, const char *ov, errbuf *eb) {
  const char *eq = strchr(ov, '=');
  const char *dot = memchr(ov, '.', eq ? (size_t)(eq - ov) : strlen(ov));
  if (!eq || !dot) {
    err_add(eb, SPRY_CONFIG_ERR_SYNTAX, "--set '%s': expected section.key=value (e.g. fl.alpha=0.5)", ov);
    return;
  }
  char section[64], key[64], value[1024];
  trim_copy(section, sizeof section, ov, (size_t)(dot - ov));
  trim_copy(key, sizeof key, dot + 1, (size_t)(eq - dot - 1));
  trim_copy(value, sizeof value, eq + 1, strlen(eq + 1));
  int ki = find_key(section, key);
  if (ki < 0) {
    report_unknown(eb, "--set: ", section, key, value);
    return;
  }
  set_value(c, ki, value, SPRY_ORIGIN_OVERRIDE, "--set: ", eb);
}

/* ---- presets, derived fields --------------------------------------------------------------------------- */

/* Give every preset key still at its default the preset's value. */
static void apply_preset(spry_config *c, errbuf *eb) {
  int p = (int)c->method.preset;
  const char *s = PRESETS[p].values;
  char where[64];
  snprintf(where, sizeof where, "preset %s: ", PRESET_NAMES[p]);
  while (*s) {
    while (*s == ' ') s++;
    const char *end = s;
    while (*end && *end != ' ') end++;
    const char *eq = memchr(s, '=', (size_t)(end - s));
    if (end > s) {
      char key[64], value[64];
      if (!eq) {
        err_add(eb, SPRY_CONFIG_ERR_SYNTAX, "%sbad item '%.*s' in the preset table", where, (int)(end - s), s);
        return;
      }
      snprintf(key, sizeof key, "%.*s", (int)(eq - s), s);
      snprintf(value, sizeof value, "%.*s", (int)(end - eq - 1), eq + 1);
      int ki = find_key("method", key);
      if (ki < 0 || !(KEYS[ki].flags & SPRY_CK_PRESET)) {
        err_add(eb, SPRY_CONFIG_ERR_UNKNOWN, "%spreset table sets method.%s, which is not a preset key", where, key);
      } else if (c->origin[ki] == SPRY_ORIGIN_DEFAULT) {
        set_value(c, ki, value, SPRY_ORIGIN_PRESET, where, eb);
      }
    }
    s = end;
  }
}

static void derive(spry_config *c) {
  char why[160];
  if (targets_mask(c->lora.targets, &c->lora.target_mask, why, sizeof why)) c->lora.target_mask = 0;
}

/* ---- cross-checks: rules between keys --------------------------------------------------------------- */

typedef struct {
  const char *rule; /* for the documentation */
  void (*check)(const spry_config *c, errbuf *eb);
} cross_check;

#define XERR(...) err_add(eb, SPRY_CONFIG_ERR_CROSS, __VA_ARGS__)

static void xc_clients(const spry_config *c, errbuf *eb) {
  if (c->fl.clients_per_round > c->fl.clients)
    XERR("fl.clients_per_round = %d exceeds fl.clients = %d (allowed: 1 .. fl.clients)", c->fl.clients_per_round,
         c->fl.clients);
}
static void xc_heads(const spry_config *c, errbuf *eb) {
  if (c->model.n_embd % c->model.n_head)
    XERR("model.n_embd = %d is not a multiple of model.n_head = %d (each head needs n_embd / n_head columns)",
         c->model.n_embd, c->model.n_head);
}
static void xc_rank(const spry_config *c, errbuf *eb) {
  if (c->lora.rank > c->model.n_embd)
    XERR("lora.rank = %d exceeds model.n_embd = %d (allowed: 1 .. model.n_embd)", c->lora.rank, c->model.n_embd);
}
static void xc_seq_len(const spry_config *c, errbuf *eb) {
  if (c->data.seq_len > c->model.n_ctx)
    XERR("data.seq_len = %d exceeds model.n_ctx = %d (allowed: 1 .. model.n_ctx)", c->data.seq_len, c->model.n_ctx);
}
static void xc_max_len(const spry_config *c, errbuf *eb) {
  if (c->data.max_len > c->model.n_ctx)
    XERR("data.max_len = %d exceeds model.n_ctx = %d (allowed: 0 = n_ctx, or 1 .. model.n_ctx)", c->data.max_len,
         c->model.n_ctx);
}
static void xc_lm_head(const spry_config *c, errbuf *eb) {
  if (c->model.task == SPRY_TASK_LM && c->lora.head)
    XERR("model.task = lm ties the output head to the frozen token embedding, so lora.head = true is not "
         "allowed (set lora.head = false)");
}
static void xc_trainable(const spry_config *c, errbuf *eb) {
  if (!c->lora.targets[0] && !c->lora.head)
    XERR("lora.targets = '' and lora.head = false leave nothing to train (list targets or set lora.head = true)");
}
static void xc_iteration(const spry_config *c, errbuf *eb) {
  if (c->method.comm == SPRY_COMM_ITERATION && c->method.local_steps != 1)
    XERR("method.comm = iteration takes one client step per round, so method.local_steps = %d is not allowed "
         "(set method.local_steps = 1)",
         c->method.local_steps);
}
static void xc_steps_epochs(const spry_config *c, errbuf *eb) {
  if (c->method.local_steps > 0 && c->method.local_epochs != 1)
    XERR("method.local_steps = %d replaces epochs, so method.local_epochs = %d is not allowed (set one of them: "
         "local_epochs = 1, or local_steps = 0)",
         c->method.local_steps, c->method.local_epochs);
}
static void xc_backprop_k(const spry_config *c, errbuf *eb) {
  if (c->method.estimator == SPRY_EST_BACKPROP && c->method.K != 1)
    XERR("method.K = %d has no meaning with method.estimator = backprop (exact gradients take no perturbations; "
         "set method.K = 1)",
         c->method.K);
}
static void xc_fwdllm(const spry_config *c, errbuf *eb) {
  if (c->method.estimator != SPRY_EST_FWDLLM) return;
  if (c->method.K < 2)
    XERR("method.K = %d is too small for method.estimator = fwdllm (its variance test needs at least 2 "
         "perturbations)",
         c->method.K);
  else if (c->method.fwdllm_max_K < c->method.K)
    XERR("method.fwdllm_max_K = %d is below method.K = %d (allowed: method.K .. 65536)", c->method.fwdllm_max_K,
         c->method.K);
}
static void xc_partition(const spry_config *c, errbuf *eb) {
  if (c->fl.partition == SPRY_FL_PARTITION_SAMPLED && c->fl.examples_per_client < 2)
    XERR("fl.partition = sampled needs fl.examples_per_client >= 2 (each client's train + local test examples), "
         "got %d",
         c->fl.examples_per_client);
  if (c->fl.partition == SPRY_FL_PARTITION_HOMOGENEOUS && c->fl.examples_per_client == 1)
    XERR("fl.partition = homogeneous with fl.examples_per_client = 1 is not allowed (allowed: 0 = the whole train "
         "pool, or >= 2)");
  if (c->fl.partition == SPRY_FL_PARTITION_HOMOGENEOUS && c->fl.quantity_skew != SPRY_SKEW_NONE)
    XERR("fl.partition = homogeneous gives every client the same examples, so fl.quantity_skew = %s is not "
         "allowed (set fl.quantity_skew = none)",
         SKEW_NAMES[c->fl.quantity_skew]);
  if (c->fl.partition == SPRY_FL_PARTITION_POOL && c->fl.examples_per_client == 1)
    XERR("fl.partition = pool with fl.examples_per_client = 1 is not allowed (allowed: 0 = the whole pool, or >= 2)");
  if ((double)c->fl.clients * c->fl.examples_per_client > 2147483647.0)
    XERR("fl.clients = %d x fl.examples_per_client = %d exceeds 2^31-1 examples in all", c->fl.clients,
         c->fl.examples_per_client);
}
static void xc_synthetic_size(const spry_config *c, errbuf *eb) {
  if (strcmp(c->data.dataset, "synthetic") != 0) return;
  if ((int)(c->fl.test_fraction * c->data.n_examples) < 1) {
    char tf[32];
    fmt_double(c->fl.test_fraction, tf, sizeof tf);
    XERR("fl.test_fraction = %s of data.n_examples = %d holds out no example: accuracy could not be measured (raise "
         "fl.test_fraction or data.n_examples)", tf, c->data.n_examples);
  }
  if (c->fl.partition != SPRY_FL_PARTITION_POOL) return; /* sampled / homogeneous clients share the pool */
  double train = floor((double)c->data.n_examples * (1.0 - c->fl.test_fraction));
  if (train < (double)c->fl.clients) {
    char tf[32];
    fmt_double(c->fl.test_fraction, tf, sizeof tf);
    XERR("data.n_examples = %d leaves %.0f training examples (fl.test_fraction = %s), fewer than fl.clients = %d: "
         "every client needs at least one",
         c->data.n_examples, train, tf, c->fl.clients);
  }
}

static void xc_pretrain_batch(const spry_config *c, errbuf *eb) {
  if (c->pretrain.batch_size % c->pretrain.micro_batch)
    XERR("pretrain.batch_size = %d is not a multiple of pretrain.micro_batch = %d (a step is whole micro-batches)",
         c->pretrain.batch_size, c->pretrain.micro_batch);
}
static void xc_pretrain_seq_len(const spry_config *c, errbuf *eb) {
  if (c->pretrain.seq_len > c->model.n_ctx)
    XERR("pretrain.seq_len = %d exceeds model.n_ctx = %d (allowed: 0 = n_ctx, or 2 .. model.n_ctx)",
         c->pretrain.seq_len, c->model.n_ctx);
  else if (c->pretrain.seq_len == 1)
    XERR("pretrain.seq_len = 1 gives no next-token prediction (allowed: 0 = n_ctx, or 2 .. model.n_ctx)");
}
static void xc_pretrain_schedule(const spry_config *c, errbuf *eb) {
  char lo[32], hi[32];
  if (c->pretrain.min_lr > c->pretrain.lr) {
    fmt_double(c->pretrain.min_lr, lo, sizeof lo);
    fmt_double(c->pretrain.lr, hi, sizeof hi);
    XERR("pretrain.min_lr = %s exceeds pretrain.lr = %s (the schedule decays from lr to min_lr)", lo, hi);
  }
  if (c->pretrain.warmup > c->pretrain.steps)
    XERR("pretrain.warmup = %d exceeds pretrain.steps = %d (allowed: 0 .. steps)", c->pretrain.warmup,
         c->pretrain.steps);
  if (c->pretrain.stop_at > c->pretrain.steps)
    XERR("pretrain.stop_at = %d exceeds pretrain.steps = %d (allowed: 0 = run to the end, or 1 .. steps)",
         c->pretrain.stop_at, c->pretrain.steps);
}

static const cross_check CROSS_CHECKS[] = {
    {"`fl.clients_per_round` <= `fl.clients`.", xc_clients},
    {"`model.n_embd` is a multiple of `model.n_head`.", xc_heads},
    {"`lora.rank` <= `model.n_embd` (every adapted projection has n_embd on one side).", xc_rank},
    {"`data.seq_len` <= `model.n_ctx`.", xc_seq_len},
    {"`data.max_len` <= `model.n_ctx`.", xc_max_len},
    {"`model.task = lm` needs `lora.head = false`: the LM head is tied to the frozen token embedding.", xc_lm_head},
    {"Something is trainable: `lora.targets` is not empty or `lora.head = true`.", xc_trainable},
    {"`method.comm = iteration` needs `method.local_steps = 1` (one client step per round).", xc_iteration},
    {"`method.local_steps > 0` needs `method.local_epochs = 1` (steps replace epochs).", xc_steps_epochs},
    {"`method.estimator = backprop` needs `method.K = 1` (exact gradients take no perturbations).", xc_backprop_k},
    {"`method.estimator = fwdllm` needs `method.K >= 2` (its variance test) and `method.fwdllm_max_K >= method.K`.",
     xc_fwdllm},
    {"`fl.partition = sampled` needs `fl.examples_per_client >= 2`; `homogeneous` needs `fl.quantity_skew = none` "
     "and `fl.examples_per_client` 0 or >= 2; `pool` takes 0 or >= 2; `fl.clients * fl.examples_per_client` < "
     "2^31.",
     xc_partition},
    {"`data.dataset = synthetic`: floor(`fl.test_fraction` * `data.n_examples`) >= 1 (a held-out example to measure "
     "accuracy on); with `fl.partition = pool` also floor(`data.n_examples` * (1 - `fl.test_fraction`)) >= "
     "`fl.clients` (each client gets at least one training example).",
     xc_synthetic_size},
    {"`pretrain.batch_size` is a multiple of `pretrain.micro_batch`.", xc_pretrain_batch},
    {"`pretrain.seq_len` is 0 (= `model.n_ctx`) or in 2 .. `model.n_ctx`.", xc_pretrain_seq_len},
    {"`pretrain.min_lr` <= `pretrain.lr`; `pretrain.warmup` <= `pretrain.steps`; `pretrain.stop_at` <= "
     "`pretrain.steps`.",
     xc_pretrain_schedule},
};

/* ---- loading --------------------------------------------------------------------------------------------- */

static void set_defaults(spry_config *c, errbuf *eb) {
  memset(c, 0, sizeof *c);
  for (int i = 0; i < NKEYS; i++) set_value(c, i, KEYS[i].def, SPRY_ORIGIN_DEFAULT, "table default: ", eb);
}

/* Defaults, then text (may be NULL), then overrides, then the preset, derived fields and cross-checks. */
static int resolve(spry_config *out, const char *text, size_t len, const char *name, const char *const *overrides,
                   int n_overrides, errbuf *eb) {
  spry_config c;
  set_defaults(&c, eb);
  if (text) parse_ini(&c, text, len, name, eb);
  for (int i = 0; i < n_overrides; i++) {
    if (!overrides[i]) {
      err_add(eb, SPRY_CONFIG_ERR_SYNTAX, "--set: override %d is NULL", i);
      continue;
    }
    apply_override(&c, overrides[i], eb);
  }
  if (!eb->count) {
    apply_preset(&c, eb);
    derive(&c);
  }
  if (!eb->count) /* rules between keys are only meaningful once every key is valid */
    for (size_t i = 0; i < sizeof CROSS_CHECKS / sizeof CROSS_CHECKS[0]; i++) CROSS_CHECKS[i].check(&c, eb);
  if (eb->count) return eb->first;
  memcpy(out, &c, sizeof c);
  return SPRY_CONFIG_OK;
}

void spry_config_defaults(spry_config *cfg) {
  char err[SPRY_CONFIG_ERRLEN];
  errbuf eb = errbuf_make(err, sizeof err);
  int st = resolve(cfg, NULL, 0, "defaults", NULL, 0, &eb);
  SPRY_CHECK(st == SPRY_CONFIG_OK, "the configuration table's defaults are invalid: %s", err);
}

int spry_config_load(spry_config *cfg, const char *path, const char *const *overrides, int n_overrides, char *err,
                     size_t errlen) {
  errbuf eb = errbuf_make(err, errlen);
  char *text = NULL;
  size_t len = 0;
  if (path && read_file(path, &text, &len, &eb)) return eb.first;
  int st = resolve(cfg, text, len, path, overrides, n_overrides, &eb);
  free(text);
  return st;
}

int spry_config_parse(spry_config *cfg, const char *text, const char *name, const char *const *overrides,
                      int n_overrides, char *err, size_t errlen) {
  errbuf eb = errbuf_make(err, errlen);
  if (!text) text = "";
  return resolve(cfg, text, strlen(text), name ? name : "<text>", overrides, n_overrides, &eb);
}

/* ---- printing, canonical text, hash, diff ------------------------------------------------------------- */

static void origin_text(const spry_config *c, int ki, char *out, size_t len) {
  switch (c->origin[ki]) {
  case SPRY_ORIGIN_PRESET: snprintf(out, len, "preset %s", PRESET_NAMES[c->method.preset]); break;
  case SPRY_ORIGIN_FILE: snprintf(out, len, "file"); break;
  case SPRY_ORIGIN_OVERRIDE: snprintf(out, len, "--set"); break;
  default: snprintf(out, len, "default"); break;
  }
}

static void build_canonical(const spry_config *c, strbuf *b) {
  sb_printf(b, "spry-config v1\n");
  char v[SPRY_CONFIG_STR_MAX + 32], dv[SPRY_CONFIG_STR_MAX + 32];
  for (int i = 0; i < NKEYS; i++) {
    if (KEYS[i].flags & SPRY_CK_NOHASH) continue;
    format_value(c, &KEYS[i], v, sizeof v);
    if (KEYS[i].flags & SPRY_CK_HASH_SET) { /* at its default, the key is absent from the canonical text */
      spry_config d = *c;
      char err[SPRY_CONFIG_ERRLEN];
      errbuf eb = errbuf_make(err, sizeof err);
      SPRY_CHECK(set_value(&d, i, KEYS[i].def, SPRY_ORIGIN_DEFAULT, "default", &eb),
                 "internal: default of %s.%s: %s", KEYS[i].section, KEYS[i].key, err);
      format_value(&d, &KEYS[i], dv, sizeof dv);
      if (strcmp(v, dv) == 0) continue;
    }
    sb_printf(b, "%s.%s=%s\n", KEYS[i].section, KEYS[i].key, v);
  }
}

static uint64_t fnv1a64(const char *s, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; i++) {
    h ^= (unsigned char)s[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

uint64_t spry_config_hash(const spry_config *cfg) {
  strbuf b = {0};
  build_canonical(cfg, &b);
  SPRY_CHECK(!b.oom, "out of memory hashing the configuration");
  uint64_t h = fnv1a64(b.s, b.len);
  free(b.s);
  return h;
}

int spry_config_canonical(const spry_config *cfg, char *buf, size_t len) {
  strbuf b = {0};
  build_canonical(cfg, &b);
  return sb_finish(&b, buf, len);
}

static void build_ini(const spry_config *c, strbuf *b) {
  int keyw = 0;
  for (int i = 0; i < NKEYS; i++)
    if ((int)strlen(KEYS[i].key) > keyw) keyw = (int)strlen(KEYS[i].key);
  sb_printf(b, "# spry configuration, fully resolved; hash %016" PRIx64 "\n", spry_config_hash(c));
  sb_printf(b, "# each value's origin: default | preset <name> | file | --set\n");
  const char *section = "";
  char v[SPRY_CONFIG_STR_MAX + 32], o[64];
  for (int i = 0; i < NKEYS; i++) {
    if (strcmp(section, KEYS[i].section) != 0) {
      section = KEYS[i].section;
      sb_printf(b, "\n[%s]\n", section);
    }
    format_value(c, &KEYS[i], v, sizeof v);
    origin_text(c, i, o, sizeof o);
    sb_printf(b, "%-*s = %-12s ; %s\n", keyw, KEYS[i].key, v, o);
  }
}

int spry_config_to_ini(const spry_config *cfg, char *buf, size_t len) {
  strbuf b = {0};
  build_ini(cfg, &b);
  return sb_finish(&b, buf, len);
}

void spry_config_print(FILE *f, const spry_config *cfg) {
  strbuf b = {0};
  build_ini(cfg, &b);
  if (!b.oom) fputs(b.s, f);
  free(b.s);
}

int spry_config_diff(const spry_config *a, const spry_config *b, bool result_only, char *out, size_t outlen) {
  errbuf list = errbuf_make(out, outlen); /* just a bounded appender here */
  int count = 0;
  char va[SPRY_CONFIG_STR_MAX + 32], vb[SPRY_CONFIG_STR_MAX + 32];
  for (int i = 0; i < NKEYS; i++) {
    if (result_only && (KEYS[i].flags & SPRY_CK_NOHASH)) continue;
    format_value(a, &KEYS[i], va, sizeof va);
    format_value(b, &KEYS[i], vb, sizeof vb);
    if (strcmp(va, vb) == 0) continue;
    errbuf_raw(&list, "%s%s.%s: %s -> %s", count ? "; " : "", KEYS[i].section, KEYS[i].key, va, vb);
    count++;
  }
  return count;
}

static int find_dotted(const char *name) {
  const char *dot = name ? strchr(name, '.') : NULL;
  if (!dot) return -1;
  char section[64];
  snprintf(section, sizeof section, "%.*s", (int)(dot - name), name);
  return find_key(section, dot + 1);
}

int spry_config_get(const spry_config *cfg, const char *section_dot_key, char *buf, size_t len) {
  int ki = find_dotted(section_dot_key);
  if (ki < 0) {
    if (len) buf[0] = '\0';
    return -1;
  }
  format_value(cfg, &KEYS[ki], buf, len);
  return 0;
}

int spry_config_origin_of(const spry_config *cfg, const char *section_dot_key) {
  int ki = find_dotted(section_dot_key);
  return ki < 0 ? -1 : (int)cfg->origin[ki];
}

/* ---- documentation ----------------------------------------------------------------------------------- */

void spry_config_doc(FILE *f) {
  char allowed[256], def[SPRY_CONFIG_STR_MAX + 32];
  spry_config table; /* the table's own defaults, before any preset, for the default column */
  {
    char err[SPRY_CONFIG_ERRLEN];
    errbuf eb = errbuf_make(err, sizeof err);
    set_defaults(&table, &eb);
    SPRY_CHECK(eb.count == 0, "table defaults invalid: %s", err);
  }
  for (int s = 0; SECTIONS[s]; s++) {
    fprintf(f, "### [%s]\n\n", SECTIONS[s]);
    fprintf(f, "| key | type | default | allowed | hashed | description |\n");
    fprintf(f, "|---|---|---|---|---|---|\n");
    for (int i = 0; i < NKEYS; i++) {
      const spry_config_key *k = &KEYS[i];
      if (strcmp(k->section, SECTIONS[s]) != 0) continue;
      describe_allowed(k, allowed, sizeof allowed);
      format_value(&table, k, def, sizeof def);
      const char *hashed = (k->flags & SPRY_CK_NOHASH) ? "no" : (k->flags & SPRY_CK_HASH_SET) ? "when set" : "yes";
      fprintf(f, "| `%s` | %s | `%s`%s | %s | %s | %s |\n", k->key, type_name(k->type), def,
              (k->flags & SPRY_CK_PRESET) ? " (preset)" : "", allowed, hashed, k->doc);
    }
    fprintf(f, "\n");
  }

  fprintf(f, "### Presets\n\nValues each preset gives the preset keys (a key set in the file or by --set wins):\n\n");
  fprintf(f, "| preset |");
  for (int i = 0; i < NKEYS; i++)
    if (KEYS[i].flags & SPRY_CK_PRESET) fprintf(f, " %s |", KEYS[i].key);
  fprintf(f, "\n|---|");
  for (int i = 0; i < NKEYS; i++)
    if (KEYS[i].flags & SPRY_CK_PRESET) fprintf(f, "---|");
  fprintf(f, "\n");
  for (int p = 0; PRESET_NAMES[p]; p++) {
    spry_config c;
    char set[64], err[SPRY_CONFIG_ERRLEN];
    snprintf(set, sizeof set, "method.preset=%s", PRESET_NAMES[p]);
    const char *ov[] = {set};
    int st = spry_config_parse(&c, "", "doc", ov, 1, err, sizeof err);
    SPRY_CHECK(st == SPRY_CONFIG_OK, "preset %s invalid: %s", PRESET_NAMES[p], err);
    fprintf(f, "| `%s` |", PRESET_NAMES[p]);
    for (int i = 0; i < NKEYS; i++) {
      if (!(KEYS[i].flags & SPRY_CK_PRESET)) continue;
      format_value(&c, &KEYS[i], def, sizeof def);
      fprintf(f, " %s |", def);
    }
    fprintf(f, "\n");
  }
  fprintf(f, "\nSources and reasons:\n\n");
  for (int p = 0; PRESET_NAMES[p]; p++) fprintf(f, "- `%s`: %s\n", PRESET_NAMES[p], PRESETS[p].source);

  fprintf(f, "\n### Cross-checks\n\n"
             "Run after every key is valid on its own; each failure names the keys and values:\n\n");
  for (size_t i = 0; i < sizeof CROSS_CHECKS / sizeof CROSS_CHECKS[0]; i++)
    fprintf(f, "%zu. %s\n", i + 1, CROSS_CHECKS[i].rule);
}
