/* spry/model.h -- the GPT-2 engine: frozen backbone + trainable LoRA adapters and task head, differentiated
 * three ways (forward mode with K tangents, reverse mode, zeroth order).
 *
 * Architecture: exactly GPT-2 (token + learned position embeddings, pre-LayerNorm blocks, multi-head attention
 * (causal, or bidirectional by option), MLP with tanh-GELU, final LayerNorm). Tasks:
 *   - SPRY_TASK_CLASSIFY: linear head "score.weight" (n_class, n_embd), no bias, on the last real token;
 *     mean cross-entropy over the batch;
 *   - SPRY_TASK_LM: head tied to the (frozen) token embedding; mean next-token cross-entropy over the real
 *     positions, the vocabulary softmax computed lm_chunk columns at a time.
 * Parameter names follow Hugging Face GPT-2 ("wte.weight", "h.0.attn.c_attn.weight", ...), Conv1D layout
 * (in, out). LoRA adapters (PEFT layout, A (r,in) random, B (out,r) zero, scale alpha/r) are named
 * "h.<l>.attn.c_attn.lora_<q|k|v>.{A,B}", "h.<l>.attn.c_proj.lora.{A,B}", "h.<l>.mlp.c_fc.lora.{A,B}",
 * "h.<l>.mlp.c_proj.lora.{A,B}".
 *
 * The trainable vector w (R^d) holds all adapters and the head, ordered by BLOCK: block l < n_layer is every
 * adapter of layer l, block n_layer (classification with a trainable head) is the head. A block is a
 * contiguous range of w: Spry assigns blocks to clients.
 *
 * Memory: one allocation per buffer family, labelled for the allocator report:
 *   "params" (frozen backbone), "trainable" (w), "fwd.activations" + "fwd.tangents" (forward mode: ONE layer's
 *   worth, reused layer after layer: independent of n_layer), "bwd.activations" (reverse mode: every layer from
 *   the first active block up), "bwd.scratch", "scratch" (attention and vocabulary chunks), "gradients" (d).
 * Workspaces are allocated on first use of a mode and kept; spry_model_release_workspaces() frees them.
 *
 * Determinism: results depend only on the inputs (weights, batch, tangent keys); kernels use fixed summation
 * orders, so the same call gives bitwise the same numbers on any rank.
 */
#ifndef SPRY_MODEL_H
#define SPRY_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "spry/rng.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { SPRY_TASK_CLASSIFY = 0, SPRY_TASK_LM = 1 } spry_task;

/* LoRA target projections (bit mask). */
enum {
  SPRY_LORA_Q = 1u << 0,    /* query part of attn.c_attn */
  SPRY_LORA_K = 1u << 1,    /* key part of attn.c_attn */
  SPRY_LORA_V = 1u << 2,    /* value part of attn.c_attn */
  SPRY_LORA_O = 1u << 3,    /* attn.c_proj */
  SPRY_LORA_FC = 1u << 4,   /* mlp.c_fc */
  SPRY_LORA_PROJ = 1u << 5, /* mlp.c_proj */
};
#define SPRY_LORA_ALL 0x3fu

typedef struct {
  int n_layer, n_head, n_embd, n_ctx, vocab_size;
  int causal;            /* 1: causal attention; 0: bidirectional (encoder-style) */
  spry_task task;
  int n_class;           /* classification only */
  int lora_rank;         /* r in [1, n_embd] */
  float lora_alpha;      /* scale = alpha / r */
  unsigned lora_targets; /* SPRY_LORA_* mask, non-empty */
  int head_trainable;    /* classification: the head is a trainable block */
  int lm_chunk;          /* vocabulary columns per chunk of the LM softmax */
} spry_model_config;

/* A config with GPT-2-like defaults for the given sizes (q,v LoRA rank 8, alpha 16, causal, classify). */
spry_model_config spry_model_config_default(void);
/* 0 if valid; else non-zero with a message naming the field, its value and what is allowed. */
int spry_model_config_check(const spry_model_config *cfg, char *err, size_t errlen);

typedef struct {
  char name[64];
  int ndim;
  int shape[2];
  size_t offset; /* floats: into the frozen parameters, or into w when trainable */
  size_t count;
  int trainable;
  int block; /* block id (trainable), -1 (frozen) */
} spry_param;

typedef struct {
  char name[32];   /* "layer.3" or "head" */
  size_t offset;   /* into w */
  size_t size;     /* d_l */
  int layer;       /* transformer layer of the block, n_layer for the head */
} spry_block;

/* A batch of right-padded sequences. */
typedef struct {
  int B, T;               /* T <= n_ctx: padded length */
  const int32_t *tokens;  /* (B,T) ids in [0, vocab) (padding entries are ignored but must be valid ids) */
  const int32_t *lengths; /* (B) real lengths in [1, T] */
  const int32_t *labels;  /* (B) classes in [0, n_class) (classification; NULL for LM) */
} spry_batch;

/* Which tangents the forward-mode and zeroth-order passes use.
 * Tangent k is the vector v_k in R^d whose entries on ACTIVE blocks are either read from
 * tangents + k*ldt (when tangents != NULL) or regenerated from the counter RNG as element i (global index in w)
 * of the stream  key with key.k = k_list[k] (when k_list != NULL, e.g. FwdLLM's selected candidates) or
 * key.k + k (otherwise)  (when tangents == NULL); entries on inactive blocks are zero. */
typedef struct {
  int K;
  const unsigned char *active; /* n_blocks flags; NULL = all blocks active */
  const float *tangents;       /* (K, ldt) explicit tangents, or NULL to regenerate from key */
  size_t ldt;
  spry_rng_key key;       /* purpose should be SPRY_RNG_TANGENT */
  const uint32_t *k_list; /* K stream indices, or NULL for key.k + 0..K-1 */
  spry_tangent_kind kind;
} spry_tangent_spec;

/* The key of tangent k of spec (see above). */
static inline spry_rng_key spry_tangent_key(const spry_tangent_spec *spec, int k) {
  spry_rng_key key = spec->key;
  key.k = spec->k_list ? spec->k_list[k] : spec->key.k + (uint32_t)k;
  return key;
}

typedef struct spry_model spry_model;

/* Create a model for batches up to max_B x max_T and up to max_K tangents in one forward-mode pass (more are
 * taken in several passes: spry_model_jvp). Backbone zeroed until initialised or loaded; w initialised by
 * spry_model_init_trainable. Fatal on invalid config (check it first). */
spry_model *spry_model_create(const spry_model_config *cfg, int max_B, int max_T, int max_K);
void spry_model_free(spry_model **m);
void spry_model_release_workspaces(spry_model *m);

const spry_model_config *spry_model_cfg(const spry_model *m);
int spry_model_n_params(const spry_model *m);
const spry_param *spry_model_params(const spry_model *m);
const spry_param *spry_model_find_param(const spry_model *m, const char *name);
int spry_model_n_blocks(const spry_model *m);
const spry_block *spry_model_blocks(const spry_model *m);
size_t spry_model_n_trainable(const spry_model *m); /* d */
size_t spry_model_n_frozen(const spry_model *m);
float *spry_model_w(spry_model *m);           /* trainable vector (d) */
float *spry_model_frozen(spry_model *m);      /* backbone (n_frozen) */
/* Address of a named parameter's values (frozen or trainable). */
float *spry_model_param_data(spry_model *m, const spry_param *p);

/* GPT-2 style random backbone: N(0, 0.02) weights (c_proj weights N(0, 0.02/sqrt(2 n_layer))), zero biases,
 * unit LayerNorm gains; keyed (seed, SPRY_RNG_INIT, client = 1, k = parameter index). */
void spry_model_init_backbone(spry_model *m, uint32_t seed);
/* LoRA init as PEFT: A ~ U(-1/sqrt(in), 1/sqrt(in)), B = 0; head N(0, 0.02); keyed (seed, INIT, client = 2). */
void spry_model_init_trainable(spry_model *m, uint32_t seed);

/* Loss of the batch. probs (B, n_class) receives the classifier's softmax when non-NULL (classification). */
float spry_model_forward(spry_model *m, const spry_batch *batch, float *probs);

/* LM task only: the loss of spry_model_forward, and logits (B*T*V floats, row (b,t) at (b*T+t)*V) =
 * LN_f(x_L) @ wte^T, the scores the tied LM head normalises. Rows t >= lengths[b] are computed from padding and
 * carry no meaning. For checking the engine against a reference implementation (tests/integration) and for
 * inspection: the training paths never materialise the full vocabulary. */
float spry_model_logits(spry_model *m, const spry_batch *batch, float *logits);

/* Forward mode: loss and jvp[k] = <grad_w loss, v_k> for the K tangents of spec (any K >= 1). Tangents start at
 * the lowest active block; only one layer's activations and tangents are held at any time. K > max_K runs in
 * ceil(K / max_K) passes of at most max_K tangents, each repeating the primal: memory of max_K tangents, time of
 * one more primal per extra pass (method.tangent_chunk). */
float spry_model_jvp(spry_model *m, const spry_batch *batch, const spry_tangent_spec *spec, float *jvp);

/* Reverse mode: loss and grad (d floats, overwritten) = d loss / d w restricted to the active blocks (zero
 * elsewhere); active NULL = all. Activations are stored from the lowest active block up. */
float spry_model_backward(spry_model *m, const spry_batch *batch, const unsigned char *active, float *grad);

/* Reverse mode over the BACKBONE (pretraining), LM task only: loss and grad_frozen (n_frozen floats, overwritten,
 * laid out like spry_model_frozen: tensor p at p->offset, the alignment padding between tensors left 0) =
 * d loss / d every frozen tensor: wte, wpe, every LayerNorm gain and bias, every c_attn / c_proj / c_fc /
 * mlp.c_proj weight and bias, ln_f. The LM head is tied to wte, so wte's gradient is the sum of the embedding
 * lookup's scatter-add and the head's share (spry_lmloss_backward_full). The adapters are part of the function
 * differentiated (their input gradients are included, so the result is exact for any w), but pretraining keeps
 * LoRA B = 0 (spry_model_init_trainable), where they contribute nothing; w itself gets no gradient here. Stores
 * every layer's activations, as spry_model_backward with all blocks active. */
float spry_model_backward_full(spry_model *m, const spry_batch *batch, float *grad_frozen);

/* Zeroth order, two-point: for each k, perturbs w in place to w + eps v_k and w - eps v_k (v_k regenerated from
 * the spec, never stored) and returns zo[k] = (f(w + eps v_k) - f(w - eps v_k)) / (2 eps); restores w (up to
 * fp32 rounding of w + eps v - 2 eps v + eps v, as MeZO). loss0 (may be NULL) receives the mean over k of
 * (f(w + eps v_k) + f(w - eps v_k)) / 2, an O(eps^2) estimate of f(w) that costs no extra pass. */
void spry_model_zeroth(spry_model *m, const spry_batch *batch, const spry_tangent_spec *spec, float eps,
                       float *zo, float *loss0);

/* The forward gradient g_hat = (1/K) sum_k jvp[k] v_k over the active blocks (zero elsewhere), with v_k
 * regenerated from the spec block by block: how a client forms its estimate and how the server rebuilds it from
 * the K scalars. Summation runs k = 0..K-1 in order, so both sides get bitwise the same vector. g_hat (d). */
void spry_forward_gradient(const spry_model *m, const spry_tangent_spec *spec, const float *jvp, float *g_hat);

/* Materialise tangent k of spec over the whole of w (zero on inactive blocks): out (d). */
void spry_tangent_materialise(const spry_model *m, const spry_tangent_spec *spec, int k, float *out);

#ifdef __cplusplus
}
#endif
#endif
