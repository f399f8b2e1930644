/* spry/config.h -- the run configuration: one table of keys, read from an INI file plus --set overrides.
 *
 * Sources, in order of precedence (highest last):
 *   1. the key table's defaults;
 *   2. the method preset (method.preset): it supplies the [method] keys marked "preset" in the table
 *      (estimator, split, comm, client_opt, server_opt, K, local_epochs, local_steps, client_lr, server_lr);
 *   3. the INI file (parsed by inih);
 *   4. overrides "section.key=value" (the command line's --set), applied after the file; a later override of
 *      the same key wins over an earlier one.
 * A preset never replaces a key that the file or an override set explicitly, whatever the order they appear
 * in: all inputs are read first, then the preset fills the preset keys still at their defaults.
 *
 * One table drives everything: parsing (type, range, allowed values), the struct (fields located by offsetof),
 * printing (spry_config_to_ini), the documentation (spry_config_doc -> docs/configuration.md) and the hash.
 * Once every key is valid on its own, the cross-checks (rules between keys) run; docs/configuration.md lists
 * them. Parsing touches no global state (inih's options are left as they are), so it is reentrant.
 *
 * Errors never exit: loading returns a status and writes readable messages into the caller's buffer (every
 * error found, up to 12, one per line, each naming section.key, the bad value and what is allowed), so the app
 * can print them on rank 0 and end every rank cleanly. On failure *cfg is left untouched. Only an internal
 * inconsistency of the tables, or running out of memory while hashing, goes through spry_fatal.
 *
 * spry_config is plain data (no pointers): it can be copied, compared with spry_config_diff, and broadcast as
 * bytes (MPI_Bcast of sizeof(spry_config) MPI_BYTEs) after rank 0 loaded it.
 *
 * The INI dialect (inih r55 with this module's line reader): [section] headers, "key = value" (or "key: value")
 * lines, comments from ';' or '#' at the start of a line, and from ';' after whitespace anywhere. Leading
 * whitespace is ignored (so indentation is allowed and multi-line values are not). A line may hold at most
 * 198 characters before its comment (inih's 200-byte line buffer). Keys and section names are case-sensitive;
 * bool and enum values are not. A key given twice in one file is an error.
 */
#ifndef SPRY_CONFIG_H
#define SPRY_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "spry/model.h" /* spry_task, SPRY_LORA_* target bits */
#include "spry/rng.h"   /* spry_tangent_kind */

#ifdef __cplusplus
extern "C" {
#endif

/* Longest string value (model.base, data.dataset, lora.targets), in characters. */
#define SPRY_CONFIG_STR_MAX 160
/* Capacity of the per-key origin record (the table has fewer keys; a static assert checks). */
#define SPRY_CONFIG_MAX_KEYS 128
/* A comfortable size for the error buffer of spry_config_load (messages are cut to fit any size). */
#define SPRY_CONFIG_ERRLEN 2048

/* ---- value types of enum keys; each enum's names (in the table) are listed in value order ---------------- */

typedef enum { SPRY_SKEW_NONE = 0, SPRY_SKEW_LOGNORMAL = 1, SPRY_SKEW_POWERLAW = 2 } spry_quantity_skew;
/* fl.partition; the same values as spry/partition.h's spry_partition_mode */
typedef enum { SPRY_FL_PARTITION_POOL = 0, SPRY_FL_PARTITION_SAMPLED = 1, SPRY_FL_PARTITION_HOMOGENEOUS = 2 } spry_fl_partition;
typedef enum { SPRY_WEIGHT_SAMPLES = 0, SPRY_WEIGHT_UNIFORM = 1 } spry_weighting;
typedef enum {
  SPRY_PRESET_SPRY = 0,
  SPRY_PRESET_FEDFGD = 1,
  SPRY_PRESET_FEDAVG = 2,
  SPRY_PRESET_FEDYOGI = 3,
  SPRY_PRESET_FEDSGD = 4,
  SPRY_PRESET_FEDMEZO = 5,
  SPRY_PRESET_BAFFLE = 6,
  SPRY_PRESET_FWDLLM = 7,
  SPRY_PRESET_FEDAVG_SPLIT = 8,
  SPRY_PRESET_CUSTOM = 9
} spry_preset;
typedef enum {
  SPRY_EST_FORWARD = 0,  /* forward-mode JVPs along K random tangents */
  SPRY_EST_BACKPROP = 1, /* exact gradient by reverse mode */
  SPRY_EST_ZEROTH = 2,   /* two-point finite differences along K random directions */
  SPRY_EST_FWDLLM = 3    /* forward gradients with FwdLLM's tangent selection and variance control */
} spry_estimator;
typedef enum { SPRY_SPLIT_NONE = 0, SPRY_SPLIT_SPRY = 1 } spry_split;
typedef enum { SPRY_COMM_ITERATION = 0, SPRY_COMM_EPOCH = 1 } spry_comm;
typedef enum { SPRY_CLIENT_OPT_SGD = 0, SPRY_CLIENT_OPT_ADAMW = 1 } spry_client_opt;
typedef enum { SPRY_SERVER_OPT_FEDAVG = 0, SPRY_SERVER_OPT_FEDADAM = 1, SPRY_SERVER_OPT_FEDYOGI = 2 } spry_server_opt;
typedef enum { SPRY_ASSIGN_ROUNDROBIN = 0, SPRY_ASSIGN_RANDOM = 1 } spry_assignment;
typedef enum {
  SPRY_GRADLOG_NONE = 0,    /* losses and metrics only */
  SPRY_GRADLOG_SCALARS = 1, /* + per-client jvp scalars / loss differences and seeds (estimates regenerable) */
  SPRY_GRADLOG_DENSE = 2,   /* + each client's dense estimate and the round's aggregate */
  SPRY_GRADLOG_ORACLE = 3   /* + true gradients (per client and global) by an extra backprop pass */
} spry_grad_log;

/* spry_task (classify, lm) and the lora.target_mask bits SPRY_LORA_Q/K/V/O/FC/PROJ come from spry/model.h. */

/* ---- the configuration: one struct per INI section, one field per key (same names) ---------------------- */

typedef struct {
  uint32_t seed;        /* seed of every random stream */
  int rounds;           /* federated rounds */
  int eval_every;       /* evaluate every this many rounds (0 = after the last round only) */
  int checkpoint_every; /* checkpoint every this many rounds (0 = off) */
  bool quiet;           /* no per-round progress lines */
  int threads;          /* OpenBLAS threads per rank (0 = leave as is) */
} spry_config_run;

typedef struct {
  char base[SPRY_CONFIG_STR_MAX + 1]; /* "random" or a base-model checkpoint (.h5) */
  int n_layer, n_head, n_embd, n_ctx, vocab_size;
  bool causal;
  spry_task task;
  int lm_chunk; /* vocabulary columns per chunk of the LM loss */
} spry_config_model;

typedef struct {
  int rank;
  double alpha;                          /* LoRA scale is alpha / rank */
  char targets[SPRY_CONFIG_STR_MAX + 1]; /* canonical order q,k,v,o,fc,proj; may be empty */
  bool head;                             /* classification head trainable */
  unsigned target_mask;                  /* DERIVED from targets (SPRY_LORA_* bits); not a key */
} spry_config_lora;

typedef struct {
  char dataset[SPRY_CONFIG_STR_MAX + 1]; /* "synthetic" or an HDF5 dataset file */
  int n_class, n_examples, seq_len;      /* synthetic data only */
  int batch_size;
  int max_len; /* truncate sequences to this many tokens (0 = model.n_ctx); see spry_config_max_len */
  double validation_fraction; /* > 0: share of the train split held out as the evaluation set (federation.h) */
} spry_config_data;

typedef struct {
  int clients;           /* N */
  int clients_per_round; /* M */
  double alpha;          /* Dirichlet label-skew concentration; INFINITY = IID */
  spry_quantity_skew quantity_skew;
  double quantity_param; /* lognormal sigma or power-law exponent */
  double test_fraction;  /* share of examples held out for evaluation */
  spry_weighting weighting;
  spry_fl_partition partition; /* how client data is drawn from the train pool (spry/partition.h) */
  int examples_per_client;     /* 0 = unused (pool: the whole pool; homogeneous: the whole pool each) */
} spry_config_fl;

typedef struct {
  spry_preset preset;
  spry_estimator estimator;
  spry_split split;
  spry_comm comm;
  spry_client_opt client_opt;
  spry_server_opt server_opt;
  int K; /* perturbations per client step (fwdllm: the initial number) */
  spry_tangent_kind tangent;
  int local_epochs;
  int local_steps; /* 0 = run local_epochs full epochs */
  double client_lr, client_weight_decay;
  double server_lr, server_beta1, server_beta2, server_tau;
  double zo_eps;
  spry_assignment assignment;
  bool head_shared;
  double fwdllm_threshold;
  int fwdllm_candidates;
  int fwdllm_max_K;
  int tangent_chunk; /* most tangents in one forward-mode pass; 0 = all of a step's */
} spry_config_method;

typedef struct {
  spry_grad_log gradients;
  bool sample_indices;
  int weights_every; /* /weights/w every this many rounds (+ w_0 and the last); 0 = off */
} spry_config_log;

typedef struct {
  int personalize_epochs; /* eval rounds: local epochs of personalisation from w_{t+1} before the local test; 0 = off */
} spry_config_eval;

/* `spry pretrain` (causal-LM pretraining of the backbone); the federated run ignores this section. */
typedef struct {
  char corpus[SPRY_CONFIG_STR_MAX + 1]; /* pretrain.h5 built by data/build_datasets.py */
  char output[SPRY_CONFIG_STR_MAX + 1]; /* base-model file written at the end; checkpoint = output + ".ckpt" */
  int steps;            /* optimizer steps (the cosine schedule ends there) */
  int batch_size;       /* sequences per step, all ranks together */
  int micro_batch;      /* sequences per gradient evaluation; divides batch_size */
  int seq_len;          /* tokens per sequence (window); 0 = model.n_ctx */
  double lr, min_lr;    /* peak and final learning rate */
  int warmup;           /* linear warm-up steps */
  double weight_decay;  /* AdamW decoupled decay on 2-d tensors */
  double beta1, beta2;  /* AdamW moment decays */
  double clip;          /* global gradient-norm clip (0 = off) */
  int val_every;        /* validate every this many steps (0 = at the end only) */
  int val_windows;      /* fixed validation windows */
  int checkpoint_every; /* checkpoint every this many steps (0 = off) */
  int stop_at;          /* stop after this step with a checkpoint (0 = run to steps) */
  bool resume;          /* continue from the checkpoint */
} spry_config_pretrain;

typedef struct {
  spry_config_run run;
  spry_config_model model;
  spry_config_lora lora;
  spry_config_data data;
  spry_config_fl fl;
  spry_config_method method;
  spry_config_eval eval;
  spry_config_log log;
  spry_config_pretrain pretrain;
  /* Where each key's value came from (spry_config_origin), indexed like the key table. */
  unsigned char origin[SPRY_CONFIG_MAX_KEYS];
} spry_config;

typedef enum {
  SPRY_ORIGIN_DEFAULT = 0, /* the table's default */
  SPRY_ORIGIN_PRESET = 1,  /* supplied by method.preset */
  SPRY_ORIGIN_FILE = 2,    /* set in the INI file (or text) */
  SPRY_ORIGIN_OVERRIDE = 3 /* set by an override (--set) */
} spry_config_origin;

/* What went wrong first (0 = nothing). */
typedef enum {
  SPRY_CONFIG_OK = 0,
  SPRY_CONFIG_ERR_FILE = 1,      /* file missing, unreadable, too large, not text */
  SPRY_CONFIG_ERR_SYNTAX = 2,    /* INI syntax error, line too long, malformed override */
  SPRY_CONFIG_ERR_UNKNOWN = 3,   /* unknown section or key */
  SPRY_CONFIG_ERR_DUPLICATE = 4, /* key set twice in one file */
  SPRY_CONFIG_ERR_VALUE = 5,     /* wrong type, out of range, value not allowed */
  SPRY_CONFIG_ERR_CROSS = 6      /* keys valid one by one but inconsistent together */
} spry_config_status;

/* ---- loading ------------------------------------------------------------------------------------------ */

/* The defaults, resolved (preset spry applied, derived fields set). Always valid. */
void spry_config_defaults(spry_config *cfg);

/* Read the INI file `path` (NULL = no file), then the overrides ("section.key=value", n_overrides of them;
 * NULL allowed when 0), resolve the preset, derive, cross-check. Returns SPRY_CONFIG_OK or the status of the
 * first error; err (errlen bytes, may be NULL) receives every message found, newline-separated. */
int spry_config_load(spry_config *cfg, const char *path, const char *const *overrides, int n_overrides, char *err,
                     size_t errlen);

/* The same for INI text in memory (e.g. the configuration stored in a run file). `name` labels messages. */
int spry_config_parse(spry_config *cfg, const char *text, const char *name, const char *const *overrides,
                      int n_overrides, char *err, size_t errlen);

/* ---- printing, hashing, comparing --------------------------------------------------------------------- */

/* The fully resolved configuration as INI text: every key, with a comment giving its origin
 * ("default", "preset <name>", "file", "--set"). Parsing the text back gives the same values.
 * Writes at most len bytes (always NUL-terminated when len > 0); returns the length of the whole text
 * (snprintf convention: a return >= len means it was cut), or -1 when out of memory. */
int spry_config_to_ini(const spry_config *cfg, char *buf, size_t len);
/* The same text to a stream. */
void spry_config_print(FILE *f, const spry_config *cfg);

/* Canonical text of the keys that define a run's results ("section.key=value" lines in table order, values in
 * their canonical form; keys flagged SPRY_CK_NOHASH -- "hashed: no" in the docs -- are left out). Same return
 * rule as spry_config_to_ini. */
int spry_config_canonical(const spry_config *cfg, char *buf, size_t len);
/* 64-bit FNV-1a (offset basis 0xcbf29ce484222325, prime 0x100000001b3) of spry_config_canonical's text. */
uint64_t spry_config_hash(const spry_config *cfg);

/* Keys whose canonical values differ between a and b: only result-defining keys (those in the hash) when
 * result_only, else every key. Writes "section.key: A -> B" items separated by "; " into out (may be NULL).
 * Returns the number of differing keys. With result_only, 0 <=> equal hashes (up to collisions). */
int spry_config_diff(const spry_config *a, const spry_config *b, bool result_only, char *out, size_t outlen);

/* One key's value as canonical text ("method.estimator" -> "forward"). Returns 0, or -1 if no such key. */
int spry_config_get(const spry_config *cfg, const char *section_dot_key, char *buf, size_t len);
/* Where a key's value came from; -1 if no such key. */
int spry_config_origin_of(const spry_config *cfg, const char *section_dot_key);

/* Markdown reference generated from the tables (keys per section, presets, cross-checks): the block between
 * the GENERATED markers of docs/configuration.md, which a unit test keeps identical to this output. */
void spry_config_doc(FILE *f);

/* The most tangents (or directions) one client step uses: method.K, or for FwdLLM, whose K grows by variance
 * control, max(method.K, method.fwdllm_max_K); 0 for backprop (no scalars). Sizes the scalars of a step
 * everywhere (client buffers, model workspace, run file). */
static inline int spry_config_step_K(const spry_config *cfg) {
  if (cfg->method.estimator == SPRY_EST_BACKPROP) return 0;
  if (cfg->method.estimator == SPRY_EST_FWDLLM && cfg->method.fwdllm_max_K > cfg->method.K)
    return cfg->method.fwdllm_max_K;
  return cfg->method.K;
}

/* The most tangents one forward-mode pass holds (sizes the model's tangent workspace): the step's K, or
 * method.tangent_chunk when set and smaller; at least 1. */
static inline int spry_config_pass_K(const spry_config *cfg) {
  int K = spry_config_step_K(cfg) > 0 ? spry_config_step_K(cfg) : 1;
  return cfg->method.tangent_chunk > 0 && cfg->method.tangent_chunk < K ? cfg->method.tangent_chunk : K;
}

/* data.max_len resolved: model.n_ctx when 0. */
static inline int spry_config_max_len(const spry_config *cfg) {
  return cfg->data.max_len > 0 ? cfg->data.max_len : cfg->model.n_ctx;
}

/* ---- the key table (read-only; for tools that want to walk it) ---------------------------------------- */

typedef enum {
  SPRY_CT_INT,        /* int, decimal */
  SPRY_CT_UINT32,     /* uint32_t, decimal */
  SPRY_CT_DOUBLE,     /* double, finite */
  SPRY_CT_DOUBLE_INF, /* double, finite or +inf ("inf", "infinity") */
  SPRY_CT_BOOL,       /* bool: true/false, yes/no, on/off, 1/0 */
  SPRY_CT_ENUM,       /* an enum stored as int: index into choices */
  SPRY_CT_STRING      /* char[SPRY_CONFIG_STR_MAX + 1] */
} spry_config_type;

enum {
  SPRY_CK_PRESET = 1u << 0,   /* supplied by method.preset unless set explicitly */
  SPRY_CK_NOHASH = 1u << 1,   /* does not change results: left out of the hash and of result diffs */
  SPRY_CK_MIN_EXCL = 1u << 2, /* value must be > min (else >= min) */
  SPRY_CK_MAX_EXCL = 1u << 3, /* value must be < max (else <= max) */
  SPRY_CK_HASH_SET = 1u << 4  /* hashed only when away from its default: a key added after runs were made keeps
                                 their hashes (run ids) while it stays at the default, which reproduces them */
};

typedef struct {
  const char *section;
  const char *key;
  spry_config_type type;
  size_t offset;               /* of the field in spry_config */
  const char *def;             /* default, as text (parsed like any input) */
  double min, max;             /* numeric range */
  const char *const *choices;  /* enum names in value order, NULL-terminated */
  unsigned flags;              /* SPRY_CK_* */
  const char *allowed;         /* strings: what is allowed, in words */
  const char *doc;             /* one line */
  /* strings: an extra rule; may rewrite the value into canonical form in place. Returns 0 when allowed,
   * else -1 with the reason in why. NULL = only the generic string rules. */
  int (*check)(char *value, char *why, size_t whylen);
} spry_config_key;

int spry_config_key_count(void);
const spry_config_key *spry_config_key_at(int i);

#ifdef __cplusplus
}
#endif
#endif
