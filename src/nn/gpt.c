/* The GPT-2 engine: parameter table, LoRA blocks, and the three differentiation modes over the kernels of
 * ops.h. See include/spry/model.h for the contract. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "spry/core.h"
#include "spry/model.h"
#include "spry/ops.h"

/* LoRA targets in a fixed order: index t of every per-layer table below. */
enum { T_Q, T_K, T_V, T_O, T_FC, T_PROJ, N_TARGETS };
static const char *const target_param_stem[N_TARGETS] = {
    "attn.c_attn.lora_q", "attn.c_attn.lora_k", "attn.c_attn.lora_v",
    "attn.c_proj.lora",   "mlp.c_fc.lora",      "mlp.c_proj.lora"};

typedef struct {
  int present;
  size_t a_off, b_off; /* offsets of A (r,in) and B (n_out,r) in w */
  int in, n_out, ldo, col;
} lora_slot;

typedef struct {
  const float *ln1_w, *ln1_b, *attn_w, *attn_b, *proj_w, *proj_b;
  const float *ln2_w, *ln2_b, *fc_w, *fc_b, *fcproj_w, *fcproj_b;
  lora_slot lora[N_TARGETS];
  int block; /* block id of this layer's adapters */
} layer_params;

/* One layer's activations. In forward mode they point into the reused one-layer workspace; in reverse mode
 * into that layer's slice of the stored activations. x_in / x_mid / att are only kept in reverse mode. */
typedef struct {
  float *x_in, *x_mid;
  float *ln1, *mean1, *rstd1, *qkv, *att, *attout;
  float *ln2, *mean2, *rstd2, *fc, *gelu;
  float *h[N_TARGETS];
} layer_acts;

/* Tangent buffers of one layer (forward mode), all (K, N, width). */
typedef struct {
  float *ln, *qkv, *attout, *proj, *fc, *gelu, *h;
} layer_tangents;

struct spry_model {
  spry_model_config cfg;
  int max_B, max_T, max_K;
  float lora_scale;

  spry_param *params;
  int n_params;
  spry_block *blocks;
  int n_blocks;
  size_t n_frozen, d, max_block;

  float *frozen; /* "params" */
  float *w;      /* "trainable" */

  const float *wte, *wpe, *lnf_w, *lnf_b;
  layer_params *layers;
  size_t head_off; /* offset of score.weight in w (classification with trainable head) */
  int head_block;  /* -1 when the head is not trainable */
  const float *head_frozen; /* score.weight when the head is frozen (classification without trainable head) */

  /* forward-mode workspace (one layer), allocated on first use */
  float *fwd_act; /* "fwd.activations": x, lnf, lnf stats, proj_out, probs + layer_acts */
  float *fwd_tan; /* "fwd.tangents": x_d, layer_tangents, block tangents */
  int fwd_tan_K;  /* K the tangent workspace was sized for */
  /* reverse-mode workspace */
  float *bwd_act; /* "bwd.activations": stored layers */
  int bwd_layers; /* layers the stored activations hold */
  float *bwd_scratch; /* "bwd.scratch": one layer's gradients */
  float *scratch;     /* "scratch": attention, vocabulary chunks, classifier logits */
  size_t scratch_floats;
  int32_t *targets; /* LM next-token targets (N), inside "scratch" family */
};

/* ---- configuration ------------------------------------------------------------------------------------ */

spry_model_config spry_model_config_default(void) {
  spry_model_config c = {.n_layer = 4,
                         .n_head = 4,
                         .n_embd = 128,
                         .n_ctx = 64,
                         .vocab_size = 512,
                         .causal = 1,
                         .task = SPRY_TASK_CLASSIFY,
                         .n_class = 4,
                         .lora_rank = 8,
                         .lora_alpha = 16.0f,
                         .lora_targets = SPRY_LORA_Q | SPRY_LORA_V,
                         .head_trainable = 1,
                         .lm_chunk = 2048};
  return c;
}

int spry_model_config_check(const spry_model_config *c, char *err, size_t errlen) {
#define BAD(...) return (snprintf(err, errlen, __VA_ARGS__), 1)
  if (c->n_layer < 1 || c->n_layer > 256) BAD("model.n_layer = %d: must be in [1, 256]", c->n_layer);
  if (c->n_head < 1) BAD("model.n_head = %d: must be >= 1", c->n_head);
  if (c->n_embd < 1 || c->n_embd > 16384) BAD("model.n_embd = %d: must be in [1, 16384]", c->n_embd);
  if (c->n_embd % c->n_head != 0)
    BAD("model.n_embd = %d is not divisible by model.n_head = %d: the head size must be an integer", c->n_embd,
        c->n_head);
  if (c->n_ctx < 2 || c->n_ctx > 8192) BAD("model.n_ctx = %d: must be in [2, 8192]", c->n_ctx);
  if (c->vocab_size < 2 || c->vocab_size > 1000000)
    BAD("model.vocab_size = %d: must be in [2, 1000000]", c->vocab_size);
  if (c->task != SPRY_TASK_CLASSIFY && c->task != SPRY_TASK_LM)
    BAD("model.task = %d: must be classify (0) or lm (1)", (int)c->task);
  if (c->task == SPRY_TASK_CLASSIFY && (c->n_class < 2 || c->n_class > 100000))
    BAD("model.n_class = %d: a classification task needs 2 to 100000 classes", c->n_class);
  if (c->lora_rank < 1 || c->lora_rank > c->n_embd)
    BAD("lora.rank = %d: must be in [1, n_embd = %d]", c->lora_rank, c->n_embd);
  if (!(c->lora_alpha > 0.0f) || !isfinite(c->lora_alpha))
    BAD("lora.alpha = %g: must be finite and > 0", (double)c->lora_alpha);
  if ((c->lora_targets & ~SPRY_LORA_ALL) != 0 || c->lora_targets == 0)
    BAD("lora.targets mask = 0x%x: must be a non-empty subset of q,k,v,o,fc,proj", c->lora_targets);
  if (c->task == SPRY_TASK_LM && c->head_trainable)
    BAD("lora.head = true with model.task = lm: the LM head is tied to the frozen token embedding");
  if (c->task == SPRY_TASK_LM && c->lm_chunk < 2)
    BAD("model.lm_chunk = %d: must be >= 2 (vocabulary columns per chunk of the LM softmax)", c->lm_chunk);
  return 0;
#undef BAD
}

/* ---- parameter table ---------------------------------------------------------------------------------- */

static void add_param(spry_model *m, int trainable, int block, int r, int c, const char *fmt, int layer) {
  spry_param *p = &m->params[m->n_params++];
  snprintf(p->name, sizeof p->name, fmt, layer);
  p->ndim = c > 0 ? 2 : 1;
  p->shape[0] = r;
  p->shape[1] = c > 0 ? c : 0;
  p->count = (size_t)r * (size_t)(c > 0 ? c : 1);
  p->trainable = trainable;
  p->block = block;
  if (trainable) {
    p->offset = m->d;
    m->d += p->count;
  } else {
    /* Frozen tensors start 64-byte aligned so the kernels see aligned weights. */
    p->offset = m->n_frozen;
    m->n_frozen += spry_align_floats(p->count);
  }
}

static void build_table(spry_model *m) {
  const spry_model_config *c = &m->cfg;
  int C = c->n_embd, L = c->n_layer, r = c->lora_rank;
  int n_lora = 0;
  for (int t = 0; t < N_TARGETS; t++) n_lora += (c->lora_targets >> t) & 1u;
  int cap = 2 + 12 * L + 2 + 2 * n_lora * L + 2;
  m->params = spry_alloc("params", sizeof(spry_param) * (size_t)cap);
  add_param(m, 0, -1, c->vocab_size, C, "wte.weight", 0);
  add_param(m, 0, -1, c->n_ctx, C, "wpe.weight", 0);
  for (int l = 0; l < L; l++) {
    add_param(m, 0, -1, C, 0, "h.%d.ln_1.weight", l);
    add_param(m, 0, -1, C, 0, "h.%d.ln_1.bias", l);
    add_param(m, 0, -1, C, 3 * C, "h.%d.attn.c_attn.weight", l);
    add_param(m, 0, -1, 3 * C, 0, "h.%d.attn.c_attn.bias", l);
    add_param(m, 0, -1, C, C, "h.%d.attn.c_proj.weight", l);
    add_param(m, 0, -1, C, 0, "h.%d.attn.c_proj.bias", l);
    add_param(m, 0, -1, C, 0, "h.%d.ln_2.weight", l);
    add_param(m, 0, -1, C, 0, "h.%d.ln_2.bias", l);
    add_param(m, 0, -1, C, 4 * C, "h.%d.mlp.c_fc.weight", l);
    add_param(m, 0, -1, 4 * C, 0, "h.%d.mlp.c_fc.bias", l);
    add_param(m, 0, -1, 4 * C, C, "h.%d.mlp.c_proj.weight", l);
    add_param(m, 0, -1, C, 0, "h.%d.mlp.c_proj.bias", l);
  }
  add_param(m, 0, -1, C, 0, "ln_f.weight", 0);
  add_param(m, 0, -1, C, 0, "ln_f.bias", 0);
  if (c->task == SPRY_TASK_CLASSIFY && !c->head_trainable) add_param(m, 0, -1, c->n_class, C, "score.weight", 0);

  /* Trainable: block by block, so every block is one contiguous range of w. */
  static const int in_mult[N_TARGETS] = {1, 1, 1, 1, 1, 4}, out_mult[N_TARGETS] = {1, 1, 1, 1, 4, 1};
  m->n_blocks = L + (c->task == SPRY_TASK_CLASSIFY && c->head_trainable ? 1 : 0);
  m->blocks = spry_alloc("params", sizeof(spry_block) * (size_t)m->n_blocks);
  for (int l = 0; l < L; l++) {
    spry_block *b = &m->blocks[l];
    snprintf(b->name, sizeof b->name, "layer.%d", l);
    b->offset = m->d;
    b->layer = l;
    for (int t = 0; t < N_TARGETS; t++) {
      if (!((c->lora_targets >> t) & 1u)) continue;
      char fmt[64];
      snprintf(fmt, sizeof fmt, "h.%%d.%s.A", target_param_stem[t]);
      add_param(m, 1, l, r, in_mult[t] * C, fmt, l);
      snprintf(fmt, sizeof fmt, "h.%%d.%s.B", target_param_stem[t]);
      add_param(m, 1, l, out_mult[t] * C, r, fmt, l);
    }
    b->size = m->d - b->offset;
  }
  m->head_block = -1;
  if (m->n_blocks > L) {
    spry_block *b = &m->blocks[L];
    snprintf(b->name, sizeof b->name, "head");
    b->offset = m->d;
    b->layer = L;
    add_param(m, 1, L, c->n_class, C, "score.weight", 0);
    b->size = m->d - b->offset;
    m->head_block = L;
  }
  m->max_block = 0;
  for (int i = 0; i < m->n_blocks; i++)
    if (m->blocks[i].size > m->max_block) m->max_block = m->blocks[i].size;
}

/* The frozen tensor named by fmt (a printf format with at most one %d for the layer). */
static const float *frozen_named(spry_model *m, const char *fmt, int layer) {
  char name[64];
  snprintf(name, sizeof name, fmt, layer);
  const spry_param *p = spry_model_find_param(m, name);
  SPRY_CHECK(p && !p->trainable, "internal: no frozen parameter '%s'", name);
  return m->frozen + p->offset;
}

/* Resolve the per-layer pointers and LoRA slots from the table (names are the single source of truth). */
static void resolve(spry_model *m) {
  const spry_model_config *c = &m->cfg;
  int C = c->n_embd;
  char name[64];
#define FROZEN(fmt, l) frozen_named(m, fmt, l)
  m->wte = FROZEN("wte.weight", 0);
  m->wpe = FROZEN("wpe.weight", 0);
  m->lnf_w = FROZEN("ln_f.weight", 0);
  m->lnf_b = FROZEN("ln_f.bias", 0);
  m->head_frozen = NULL;
  if (c->task == SPRY_TASK_CLASSIFY && !c->head_trainable) m->head_frozen = FROZEN("score.weight", 0);
  if (m->head_block >= 0) m->head_off = spry_model_find_param(m, "score.weight")->offset;
  m->layers = spry_alloc("params", sizeof(layer_params) * (size_t)c->n_layer);
  static const int ldo_mult[N_TARGETS] = {3, 3, 3, 1, 4, 1}, col_mult[N_TARGETS] = {0, 1, 2, 0, 0, 0};
  static const int in_mult[N_TARGETS] = {1, 1, 1, 1, 1, 4}, out_mult[N_TARGETS] = {1, 1, 1, 1, 4, 1};
  for (int l = 0; l < c->n_layer; l++) {
    layer_params *lp = &m->layers[l];
    lp->ln1_w = FROZEN("h.%d.ln_1.weight", l);
    lp->ln1_b = FROZEN("h.%d.ln_1.bias", l);
    lp->attn_w = FROZEN("h.%d.attn.c_attn.weight", l);
    lp->attn_b = FROZEN("h.%d.attn.c_attn.bias", l);
    lp->proj_w = FROZEN("h.%d.attn.c_proj.weight", l);
    lp->proj_b = FROZEN("h.%d.attn.c_proj.bias", l);
    lp->ln2_w = FROZEN("h.%d.ln_2.weight", l);
    lp->ln2_b = FROZEN("h.%d.ln_2.bias", l);
    lp->fc_w = FROZEN("h.%d.mlp.c_fc.weight", l);
    lp->fc_b = FROZEN("h.%d.mlp.c_fc.bias", l);
    lp->fcproj_w = FROZEN("h.%d.mlp.c_proj.weight", l);
    lp->fcproj_b = FROZEN("h.%d.mlp.c_proj.bias", l);
    lp->block = l;
    for (int t = 0; t < N_TARGETS; t++) {
      lora_slot *s = &lp->lora[t];
      memset(s, 0, sizeof *s);
      if (!((c->lora_targets >> t) & 1u)) continue;
      s->present = 1;
      snprintf(name, sizeof name, "h.%d.%s.A", l, target_param_stem[t]);
      s->a_off = spry_model_find_param(m, name)->offset;
      snprintf(name, sizeof name, "h.%d.%s.B", l, target_param_stem[t]);
      s->b_off = spry_model_find_param(m, name)->offset;
      s->in = in_mult[t] * C;
      s->n_out = out_mult[t] * C;
      s->ldo = ldo_mult[t] * C;
      s->col = col_mult[t] * C;
    }
  }
#undef FROZEN
}

spry_model *spry_model_create(const spry_model_config *cfg, int max_B, int max_T, int max_K) {
  char err[256];
  if (spry_model_config_check(cfg, err, sizeof err)) spry_fatal("invalid model configuration: %s", err);
  SPRY_CHECK(max_B >= 1 && max_T >= 1 && max_T <= cfg->n_ctx && max_K >= 1,
             "spry_model_create: max_B = %d, max_T = %d (n_ctx = %d), max_K = %d: need B >= 1, 1 <= T <= n_ctx, "
             "K >= 1",
             max_B, max_T, cfg->n_ctx, max_K);
  spry_model *m = spry_alloc("params", sizeof *m);
  m->cfg = *cfg;
  m->max_B = max_B;
  m->max_T = max_T;
  m->max_K = max_K;
  m->lora_scale = cfg->lora_alpha / (float)cfg->lora_rank;
  build_table(m);
  m->frozen = spry_alloc_floats("params", m->n_frozen);
  m->w = spry_alloc_floats("trainable", m->d);
  resolve(m);
  return m;
}

void spry_model_release_workspaces(spry_model *m) {
  spry_free(&m->fwd_act);
  spry_free(&m->fwd_tan);
  spry_free(&m->bwd_act);
  spry_free(&m->bwd_scratch);
  spry_free(&m->scratch);
  spry_free(&m->targets);
  m->fwd_tan_K = 0;
  m->bwd_layers = 0;
  m->scratch_floats = 0;
}

void spry_model_free(spry_model **pm) {
  spry_model *m = *pm;
  if (!m) return;
  spry_model_release_workspaces(m);
  spry_free(&m->frozen);
  spry_free(&m->w);
  spry_free(&m->layers);
  spry_free(&m->blocks);
  spry_free(&m->params);
  spry_free(pm);
}

const spry_model_config *spry_model_cfg(const spry_model *m) { return &m->cfg; }
int spry_model_n_params(const spry_model *m) { return m->n_params; }
const spry_param *spry_model_params(const spry_model *m) { return m->params; }
int spry_model_n_blocks(const spry_model *m) { return m->n_blocks; }
const spry_block *spry_model_blocks(const spry_model *m) { return m->blocks; }
size_t spry_model_n_trainable(const spry_model *m) { return m->d; }
size_t spry_model_n_frozen(const spry_model *m) { return m->n_frozen; }
float *spry_model_w(spry_model *m) { return m->w; }
float *spry_model_frozen(spry_model *m) { return m->frozen; }

const spry_param *spry_model_find_param(const spry_model *m, const char *name) {
  for (int i = 0; i < m->n_params; i++)
    if (strcmp(m->params[i].name, name) == 0) return &m->params[i];
  return NULL;
}

float *spry_model_param_data(spry_model *m, const spry_param *p) {
  SPRY_CHECK(p != NULL, "spry_model_param_data: unknown parameter");
  return (p->trainable ? m->w : m->frozen) + p->offset;
}

/* ---- initialisation ----------------------------------------------------------------------------------- */

static int ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && strcmp(s + n - k, suffix) == 0;
}

void spry_model_init_backbone(spry_model *m, uint32_t seed) {
  float proj_std = 0.02f / sqrtf(2.0f * (float)m->cfg.n_layer);
  for (int i = 0; i < m->n_params; i++) {
    const spry_param *p = &m->params[i];
    if (p->trainable) continue;
    float *x = m->frozen + p->offset;
    int is_ln = strstr(p->name, "ln_") != NULL;
    if (is_ln && ends_with(p->name, ".weight")) {
      for (size_t j = 0; j < p->count; j++) x[j] = 1.0f;
    } else if (ends_with(p->name, ".bias")) {
      memset(x, 0, p->count * sizeof *x);
    } else {
      float std = ends_with(p->name, "c_proj.weight") ? proj_std : 0.02f;
      spry_rng_key key = {.seed = seed, .purpose = SPRY_RNG_INIT, .client = 1, .k = (uint32_t)i};
      spry_rng_fill(key, SPRY_TANGENT_GAUSSIAN, 0, p->count, x);
      for (size_t j = 0; j < p->count; j++) x[j] *= std;
    }
  }
}

void spry_model_init_trainable(spry_model *m, uint32_t seed) {
  for (int i = 0; i < m->n_params; i++) {
    const spry_param *p = &m->params[i];
    if (!p->trainable) continue;
    float *x = m->w + p->offset;
    spry_rng_key key = {.seed = seed, .purpose = SPRY_RNG_INIT, .client = 2, .k = (uint32_t)i};
    if (ends_with(p->name, ".B")) {
      memset(x, 0, p->count * sizeof *x);
    } else if (ends_with(p->name, ".A")) {
      /* PEFT: kaiming_uniform(a = sqrt(5)) on (r, in) gives U(-1/sqrt(in), 1/sqrt(in)). */
      double bound = 1.0 / sqrt((double)p->shape[1]);
      for (size_t j = 0; j < p->count; j++) {
        double u;
        spry_rng_uniform(key, j, 1, &u);
        x[j] = (float)((2.0 * u - 1.0) * bound);
      }
    } else {
      spry_rng_fill(key, SPRY_TANGENT_GAUSSIAN, 0, p->count, x);
      for (size_t j = 0; j < p->count; j++) x[j] *= 0.02f;
    }
  }
}

/* ---- workspaces --------------------------------------------------------------------------------------- */

static size_t n_lora_targets(const spry_model *m) {
  size_t n = 0;
  for (int t = 0; t < N_TARGETS; t++) n += (m->cfg.lora_targets >> t) & 1u;
  return n;
}

/* Floats of one layer's activations (layer_acts); `stored` adds x_in, x_mid and the attention probabilities. */
static size_t layer_act_floats(const spry_model *m, int stored) {
#define A(x) spry_align_floats(x)
  size_t N = (size_t)m->max_B * m->max_T, C = m->cfg.n_embd, r = m->cfg.lora_rank;
  /* ln1, attout, ln2; two LayerNorm stats pairs; qkv; fc, gelu; one h per adapter */
  size_t n = 3 * A(N * C) + 4 * A(N) + A(N * 3 * C) + 2 * A(N * 4 * C) + n_lora_targets(m) * A(N * r);
  if (stored) n += 2 * A(N * C) + A((size_t)m->max_B * m->cfg.n_head * m->max_T * m->max_T);
  return n;
#undef A
}

static float *carve(float **cursor, size_t n) {
  float *p = *cursor;
  *cursor += spry_align_floats(n);
  return p;
}

static void carve_layer_acts(const spry_model *m, float **cur, layer_acts *a, int stored) {
  size_t N = (size_t)m->max_B * m->max_T, C = m->cfg.n_embd, r = m->cfg.lora_rank;
  a->x_in = stored ? carve(cur, N * C) : NULL;
  a->x_mid = stored ? carve(cur, N * C) : NULL;
  a->att = stored ? carve(cur, (size_t)m->max_B * m->cfg.n_head * m->max_T * m->max_T) : NULL;
  a->ln1 = carve(cur, N * C);
  a->mean1 = carve(cur, N);
  a->rstd1 = carve(cur, N);
  a->qkv = carve(cur, N * 3 * C);
  a->attout = carve(cur, N * C);
  a->ln2 = carve(cur, N * C);
  a->mean2 = carve(cur, N);
  a->rstd2 = carve(cur, N);
  a->fc = carve(cur, N * 4 * C);
  a->gelu = carve(cur, N * 4 * C);
  for (int t = 0; t < N_TARGETS; t++) a->h[t] = ((m->cfg.lora_targets >> t) & 1u) ? carve(cur, N * r) : NULL;
}

/* Forward workspace: residual x, a projection output, final LN + its stats, the head's probabilities or
 * log-sum-exps, and one layer of activations. */
typedef struct {
  float *x, *proj, *lnf, *meanf, *rstdf, *out; /* out: probs (B,n_class) or lse (N) */
  layer_acts la;
} fwd_bufs;

static size_t head_out_floats(const spry_model *m) {
  size_t N = (size_t)m->max_B * m->max_T;
  size_t cls = (size_t)m->max_B * (m->cfg.task == SPRY_TASK_CLASSIFY ? m->cfg.n_class : 0);
  return spry_align_floats(N > cls ? N : cls);
}

static fwd_bufs fwd_workspace(spry_model *m) {
  size_t N = (size_t)m->max_B * m->max_T, C = m->cfg.n_embd;
  size_t total = 3 * spry_align_floats(N * C) + 2 * spry_align_floats(N) + head_out_floats(m) + layer_act_floats(m, 0);
  if (!m->fwd_act) m->fwd_act = spry_alloc_floats("fwd.activations", total);
  float *cur = m->fwd_act;
  fwd_bufs f;
  f.x = carve(&cur, N * C);
  f.proj = carve(&cur, N * C);
  f.lnf = carve(&cur, N * C);
  f.meanf = carve(&cur, N);
  f.rstdf = carve(&cur, N);
  f.out = carve(&cur, head_out_floats(m));
  carve_layer_acts(m, &cur, &f.la, 0);
  return f;
}

/* Scratch shared by all modes: attention (K+2) T^2, vocabulary chunks (K+1) N Vc, classifier logits K B n_class,
 * LoRA h tangents, sized for the largest K used so far. */
static float *scratch_for(spry_model *m, int K) {
  size_t N = (size_t)m->max_B * m->max_T, T = (size_t)m->max_T;
  size_t need = (size_t)(K + 2) * T * T;
  if (m->cfg.task == SPRY_TASK_LM) {
    size_t Vc = (size_t)(m->cfg.lm_chunk < m->cfg.vocab_size ? m->cfg.lm_chunk : m->cfg.vocab_size);
    size_t lm = (size_t)(K + 1) * N * Vc;
    if (lm > need) need = lm;
  } else {
    size_t cls = spry_align_floats((size_t)m->max_B * m->cfg.n_class) + (size_t)K * m->max_B * m->cfg.n_class;
    if (cls > need) need = cls;
  }
  if (need > m->scratch_floats) {
    spry_free(&m->scratch);
    m->scratch = spry_alloc_floats("scratch", need);
    m->scratch_floats = need;
  }
  if (!m->targets) m->targets = spry_alloc("scratch", sizeof(int32_t) * N);
  return m->scratch;
}

/* ---- batch checks ------------------------------------------------------------------------------------- */

static void check_batch(const spry_model *m, const spry_batch *b) {
  SPRY_CHECK(b->B >= 1 && b->B <= m->max_B && b->T >= 1 && b->T <= m->max_T,
             "batch %dx%d exceeds the model workspace %dx%d", b->B, b->T, m->max_B, m->max_T);
  for (int i = 0; i < b->B; i++) {
    SPRY_CHECK(b->lengths[i] >= 1 && b->lengths[i] <= b->T, "batch row %d: length %d not in [1, %d]", i,
               b->lengths[i], b->T);
    if (m->cfg.task == SPRY_TASK_CLASSIFY)
      SPRY_CHECK(b->labels && b->labels[i] >= 0 && b->labels[i] < m->cfg.n_class,
                 "batch row %d: label %d not in [0, %d)", i, b->labels ? b->labels[i] : -1, m->cfg.n_class);
  }
  for (size_t i = 0; i < (size_t)b->B * b->T; i++)
    SPRY_CHECK(b->tokens[i] >= 0 && b->tokens[i] < m->cfg.vocab_size, "batch token %zu: id %d not in [0, %d)", i,
               b->tokens[i], m->cfg.vocab_size);
}

/* Next-token targets: position t predicts token t+1 while t+1 < length; others ignored (-1). */
static void lm_targets(const spry_batch *b, int32_t *target) {
  for (int i = 0; i < b->B; i++)
    for (int t = 0; t < b->T; t++)
      target[i * b->T + t] = (t + 1 < b->lengths[i]) ? b->tokens[i * b->T + t + 1] : -1;
}

/* ---- primal layer ------------------------------------------------------------------------------------- */

static void add_inplace(float *x, const float *y, size_t n) { spry_residual_forward(x, x, y, n); }

/* One transformer layer on the residual stream x (N,C), updated in place; defined with the forward-mode code
 * below (the primal is the tangent-free case). Activations go to `a`; x_in / x_mid / att are kept when non-NULL. */
static void layer_forward(spry_model *m, int l, const spry_batch *b, float *x, float *proj, const layer_acts *a,
                          float *scratch);

static void embed(spry_model *m, const spry_batch *b, float *x) {
  spry_embed_forward(x, b->tokens, m->wte, m->wpe, b->B, b->T, m->cfg.n_embd);
}

static const float *head_weight(const spry_model *m) {
  return m->head_block >= 0 ? m->w + m->head_off : m->head_frozen;
}

/* Final LayerNorm and the loss from the residual stream x. */
static float head_forward(spry_model *m, const spry_batch *b, const float *x, float *lnf, float *meanf, float *rstdf,
                          float *out, float *scratch) {
  int N = b->B * b->T, C = m->cfg.n_embd;
  spry_layernorm_forward(lnf, meanf, rstdf, x, m->lnf_w, m->lnf_b, N, C);
  if (m->cfg.task == SPRY_TASK_CLASSIFY)
    return spry_classifier_forward(scratch, out, lnf, b->lengths, b->labels, head_weight(m), b->B, b->T, C,
                                   m->cfg.n_class);
  lm_targets(b, m->targets);
  int Vc = m->cfg.lm_chunk < m->cfg.vocab_size ? m->cfg.lm_chunk : m->cfg.vocab_size;
  return spry_lmloss_forward(out, lnf, m->wte, m->targets, N, C, m->cfg.vocab_size, Vc, scratch);
}

float spry_model_forward(spry_model *m, const spry_batch *b, float *probs) {
  check_batch(m, b);
  fwd_bufs f = fwd_workspace(m);
  float *scratch = scratch_for(m, 1);
  embed(m, b, f.x);
  for (int l = 0; l < m->cfg.n_layer; l++) layer_forward(m, l, b, f.x, f.proj, &f.la, scratch);
  float loss = head_forward(m, b, f.x, f.lnf, f.meanf, f.rstdf, f.out, scratch);
  if (probs && m->cfg.task == SPRY_TASK_CLASSIFY)
    memcpy(probs, f.out, sizeof(float) * (size_t)b->B * m->cfg.n_class);
  return loss;
}

float spry_model_logits(spry_model *m, const spry_batch *b, float *logits) {
  SPRY_CHECK(m->cfg.task == SPRY_TASK_LM, "spry_model_logits: the model's task is not lm");
  float loss = spry_model_forward(m, b, NULL);
  /* the forward left LN_f(x_L) in the workspace's lnf */
  fwd_bufs f = fwd_workspace(m);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, b->B * b->T, m->cfg.vocab_size, m->cfg.n_embd, 1.0f, f.lnf,
              m->cfg.n_embd, m->wte, m->cfg.n_embd, 0.0f, logits, m->cfg.vocab_size);
  return loss;
}

/* ---- tangents of the trainable vector ------------------------------------------------------------------ */

static int block_active(const spry_tangent_spec *spec, int blk) { return !spec->active || spec->active[blk]; }

/* The K tangents restricted to block `blk`: element j of tangent k at base[k * ld + j]. Regenerated from the key
 * into buf (K * block size) or pointing into the explicit tangents. */
static const float *block_tangents(const spry_model *m, const spry_tangent_spec *spec, int blk, float *buf,
                                   size_t *ld) {
  const spry_block *bl = &m->blocks[blk];
  if (spec->tangents) {
    *ld = spec->ldt;
    return spec->tangents + bl->offset;
  }
  for (int k = 0; k < spec->K; k++)
    spry_rng_fill(spry_tangent_key(spec, k), spec->kind, bl->offset, bl->size, buf + (size_t)k * bl->size);
  *ld = bl->size;
  return buf;
}

/* out[i] += scale * v_k[i] for i in block blk (out indexed like w); v_k read or regenerated, never stored. */
static void tangent_axpy(const spry_model *m, const spry_tangent_spec *spec, int k, int blk, float scale,
                         float *out) {
  const spry_block *bl = &m->blocks[blk];
  if (spec->tangents) {
    const float *v = spec->tangents + (size_t)k * spec->ldt + bl->offset;
    float *o = out + bl->offset;
    for (size_t i = 0; i < bl->size; i++) o[i] += scale * v[i];
  } else {
    spry_rng_axpy(spry_tangent_key(spec, k), spec->kind, bl->offset, bl->size, scale, out + bl->offset);
  }
}

void spry_tangent_materialise(const spry_model *m, const spry_tangent_spec *spec, int k, float *out) {
  memset(out, 0, sizeof(float) * m->d);
  for (int blk = 0; blk < m->n_blocks; blk++)
    if (block_active(spec, blk)) tangent_axpy(m, spec, k, blk, 1.0f, out);
}

void spry_forward_gradient(const spry_model *m, const spry_tangent_spec *spec, const float *jvp, float *g_hat) {
  memset(g_hat, 0, sizeof(float) * m->d);
  float inv_K = 1.0f / (float)spec->K;
  for (int blk = 0; blk < m->n_blocks; blk++)
    if (block_active(spec, blk))
      for (int k = 0; k < spec->K; k++) tangent_axpy(m, spec, k, blk, jvp[k] * inv_K, g_hat);
}

/* Lowest transformer layer holding an active block (n_layer: only the head; n_layer + 1: nothing active). */
static int first_active_layer(const spry_model *m, const unsigned char *active) {
  for (int blk = 0; blk < m->n_blocks; blk++)
    if (!active || active[blk]) return m->blocks[blk].layer;
  return m->cfg.n_layer + 1;
}

/* ---- forward mode ------------------------------------------------------------------------------------- */

typedef struct {
  float *x_d, *blk; /* residual tangent (K,N,C), block tangents (K, max_block) */
  layer_tangents lt;
} fwd_tan_bufs;

static fwd_tan_bufs fwd_tan_workspace(spry_model *m, int K) {
  size_t N = (size_t)m->max_B * m->max_T, C = m->cfg.n_embd, r = m->cfg.lora_rank, KN = (size_t)K * N;
  size_t total = spry_align_floats(KN * C) * 4 + spry_align_floats(KN * 3 * C) + 2 * spry_align_floats(KN * 4 * C) +
                 spry_align_floats(KN * r) + spry_align_floats((size_t)K * m->max_block);
  if (m->fwd_tan && m->fwd_tan_K < K) spry_free(&m->fwd_tan);
  if (!m->fwd_tan) {
    m->fwd_tan = spry_alloc_floats("fwd.tangents", total);
    m->fwd_tan_K = K;
  }
  float *cur = m->fwd_tan;
  fwd_tan_bufs t;
  t.x_d = carve(&cur, KN * C);
  t.lt.ln = carve(&cur, KN * C);
  t.lt.attout = carve(&cur, KN * C);
  t.lt.proj = carve(&cur, KN * C);
  t.lt.qkv = carve(&cur, KN * 3 * C);
  t.lt.fc = carve(&cur, KN * 4 * C);
  t.lt.gelu = carve(&cur, KN * 4 * C);
  t.lt.h = carve(&cur, KN * r);
  t.blk = carve(&cur, (size_t)K * m->max_block);
  return t;
}

/* Tangents of one layer: K = 0 means none (the primal pass). x_d (K,N,C) is the residual tangent and *xz says
 * whether it is zero (on entry and on exit); bt/ld are the layer block's tangents when the block is active. */
typedef struct {
  int K, act;
  const float *bt;
  size_t ld, blk_off;
  const layer_tangents *lt;
  float *x_d;
  int *xz;
} layer_tangent_ctx;

/* out (N,Cout) = inp @ W + bias, plus the adapters t0..t1 present on this linear (each on its column slice),
 * saving each adapter's h = inp @ A^T in h[t]. */
static void adapted_linear(spry_model *m, const layer_params *lp, int t0, int t1, float *out, float *const *h,
                           const float *inp, const float *W, const float *bias, int N, int Cin, int Cout) {
  spry_matmul_forward(out, inp, W, bias, N, Cin, Cout);
  for (int t = t0; t <= t1; t++) {
    const lora_slot *s = &lp->lora[t];
    if (s->present)
      spry_lora_forward(out, h[t], inp, m->w + s->a_off, m->w + s->b_off, m->lora_scale, N, s->in,
                        m->cfg.lora_rank, s->n_out, s->ldo, s->col);
  }
}

/* Its tangent: out_d (K,N,Cout) = inp_d @ W + the adapters' terms (inp_d NULL = zero input tangent; an adapter's
 * own tangent only when the layer's block is active). Returns 1 when out_d was written (non-zero), else 0. */
static int adapted_linear_jvp(spry_model *m, const layer_params *lp, int t0, int t1, const layer_tangent_ctx *tc,
                              int N, float *out_d, const float *inp_d, const float *inp, float *const *h,
                              const float *W, int Cin, int Cout) {
  int nonzero = 0;
  if (inp_d) {
    spry_matmul_forward(out_d, inp_d, W, NULL, tc->K * N, Cin, Cout);
    nonzero = 1;
  }
  for (int t = t0; t <= t1; t++) {
    const lora_slot *s = &lp->lora[t];
    if (!s->present || !(inp_d || tc->act)) continue;
    if (!nonzero) memset(out_d, 0, sizeof(float) * (size_t)tc->K * N * Cout);
    nonzero = 1;
    const float *A_d = tc->act ? tc->bt + (s->a_off - tc->blk_off) : NULL;
    const float *B_d = tc->act ? tc->bt + (s->b_off - tc->blk_off) : NULL;
    spry_lora_jvp_acc(out_d, tc->lt->h, inp_d, inp, h[t], m->w + s->a_off, m->w + s->b_off, A_d, B_d, tc->ld,
                      m->lora_scale, N, s->in, m->cfg.lora_rank, s->n_out, s->ldo, s->col, tc->K);
  }
  return nonzero;
}

/* LayerNorm of x into (ln, mean, rstd) and, when the residual tangent is non-zero, its tangent into lt->ln. */
static const float *layernorm_step(const layer_tangent_ctx *tc, float *ln, float *mean, float *rstd, const float *x,
                                   const float *g, const float *bias, int N, int C) {
  spry_layernorm_forward(ln, mean, rstd, x, g, bias, N, C);
  if (tc->K == 0 || *tc->xz) return NULL;
  spry_layernorm_jvp(tc->lt->ln, tc->x_d, x, mean, rstd, g, N, C, tc->K);
  return tc->lt->ln;
}

/* x += branch; x_d += branch_d when that tangent is non-zero. */
static void residual_step(const layer_tangent_ctx *tc, float *x, const float *branch, int branch_nz, size_t NC) {
  add_inplace(x, branch, NC);
  if (!branch_nz) return;
  size_t KNC = (size_t)tc->K * NC;
  if (*tc->xz) memcpy(tc->x_d, tc->lt->proj, sizeof(float) * KNC);
  else add_inplace(tc->x_d, tc->lt->proj, KNC);
  *tc->xz = 0;
}

/* One layer, primal and (when tc->K > 0) tangents, in the order of GPT-2's block:
 *   x += attn_proj(attention(c_attn(ln_1(x))));  x += mlp_proj(gelu(c_fc(ln_2(x))))
 * with each adapted linear's tangent computed right after its primal (its inputs are still live). */
static void layer_step(spry_model *m, int l, const spry_batch *b, float *x, float *proj, const layer_acts *a,
                       float *scratch, const layer_tangent_ctx *tc) {
  const layer_params *lp = &m->layers[l];
  int B = b->B, T = b->T, N = B * T, C = m->cfg.n_embd, K = tc->K;
  size_t NC = (size_t)N * C;
  const layer_tangents *lt = tc->lt;
  if (a->x_in) memcpy(a->x_in, x, sizeof(float) * NC);

  /* attention half */
  const float *ln1_d = layernorm_step(tc, a->ln1, a->mean1, a->rstd1, x, lp->ln1_w, lp->ln1_b, N, C);
  adapted_linear(m, lp, T_Q, T_V, a->qkv, a->h, a->ln1, lp->attn_w, lp->attn_b, N, C, 3 * C);
  int qkv_nz = K && adapted_linear_jvp(m, lp, T_Q, T_V, tc, N, lt->qkv, ln1_d, a->ln1, a->h, lp->attn_w, C, 3 * C);
  if (qkv_nz)
    spry_attention_jvp(a->attout, lt->attout, a->qkv, lt->qkv, b->lengths, m->cfg.causal, B, T, C, m->cfg.n_head, K,
                       scratch);
  else
    spry_attention_forward(a->attout, a->att, a->qkv, b->lengths, m->cfg.causal, B, T, C, m->cfg.n_head, scratch);
  adapted_linear(m, lp, T_O, T_O, proj, a->h, a->attout, lp->proj_w, lp->proj_b, N, C, C);
  int proj_nz = K && adapted_linear_jvp(m, lp, T_O, T_O, tc, N, lt->proj, qkv_nz ? lt->attout : NULL, a->attout,
                                        a->h, lp->proj_w, C, C);
  residual_step(tc, x, proj, proj_nz, NC);
  if (a->x_mid) memcpy(a->x_mid, x, sizeof(float) * NC);

  /* MLP half */
  const float *ln2_d = layernorm_step(tc, a->ln2, a->mean2, a->rstd2, x, lp->ln2_w, lp->ln2_b, N, C);
  adapted_linear(m, lp, T_FC, T_FC, a->fc, a->h, a->ln2, lp->fc_w, lp->fc_b, N, C, 4 * C);
  int fc_nz = K && adapted_linear_jvp(m, lp, T_FC, T_FC, tc, N, lt->fc, ln2_d, a->ln2, a->h, lp->fc_w, C, 4 * C);
  spry_gelu_forward(a->gelu, a->fc, NC * 4);
  if (fc_nz) spry_gelu_jvp(lt->gelu, lt->fc, a->fc, NC * 4, K);
  adapted_linear(m, lp, T_PROJ, T_PROJ, proj, a->h, a->gelu, lp->fcproj_w, lp->fcproj_b, N, 4 * C, C);
  proj_nz = K && adapted_linear_jvp(m, lp, T_PROJ, T_PROJ, tc, N, lt->proj, fc_nz ? lt->gelu : NULL, a->gelu, a->h,
                                    lp->fcproj_w, 4 * C, C);
  residual_step(tc, x, proj, proj_nz, NC);
}

static void layer_forward(spry_model *m, int l, const spry_batch *b, float *x, float *proj, const layer_acts *a,
                          float *scratch) {
  int xz = 1;
  layer_tangent_ctx none = {.K = 0, .xz = &xz};
  layer_step(m, l, b, x, proj, a, scratch, &none);
}

/* One layer with the K tangents of spec. */
static void layer_jvp(spry_model *m, int l, const spry_batch *b, const spry_tangent_spec *spec, float *x,
                      float *proj, const layer_acts *a, float *x_d, int *xz, const layer_tangents *lt,
                      float *blk_buf, float *scratch) {
  const layer_params *lp = &m->layers[l];
  layer_tangent_ctx tc = {.K = spec->K, .act = block_active(spec, lp->block), .lt = lt, .x_d = x_d, .xz = xz,
                          .blk_off = m->blocks[lp->block].offset};
  if (tc.act) tc.bt = block_tangents(m, spec, lp->block, blk_buf, &tc.ld);
  layer_step(m, l, b, x, proj, a, scratch, &tc);
}

/* One pass of spry_model_jvp: the primal and spec->K <= max_K tangents together. */
static float jvp_pass(spry_model *m, const spry_batch *b, const spry_tangent_spec *spec, float *jvp) {
  int K = spec->K;
  int first = first_active_layer(m, spec->active);
  if (first > m->cfg.n_layer) { /* nothing active: every directional derivative is zero */
    for (int k = 0; k < K; k++) jvp[k] = 0.0f;
    return spry_model_forward(m, b, NULL);
  }
  fwd_bufs f = fwd_workspace(m);
  fwd_tan_bufs tb = fwd_tan_workspace(m, K);
  float *scratch = scratch_for(m, K);
  int N = b->B * b->T, C = m->cfg.n_embd;
  embed(m, b, f.x);
  for (int l = 0; l < first && l < m->cfg.n_layer; l++) layer_forward(m, l, b, f.x, f.proj, &f.la, scratch);
  int xz = 1;
  for (int l = first; l < m->cfg.n_layer; l++)
    layer_jvp(m, l, b, spec, f.x, f.proj, &f.la, tb.x_d, &xz, &tb.lt, tb.blk, scratch);

  spry_layernorm_forward(f.lnf, f.meanf, f.rstdf, f.x, m->lnf_w, m->lnf_b, N, C);
  const float *lnf_d = NULL;
  if (!xz) {
    spry_layernorm_jvp(tb.lt.ln, tb.x_d, f.x, f.meanf, f.rstdf, m->lnf_w, N, C, K);
    lnf_d = tb.lt.ln;
  }
  if (m->cfg.task == SPRY_TASK_CLASSIFY) {
    int nc = m->cfg.n_class;
    float *logits = scratch, *logits_d = scratch + spry_align_floats((size_t)b->B * nc);
    float loss = spry_classifier_forward(logits, f.out, f.lnf, b->lengths, b->labels, head_weight(m), b->B, b->T, C,
                                         nc);
    const float *W_d = NULL;
    size_t ld = 0;
    if (m->head_block >= 0 && block_active(spec, m->head_block))
      W_d = block_tangents(m, spec, m->head_block, tb.blk, &ld) + (m->head_off - m->blocks[m->head_block].offset);
    spry_classifier_jvp(jvp, logits_d, lnf_d, f.lnf, head_weight(m), W_d, ld, f.out, b->lengths, b->labels, b->B,
                        b->T, C, nc, K);
    return loss;
  }
  lm_targets(b, m->targets);
  int Vc = m->cfg.lm_chunk < m->cfg.vocab_size ? m->cfg.lm_chunk : m->cfg.vocab_size;
  /* LM: every block is a layer, so a layer was active and lnf_d is non-zero. */
  SPRY_CHECK(lnf_d != NULL, "internal: LM jvp without a tangent at the final LayerNorm");
  return spry_lmloss_jvp(jvp, f.lnf, lnf_d, m->wte, m->targets, N, C, m->cfg.vocab_size, Vc, K, scratch);
}

float spry_model_jvp(spry_model *m, const spry_batch *b, const spry_tangent_spec *spec, float *jvp) {
  check_batch(m, b);
  SPRY_CHECK(spec->K >= 1, "spry_model_jvp: K = %d, need K >= 1", spec->K);
  SPRY_CHECK(!spec->tangents || spec->ldt >= m->d, "spry_model_jvp: explicit tangents need ldt >= d = %zu",
             m->d);
  /* Tangents 0..K-1 in passes of at most max_K (method.tangent_chunk): each pass reruns the primal, so the
   * workspace holds max_K tangents whatever K is. Tangent k keeps its identity (explicit row, k_list entry or
   * stream index key.k + k) in whichever pass it falls. The primal of every pass is the same computation, so
   * its loss is the first pass's bitwise. */
  float loss = 0;
  for (int done = 0; done < spec->K;) {
    spry_tangent_spec part = *spec;
    part.K = spec->K - done < m->max_K ? spec->K - done : m->max_K;
    if (spec->tangents) part.tangents = spec->tangents + (size_t)done * spec->ldt;
    if (spec->k_list) part.k_list = spec->k_list + done;
    else part.key.k = spec->key.k + (uint32_t)done;
    float l = jvp_pass(m, b, &part, jvp + done);
    if (done == 0) loss = l;
    done += part.K;
  }
  return loss;
}

/* ---- reverse mode ------------------------------------------------------------------------------------- */

typedef struct {
  float *dx, *dln, *dqkv, *datt, *dfc, *dgelu, *dh;
} bwd_bufs;

static bwd_bufs bwd_workspace(spry_model *m) {
  size_t N = (size_t)m->max_B * m->max_T, C = m->cfg.n_embd, r = m->cfg.lora_rank;
  size_t total = 3 * spry_align_floats(N * C) + spry_align_floats(N * 3 * C) + 2 * spry_align_floats(N * 4 * C) +
                 spry_align_floats(N * r);
  if (!m->bwd_scratch) m->bwd_scratch = spry_alloc_floats("bwd.scratch", total);
  float *cur = m->bwd_scratch;
  bwd_bufs g;
  g.dx = carve(&cur, N * C);
  g.dln = carve(&cur, N * C);
  g.datt = carve(&cur, N * C);
  g.dqkv = carve(&cur, N * 3 * C);
  g.dfc = carve(&cur, N * 4 * C);
  g.dgelu = carve(&cur, N * 4 * C);
  g.dh = carve(&cur, N * r);
  return g;
}

/* Stored activations for `n` layers; grows (never shrinks) with the number of layers a call needs. */
static float *bwd_store(spry_model *m, int n) {
  if (m->bwd_act && m->bwd_layers >= n) return m->bwd_act;
  spry_free(&m->bwd_act);
  m->bwd_act = spry_alloc_floats("bwd.activations", (size_t)n * layer_act_floats(m, 1));
  m->bwd_layers = n;
  return m->bwd_act;
}

/* Adapter backward: dinp += (may be NULL); dA, dB += into grad (trainable gradient, may be NULL: only dinp). */
static void lora_backward_slot(spry_model *m, const lora_slot *s, float *dinp, float *grad, float *dh,
                               const float *dout, const float *inp, const float *h, int N) {
  spry_lora_backward(dinp, grad ? grad + s->a_off : NULL, grad ? grad + s->b_off : NULL, dh, dout, inp, h,
                     m->w + s->a_off, m->w + s->b_off, m->lora_scale, N, s->in, m->cfg.lora_rank, s->n_out, s->ldo,
                     s->col);
}

/* Gradient of the frozen tensor at `param` (a pointer into m->frozen) inside gf, laid out like m->frozen. */
static float *frozen_grad(const spry_model *m, float *gf, const float *param) { return gf + (param - m->frozen); }

/* Reverse pass through layer l. On entry g->dx = d loss / d x_out; on exit d loss / d x_in when need_dx_in (else
 * unspecified). grad (trainable gradient, may be NULL) receives the adapters' dA, dB; gf (frozen gradients laid
 * out like m->frozen, may be NULL) the layer's weight, bias and LayerNorm gradients. All accumulate. */
static void layer_backward(spry_model *m, int l, const spry_batch *b, const layer_acts *a, const bwd_bufs *g,
                           float *grad, float *gf, int need_dx_in, float *scratch) {
  const layer_params *lp = &m->layers[l];
  int B = b->B, T = b->T, N = B * T, C = m->cfg.n_embd;
  size_t NC = (size_t)N * C;
#define GF(param) frozen_grad(m, gf, lp->param)
  /* MLP half: x_out = x_mid + proj(gelu(fc(ln2(x_mid)))); g->dx holds d/dx_out. */
  memset(g->dgelu, 0, sizeof(float) * NC * 4);
  spry_matmul_backward(g->dgelu, g->dx, lp->fcproj_w, N, 4 * C, C);
  if (gf) spry_matmul_backward_weight(GF(fcproj_w), GF(fcproj_b), g->dx, a->gelu, N, 4 * C, C);
  if (lp->lora[T_PROJ].present)
    lora_backward_slot(m, &lp->lora[T_PROJ], g->dgelu, grad, g->dh, g->dx, a->gelu, a->h[T_PROJ], N);
  memset(g->dfc, 0, sizeof(float) * NC * 4);
  spry_gelu_backward(g->dfc, g->dgelu, a->fc, NC * 4);
  memset(g->dln, 0, sizeof(float) * NC);
  spry_matmul_backward(g->dln, g->dfc, lp->fc_w, N, C, 4 * C);
  if (gf) spry_matmul_backward_weight(GF(fc_w), GF(fc_b), g->dfc, a->ln2, N, C, 4 * C);
  if (lp->lora[T_FC].present) lora_backward_slot(m, &lp->lora[T_FC], g->dln, grad, g->dh, g->dfc, a->ln2, a->h[T_FC], N);
  if (gf) spry_layernorm_backward_params(GF(ln2_w), GF(ln2_b), g->dln, a->x_mid, a->mean2, a->rstd2, N, C);
  spry_layernorm_backward(g->dx, g->dln, a->x_mid, a->mean2, a->rstd2, lp->ln2_w, N, C); /* now d/dx_mid */
  /* attention half: x_mid = x_in + proj(attn(qkv(ln1(x_in)))). */
  memset(g->datt, 0, sizeof(float) * NC);
  spry_matmul_backward(g->datt, g->dx, lp->proj_w, N, C, C);
  if (gf) spry_matmul_backward_weight(GF(proj_w), GF(proj_b), g->dx, a->attout, N, C, C);
  if (lp->lora[T_O].present) lora_backward_slot(m, &lp->lora[T_O], g->datt, grad, g->dh, g->dx, a->attout, a->h[T_O], N);
  memset(g->dqkv, 0, sizeof(float) * NC * 3);
  spry_attention_backward(g->dqkv, g->datt, a->qkv, a->att, b->lengths, m->cfg.causal, B, T, C, m->cfg.n_head,
                          scratch);
  if (gf) spry_matmul_backward_weight(GF(attn_w), GF(attn_b), g->dqkv, a->ln1, N, C, 3 * C);
  if (need_dx_in) {
    memset(g->dln, 0, sizeof(float) * NC);
    spry_matmul_backward(g->dln, g->dqkv, lp->attn_w, N, C, 3 * C);
  }
  for (int t = T_Q; t <= T_V; t++)
    if (lp->lora[t].present)
      lora_backward_slot(m, &lp->lora[t], need_dx_in ? g->dln : NULL, grad, g->dh, g->dqkv, a->ln1, a->h[t], N);
  if (need_dx_in) {
    if (gf) spry_layernorm_backward_params(GF(ln1_w), GF(ln1_b), g->dln, a->x_in, a->mean1, a->rstd1, N, C);
    spry_layernorm_backward(g->dx, g->dln, a->x_in, a->mean1, a->rstd1, lp->ln1_w, N, C);
  }
#undef GF
}

/* Forward storing the activations of layers first..L-1, then the reverse pass down to layer `first`.
 * grad (trainable, zeroed by the caller, may be NULL) and gf (frozen, zeroed by the caller, may be NULL; needs
 * first = 0 and the LM task) accumulate. Returns the loss. */
static float reverse_pass(spry_model *m, const spry_batch *b, int first, float *grad, float *gf) {
  int L = m->cfg.n_layer, B = b->B, T = b->T, N = B * T, C = m->cfg.n_embd;
  size_t NC = (size_t)N * C;
  fwd_bufs f = fwd_workspace(m);
  float *scratch = scratch_for(m, 1);
  int n_stored = L - first;
  layer_acts *st = NULL;
  if (n_stored > 0) {
    float *cur = bwd_store(m, n_stored);
    st = spry_alloc("bwd.scratch", sizeof(layer_acts) * (size_t)n_stored);
    for (int i = 0; i < n_stored; i++) carve_layer_acts(m, &cur, &st[i], 1);
  }
  embed(m, b, f.x);
  for (int l = 0; l < first; l++) layer_forward(m, l, b, f.x, f.proj, &f.la, scratch);
  for (int l = first; l < L; l++) layer_forward(m, l, b, f.x, f.proj, &st[l - first], scratch);
  float loss = head_forward(m, b, f.x, f.lnf, f.meanf, f.rstdf, f.out, scratch);

  bwd_bufs g = bwd_workspace(m);
  memset(g.dln, 0, sizeof(float) * NC);
  if (m->cfg.task == SPRY_TASK_CLASSIFY) {
    float *dW = m->head_block >= 0 ? grad + m->head_off : NULL;
    spry_classifier_backward(first < L ? g.dln : NULL, dW, f.lnf, head_weight(m), f.out, b->lengths, b->labels, B, T,
                             C, m->cfg.n_class);
  } else {
    int Vc = m->cfg.lm_chunk < m->cfg.vocab_size ? m->cfg.lm_chunk : m->cfg.vocab_size;
    spry_lmloss_backward_full(g.dln, gf ? frozen_grad(m, gf, m->wte) : NULL, f.lnf, m->wte, m->targets, f.out, N, C,
                              m->cfg.vocab_size, Vc, scratch);
  }
  if (first < L) {
    memset(g.dx, 0, sizeof(float) * NC);
    if (gf)
      spry_layernorm_backward_params(frozen_grad(m, gf, m->lnf_w), frozen_grad(m, gf, m->lnf_b), g.dln, f.x, f.meanf,
                                     f.rstdf, N, C);
    spry_layernorm_backward(g.dx, g.dln, f.x, f.meanf, f.rstdf, m->lnf_w, N, C);
  }
  for (int l = L - 1; l >= first; l--)
    layer_backward(m, l, b, &st[l - first], &g, grad, gf, l > first || gf != NULL, scratch);
  /* g.dx = d loss / d (wte[tok] + wpe[t]) */
  if (gf)
    spry_embed_backward(frozen_grad(m, gf, m->wte), frozen_grad(m, gf, m->wpe), g.dx, b->tokens, B, T, C);
  spry_free(&st);
  return loss;
}

float spry_model_backward(spry_model *m, const spry_batch *b, const unsigned char *active, float *grad) {
  check_batch(m, b);
  memset(grad, 0, sizeof(float) * m->d);
  int first = first_active_layer(m, active);
  if (first > m->cfg.n_layer) return spry_model_forward(m, b, NULL);
  float loss = reverse_pass(m, b, first, grad, NULL);
  /* Restrict to the active blocks: layers above the first active one were differentiated on the way down. */
  if (active)
    for (int blk = 0; blk < m->n_blocks; blk++)
      if (!active[blk]) memset(grad + m->blocks[blk].offset, 0, sizeof(float) * m->blocks[blk].size);
  return loss;
}

float spry_model_backward_full(spry_model *m, const spry_batch *b, float *grad_frozen) {
  SPRY_CHECK(m->cfg.task == SPRY_TASK_LM,
             "spry_model_backward_full: the model's task is classify; backbone gradients are implemented for the "
             "causal-LM task (pretraining) only");
  check_batch(m, b);
  memset(grad_frozen, 0, sizeof(float) * m->n_frozen);
  return reverse_pass(m, b, 0, NULL, grad_frozen);
}

/* ---- zeroth order ------------------------------------------------------------------------------------- */

/* w += scale * v_k on the active blocks: no copy of w, v_k regenerated block by block. */
static void perturb(spry_model *m, const spry_tangent_spec *spec, int k, float scale) {
  for (int blk = 0; blk < m->n_blocks; blk++)
    if (block_active(spec, blk)) tangent_axpy(m, spec, k, blk, scale, m->w);
}

void spry_model_zeroth(spry_model *m, const spry_batch *b, const spry_tangent_spec *spec, float eps, float *zo,
                       float *loss0) {
  SPRY_CHECK(eps > 0.0f && isfinite(eps), "zeroth-order eps = %g: must be finite and > 0", (double)eps);
  SPRY_CHECK(spec->K >= 1, "zeroth order: K = %d must be >= 1", spec->K);
  double mid = 0;
  for (int k = 0; k < spec->K; k++) {
    perturb(m, spec, k, eps);
    float fp = spry_model_forward(m, b, NULL);
    perturb(m, spec, k, -2.0f * eps);
    float fm = spry_model_forward(m, b, NULL);
    perturb(m, spec, k, eps);
    zo[k] = (fp - fm) / (2.0f * eps);
    mid += 0.5 * ((double)fp + fm);
  }
  if (loss0) *loss0 = (float)(mid / spec->K);
}
