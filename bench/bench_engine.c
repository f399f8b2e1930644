/* bench_engine -- the engine's side of the benchmark suite (bench/run_suite.py drives it; bench/README.md).
 *
 * A benchmark is a program that reports numbers: every subcommand prints ONE JSON object on stdout (rank 0) and
 * nothing else there; progress goes to stderr. Times are wall-clock (spry_now), in milliseconds.
 *
 *   bench_engine sgemm  [--threads N] [--shapes MxKxN,...] [--batch_ms 200]
 *                                                                single-precision GEMM rate of this machine
 *   bench_engine step   --size S [--B 8] [--T n] [--threads N] [--reps R] [--warmup W] [--methods list]
 *                       [--clients M]                            step cost per method, methods interleaved
 *   bench_engine export --size S --dir DIR [--B] [--T] [--K 4]   weights + batch + tangents + the engine's loss,
 *                                                                jvp and gradient, for bench/torch_peer.py
 *   bench_engine serve  --size S [--B] [--T] [--K 16]             runs methods named on stdin, one at a time, and
 *                                                                prints their times: the PyTorch peer interleaves
 *   bench_engine mem    --size S --method M [--n_layer L] [--T n] [--B] [--threads N] [--lora_rank r]
 *                       [--chunk C]                              allocator peak and max RSS of one method
 *                                                                (jvpK --chunk C: K tangents in passes of C)
 *   bench_engine fed    --rounds R [--warmup_rounds W] [--set section.key=value ...]
 *                                                                federated simulation throughput (under mpirun)
 *
 * Methods: fwd (loss only), jvpK (forward mode, K tangents, all blocks active), jvpK@spry (the same averaged over
 * the clients of one round of Spry's block assignment: each client's active blocks), bwd (reverse mode, all
 * blocks), zo (two-point zeroth order, K = 1: two forwards), gemm (not a method: the forward's frozen-projection
 * sgemm calls alone, back to back -- the machine's rate on exactly these GEMMs, measured between the methods).
 *
 * FLOP model (flops_* below; written out in bench/RESULTS.md): a matmul (M,K)x(K,N) counts 2MKN; attention
 * counts its four (T,T)-sized matmuls per head over the full T x T (every sequence has length T here, and the
 * kernels compute the full rectangle); element-wise work (LayerNorm, GELU, softmax, residuals, RNG) counts 0.
 */
#include <cblas.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "spry/config.h"
#include "spry/core.h"
#include "spry/federation.h"
#include "spry/model.h"
#include "spry/mpi_util.h"
#include "spry/plan.h"
#include "spry/rng.h"

/* ---- command line --------------------------------------------------------------------------------------- */

typedef struct {
  int argc;
  char **argv;
} args;

static const char *opt_str(const args *a, const char *name, const char *def) {
  for (int i = 2; i + 1 < a->argc; i++)
    if (strcmp(a->argv[i], name) == 0) return a->argv[i + 1];
  return def;
}

static int opt_int(const args *a, const char *name, int def) {
  const char *s = opt_str(a, name, NULL);
  if (!s) return def;
  char *end;
  long v = strtol(s, &end, 10);
  SPRY_CHECK(*end == '\0' && v >= 0 && v < 1000000000, "option %s = '%s': expected a whole number >= 0", name, s);
  return (int)v;
}

/* ---- model sizes ---------------------------------------------------------------------------------------- */

typedef struct {
  const char *name;
  int n_layer, n_head, n_embd, n_ctx, vocab, T;
} size_preset;

/* tiny = the configuration defaults (docs/configuration.md); mid = in between; gpt2s = GPT-2 small's shapes
 * (12 layers, 768 wide, 12 heads, its 50257-token vocabulary) with the context cut to the benchmark's T.
 * gpt2m / gpt2l / gpt2xl: GPT-2 medium (24 x 1024, 16 heads; RoBERTa-large's depth and width), large (36 x 1280,
 * 20 heads) and XL (48 x 1600, 25 heads), used by `mem` for the paper-scale memory table (random weights). */
static const size_preset sizes[] = {
    {"tiny", 4, 4, 128, 64, 512, 64},
    {"mid", 6, 6, 384, 128, 16384, 128},
    {"gpt2s", 12, 12, 768, 512, 50257, 128},
    {"gpt2m", 24, 16, 1024, 1024, 50257, 128},
    {"gpt2l", 36, 20, 1280, 1024, 50257, 128},
    {"gpt2xl", 48, 25, 1600, 1024, 50257, 128},
};

static size_preset find_size(const args *a) {
  const char *name = opt_str(a, "--size", "tiny");
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
    if (strcmp(sizes[i].name, name) == 0) {
      size_preset s = sizes[i];
      s.n_layer = opt_int(a, "--n_layer", s.n_layer);
      s.T = opt_int(a, "--T", s.T);
      if (s.T > s.n_ctx) s.n_ctx = s.T;
      return s;
    }
  spry_fatal("--size %s: unknown (allowed: tiny, mid, gpt2s, gpt2m, gpt2l, gpt2xl)", name);
}

static spry_model_config model_config(const size_preset *s) {
  spry_model_config c = spry_model_config_default(); /* q,v LoRA rank 8, alpha 16, causal, 4 classes, head */
  c.n_layer = s->n_layer;
  c.n_head = s->n_head;
  c.n_embd = s->n_embd;
  c.n_ctx = s->n_ctx;
  c.vocab_size = s->vocab;
  return c;
}

/* A full-length batch (every sequence has length T) of random tokens and labels. */
typedef struct {
  int32_t *tokens, *lengths, *labels;
  spry_batch b;
} bench_batch;

static bench_batch make_batch(const spry_model_config *c, int B, int T, uint32_t seed) {
  bench_batch bb;
  bb.tokens = malloc(sizeof(int32_t) * (size_t)B * T);
  bb.lengths = malloc(sizeof(int32_t) * (size_t)B);
  bb.labels = malloc(sizeof(int32_t) * (size_t)B);
  spry_rng_key key = {.seed = seed, .purpose = SPRY_RNG_DATA, .client = 77};
  double *u = malloc(sizeof(double) * ((size_t)B * T + B));
  spry_rng_uniform(key, 0, (size_t)B * T + B, u);
  for (size_t i = 0; i < (size_t)B * T; i++) bb.tokens[i] = (int32_t)(u[i] * c->vocab_size);
  for (int i = 0; i < B; i++) {
    bb.lengths[i] = T;
    bb.labels[i] = (int32_t)(u[(size_t)B * T + i] * c->n_class);
  }
  free(u);
  bb.b = (spry_batch){.B = B, .T = T, .tokens = bb.tokens, .lengths = bb.lengths, .labels = bb.labels};
  return bb;
}

static void free_batch(bench_batch *bb) {
  free(bb->tokens);
  free(bb->lengths);
  free(bb->labels);
}

/* Random backbone and adapters; LoRA B gets N(0, 0.02) instead of PEFT's zeros so that every adapter term of the
 * forward and of the derivatives is exercised (and compared against PyTorch). */
static spry_model *make_model(const spry_model_config *c, int B, int T, int max_K) {
  spry_model *m = spry_model_create(c, B, T, max_K);
  spry_model_init_backbone(m, 1);
  spry_model_init_trainable(m, 2);
  float *w = spry_model_w(m);
  const spry_param *p = spry_model_params(m);
  for (int i = 0; i < spry_model_n_params(m); i++) {
    size_t n = strlen(p[i].name);
    if (!p[i].trainable || n < 2 || strcmp(p[i].name + n - 2, ".B") != 0) continue;
    spry_rng_key key = {.seed = 3, .purpose = SPRY_RNG_INIT, .client = 9, .k = (uint32_t)i};
    spry_rng_fill(key, SPRY_TANGENT_GAUSSIAN, 0, p[i].count, w + p[i].offset);
    for (size_t j = 0; j < p[i].count; j++) w[p[i].offset + j] *= 0.02f;
  }
  return m;
}

static spry_rng_key tangent_key(uint32_t step) {
  return (spry_rng_key){.seed = 1, .purpose = SPRY_RNG_TANGENT, .round = 0, .client = 5, .step = step, .k = 0};
}

/* ---- FLOP model ------------------------------------------------------------------------------------------ */

typedef struct {
  double N, B, T, C, NH, r, V, ncls;
  int L, task;
  double lora_in[6], lora_out[6];
  int lora_present[6];
} flop_shape;

static flop_shape flop_shape_of(const spry_model_config *c, int B, int T) {
  flop_shape f = {.N = (double)B * T, .B = B, .T = T, .C = c->n_embd, .NH = c->n_head, .r = c->lora_rank,
                  .V = c->vocab_size, .ncls = c->n_class, .L = c->n_layer, .task = c->task};
  static const int in_mult[6] = {1, 1, 1, 1, 1, 4}, out_mult[6] = {1, 1, 1, 1, 4, 1};
  for (int t = 0; t < 6; t++) {
    f.lora_present[t] = (c->lora_targets >> t) & 1u;
    f.lora_in[t] = in_mult[t] * f.C;
    f.lora_out[t] = out_mult[t] * f.C;
  }
  return f;
}

static double mm(double m, double k, double n) { return 2.0 * m * k * n; }

/* One layer's forward: four frozen projections, the adapters, attention's QK^T and PV. */
static double flops_layer_fwd(const flop_shape *f) {
  double C = f->C, N = f->N;
  double x = mm(N, C, 3 * C) + mm(N, C, C) + mm(N, C, 4 * C) + mm(N, 4 * C, C);
  for (int t = 0; t < 6; t++)
    if (f->lora_present[t]) x += mm(N, f->lora_in[t], f->r) + mm(N, f->r, f->lora_out[t]);
  x += 2 * mm(f->B * f->T, f->T, C); /* sum over heads of (T,hs)x(hs,T) and (T,T)x(T,hs) */
  return x;
}

static double flops_head_fwd(const flop_shape *f) {
  return f->task == SPRY_TASK_CLASSIFY ? mm(f->B, f->C, f->ncls) : mm(f->N, f->C, f->V);
}

static double flops_forward(const flop_shape *f) { return f->L * flops_layer_fwd(f) + flops_head_fwd(f); }

/* Forward mode: the primal forward, plus per tangent, from the first active layer up: the frozen projections
 * (all but c_attn at the first active layer, whose input tangent is zero), the adapter terms (input-tangent terms
 * above the first active layer, weight-tangent terms on active layers), the four attention matmuls of
 * attention_jvp, and the head's tangent. */
static double flops_jvp(const flop_shape *f, int K, const unsigned char *active, int n_blocks) {
  int first = f->L + 1;
  for (int b = 0; b < n_blocks; b++)
    if (!active || active[b]) {
      first = b < f->L ? b : f->L;
      break;
    }
  double C = f->C, N = f->N, tan = 0;
  for (int l = first; l < f->L; l++) {
    int act = !active || active[l], above = l > first;
    if (above) tan += mm(N, C, 3 * C);
    tan += mm(N, C, C) + mm(N, C, 4 * C) + mm(N, 4 * C, C);
    for (int t = 0; t < 6; t++) {
      if (!f->lora_present[t]) continue;
      int inp_d = t <= 2 ? above : 1; /* q,k,v read ln1 (zero tangent at the first layer); o, fc, proj do not */
      if (inp_d) tan += mm(N, f->lora_in[t], f->r);
      if (act) tan += mm(N, f->lora_in[t], f->r) + mm(N, f->r, f->lora_out[t]);
      if (inp_d || act) tan += mm(N, f->r, f->lora_out[t]);
    }
    tan += 4 * mm(f->B * f->T, f->T, C);
  }
  if (f->task == SPRY_TASK_CLASSIFY) tan += 2 * mm(f->B, C, f->ncls);
  else tan += mm(N, C, f->V);
  return flops_forward(f) + K * tan;
}

/* Reverse mode over all blocks: the forward, then per layer the input gradients through the frozen projections
 * (not c_attn's at layer 0: nothing below needs it), the adapters' four matmuls (three where dinp is not needed),
 * attention's four matmuls, and the head (LM: logits recomputed, then dh). */
static double flops_backward(const flop_shape *f) {
  double C = f->C, N = f->N, g = 0;
  for (int l = 0; l < f->L; l++) {
    g += mm(N, 4 * C, C) + mm(N, C, 4 * C) + mm(N, C, C) + (l > 0 ? mm(N, C, 3 * C) : 0);
    for (int t = 0; t < 6; t++) {
      if (!f->lora_present[t]) continue;
      int dinp = t <= 2 ? l > 0 : 1;
      g += mm(f->lora_out[t], N, f->r) + mm(N, f->lora_out[t], f->r) + mm(f->r, N, f->lora_in[t]);
      if (dinp) g += mm(N, f->r, f->lora_in[t]);
    }
    g += 4 * mm(f->B * f->T, f->T, C);
  }
  g += f->task == SPRY_TASK_CLASSIFY ? 2 * mm(f->B, C, f->ncls) : 2 * mm(N, C, f->V);
  return flops_forward(f) + g;
}

/* ---- timing helpers -------------------------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(const double *x, int n) {
  double *s = malloc(sizeof(double) * (size_t)n);
  memcpy(s, x, sizeof(double) * (size_t)n);
  qsort(s, (size_t)n, sizeof(double), cmp_double);
  double m = n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
  free(s);
  return m;
}

static void print_array(const char *name, const double *x, int n, const char *fmt) {
  printf("\"%s\": [", name);
  for (int i = 0; i < n; i++) {
    printf(i ? ", " : "");
    printf(fmt, x[i]);
  }
  printf("]");
}

static long max_rss_kib(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

static int set_threads(const args *a) {
  int n = opt_int(a, "--threads", 1);
  if (n > 0) openblas_set_num_threads(n);
  return n;
}

/* ---- sgemm ------------------------------------------------------------------------------------------------ */

/* Seconds of one C (M,N) = A (M,K) B (K,N), median over 5 batches each >= ~0.2 s (after one warm-up batch). */
static double sgemm_batch_seconds = 0.2;

static double sgemm_rate(int M, int K, int N) {
  float *A = spry_alloc_floats("bench", (size_t)M * K), *Bm = spry_alloc_floats("bench", (size_t)K * N);
  float *Cm = spry_alloc_floats("bench", (size_t)M * N);
  for (size_t i = 0; i < (size_t)M * K; i++) A[i] = (float)((i * 7919u) % 1000) * 1e-3f - 0.5f;
  for (size_t i = 0; i < (size_t)K * N; i++) Bm[i] = (float)((i * 104729u) % 1000) * 1e-3f - 0.5f;
  double flop = mm(M, K, N);
  int reps = 1;
  for (;;) { /* calibrate: a batch takes >= 0.2 s */
    double t0 = spry_now();
    for (int i = 0; i < reps; i++)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, A, K, Bm, N, 0.0f, Cm, N);
    if (spry_now() - t0 > sgemm_batch_seconds || reps > (1 << 20)) break;
    reps *= 2;
  }
  double rate[5];
  for (int b = 0; b < 5; b++) {
    double t0 = spry_now();
    for (int i = 0; i < reps; i++)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, A, K, Bm, N, 0.0f, Cm, N);
    rate[b] = flop * reps / (spry_now() - t0) * 1e-9;
  }
  spry_free(&A);
  spry_free(&Bm);
  spry_free(&Cm);
  return median(rate, 5);
}

static int cmd_sgemm(const args *a) {
  int threads = set_threads(a);
  sgemm_batch_seconds = opt_int(a, "--batch_ms", 200) * 1e-3;
  const char *shapes = opt_str(a, "--shapes", "256x768x768,1024x768x3072,1024x3072x768,1024x768x16,512x128x512");
  printf("{\"command\": \"sgemm\", \"threads\": %d, \"rates\": [", threads);
  char buf[1024];
  snprintf(buf, sizeof buf, "%s", shapes);
  int first = 1;
  for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
    int M, K, N;
    SPRY_CHECK(sscanf(tok, "%dx%dx%d", &M, &K, &N) == 3, "--shapes item '%s': expected MxKxN", tok);
    double g = sgemm_rate(M, K, N);
    fprintf(stderr, "sgemm %dx%d . %dx%d: %.1f GFLOP/s (%d threads)\n", M, K, K, N, g, threads);
    printf("%s{\"M\": %d, \"K\": %d, \"N\": %d, \"gflops\": %.2f}", first ? "" : ", ", M, K, N, g);
    first = 0;
  }
  printf("]}\n");
  return 0;
}

/* ---- step cost per method --------------------------------------------------------------------------------- */

typedef enum { M_FWD, M_JVP, M_JVP_SPRY, M_BWD, M_ZO, M_GEMM } method_kind;

typedef struct {
  char name[32];
  method_kind kind;
  int K;
  double *ms; /* per rep (M_JVP_SPRY: the mean over the round's clients) */
  int n;      /* recorded reps */
  double flops;
  double loss; /* last value, a sanity check that the runs compute the same thing */
} method;

/* Parse "fwd,jvp1,jvp4,jvp16,jvp1@spry,...,bwd,zo". */
static int parse_methods(const char *list, method *out, int cap) {
  char buf[512];
  snprintf(buf, sizeof buf, "%s", list);
  int n = 0;
  for (char *tok = strtok(buf, ","); tok && n < cap; tok = strtok(NULL, ",")) {
    method *m = &out[n++];
    memset(m, 0, sizeof *m);
    snprintf(m->name, sizeof m->name, "%s", tok);
    m->K = 1;
    if (strcmp(tok, "fwd") == 0) m->kind = M_FWD;
    else if (strcmp(tok, "bwd") == 0) m->kind = M_BWD;
    else if (strcmp(tok, "zo") == 0) m->kind = M_ZO;
    else if (strcmp(tok, "gemm") == 0) m->kind = M_GEMM;
    else if (strncmp(tok, "jvp", 3) == 0) {
      char *end;
      m->K = (int)strtol(tok + 3, &end, 10);
      SPRY_CHECK(m->K >= 1 && (*end == '\0' || strcmp(end, "@spry") == 0), "--methods item '%s' not understood",
                 tok);
      m->kind = *end ? M_JVP_SPRY : M_JVP;
    } else
      spry_fatal("--methods item '%s': allowed fwd, jvpK, jvpK@spry, bwd, zo, gemm", tok);
  }
  return n;
}

typedef struct {
  spry_model *m;
  const spry_batch *b;
  float *grad, *jvp;
  float *gemm_in, *gemm_out; /* (N, 4C) each: the gemm pseudo-method's operands */
  int n_slots;
  unsigned char **slot_active; /* per client of the round: its active blocks */
} step_ctx;

/* Run one method once; returns milliseconds (M_JVP_SPRY: mean over the round's clients). */
static double run_method(step_ctx *c, method *me, uint32_t step) {
  spry_tangent_spec spec = {.K = me->K, .key = tangent_key(step), .kind = SPRY_TANGENT_GAUSSIAN};
  double t0 = spry_now();
  switch (me->kind) {
    case M_FWD: me->loss = spry_model_forward(c->m, c->b, NULL); break;
    case M_JVP: me->loss = spry_model_jvp(c->m, c->b, &spec, c->jvp); break;
    case M_BWD: me->loss = spry_model_backward(c->m, c->b, NULL, c->grad); break;
    case M_ZO: {
      float loss0;
      spry_model_zeroth(c->m, c->b, &spec, 1e-3f, c->jvp, &loss0);
      me->loss = loss0;
      break;
    }
    case M_GEMM: { /* the forward's frozen projections alone: the same sgemm calls with nothing in between */
      const spry_model_config *mc = spry_model_cfg(c->m);
      int N = c->b->B * c->b->T, C = mc->n_embd;
      static const char *const names[4] = {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"};
      static const int cin[4] = {1, 1, 1, 4}, cout[4] = {3, 1, 4, 1};
      for (int l = 0; l < mc->n_layer; l++)
        for (int i = 0; i < 4; i++) {
          char name[64];
          snprintf(name, sizeof name, "h.%d.%s.weight", l, names[i]);
          const float *W = spry_model_param_data(c->m, spry_model_find_param(c->m, name));
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, cout[i] * C, cin[i] * C, 1.0f, c->gemm_in,
                      cin[i] * C, W, cout[i] * C, 0.0f, c->gemm_out, cout[i] * C);
        }
      me->loss = c->gemm_out[0];
      break;
    }
    case M_JVP_SPRY:
      for (int j = 0; j < c->n_slots; j++) {
        spec.active = c->slot_active[j];
        me->loss = spry_model_jvp(c->m, c->b, &spec, c->jvp);
      }
      return (spry_now() - t0) * 1e3 / c->n_slots;
  }
  return (spry_now() - t0) * 1e3;
}

/* The active blocks of each client of round 0 of a Spry run with `clients` clients per round (round-robin
 * assignment, trainable head as the last block, as the configuration defaults). */
static unsigned char **round_assignment(const spry_model *m, int clients, int *n_slots) {
  int L = spry_model_n_blocks(m);
  spry_plan_config pc = {.n_clients = clients < 20 ? 20 : clients, .clients_per_round = clients, .n_blocks = L,
                         .n_ranks = 1, .split_blocks = true, .random_assign = false,
                         .head_is_last = spry_model_cfg(m)->task == SPRY_TASK_CLASSIFY &&
                                         spry_model_cfg(m)->head_trainable,
                         .head_shared = false, .seed = 1};
  spry_plan *p = spry_plan_create(&pc);
  spry_plan_build(p, 0);
  unsigned char **act = malloc(sizeof(unsigned char *) * (size_t)clients);
  for (int j = 0; j < clients; j++) {
    act[j] = malloc((size_t)L);
    for (int l = 0; l < L; l++) act[j][l] = spry_plan_trains(p, j, l);
  }
  spry_plan_free(&p);
  *n_slots = clients;
  return act;
}

static void print_model(const spry_model *m, const size_preset *s, int B, int T) {
  const spry_model_config *c = spry_model_cfg(m);
  printf("\"size\": \"%s\", \"model\": {\"n_layer\": %d, \"n_head\": %d, \"n_embd\": %d, \"n_ctx\": %d, "
         "\"vocab_size\": %d, \"n_class\": %d, \"lora_rank\": %d, \"lora_targets\": %u, \"n_frozen\": %zu, "
         "\"n_trainable\": %zu, \"n_blocks\": %d}, \"B\": %d, \"T\": %d",
         s->name, c->n_layer, c->n_head, c->n_embd, c->n_ctx, c->vocab_size, c->n_class, c->lora_rank,
         c->lora_targets, spry_model_n_frozen(m), spry_model_n_trainable(m), spry_model_n_blocks(m), B, T);
}

static int cmd_step(const args *a) {
  int threads = set_threads(a);
  size_preset s = find_size(a);
  int B = opt_int(a, "--B", 8), T = s.T;
  int reps = opt_int(a, "--reps", 5), warmup = opt_int(a, "--warmup", 1), clients = opt_int(a, "--clients", 6);
  /* jvpK@spry runs every client of the round per rep (6 jvps): at large sizes fewer reps keep the suite short.
   * They get no warm-up rep of their own when spry_reps < reps (jvpK warms the same workspaces). */
  int spry_reps = opt_int(a, "--spry_reps", reps);
  if (spry_reps > reps) spry_reps = reps;
  method me[32];
  int n_me = parse_methods(
      opt_str(a, "--methods", "fwd,jvp1,jvp4,jvp16,jvp1@spry,jvp4@spry,jvp16@spry,bwd,zo"), me, 32);
  int max_K = 1;
  for (int i = 0; i < n_me; i++) max_K = me[i].K > max_K ? me[i].K : max_K;
  spry_model_config cfg = model_config(&s);
  spry_model *m = make_model(&cfg, B, T, max_K);
  bench_batch bb = make_batch(&cfg, B, T, 11);
  step_ctx c = {.m = m, .b = &bb.b};
  c.grad = spry_alloc_floats("bench", spry_model_n_trainable(m));
  c.jvp = spry_alloc_floats("bench", (size_t)max_K);
  c.slot_active = round_assignment(m, clients, &c.n_slots);
  c.gemm_in = spry_alloc_floats("bench", (size_t)B * T * 4 * cfg.n_embd);
  c.gemm_out = spry_alloc_floats("bench", (size_t)B * T * 4 * cfg.n_embd);
  for (size_t i = 0; i < (size_t)B * T * 4 * cfg.n_embd; i++) c.gemm_in[i] = (float)(i % 97) * 0.01f - 0.5f;
  flop_shape fs = flop_shape_of(&cfg, B, T);
  for (int i = 0; i < n_me; i++) {
    me[i].ms = calloc((size_t)reps, sizeof(double));
    switch (me[i].kind) {
      case M_FWD: me[i].flops = flops_forward(&fs); break;
      case M_JVP: me[i].flops = flops_jvp(&fs, me[i].K, NULL, spry_model_n_blocks(m)); break;
      case M_JVP_SPRY:
        for (int j = 0; j < c.n_slots; j++)
          me[i].flops += flops_jvp(&fs, me[i].K, c.slot_active[j], spry_model_n_blocks(m)) / c.n_slots;
        break;
      case M_BWD: me[i].flops = flops_backward(&fs); break;
      case M_ZO: me[i].flops = 2 * flops_forward(&fs); break;
      case M_GEMM: me[i].flops = fs.L * 24.0 * fs.N * fs.C * fs.C; break;
    }
  }
  /* Interleaved: every rep runs every method once, in a rotating order, so slow phases of a shared machine hit
   * all methods alike. Warm-up reps allocate the workspaces and are not recorded. */
  for (int r = -warmup; r < reps; r++) {
    for (int i0 = 0; i0 < n_me; i0++) {
      int i = (i0 + (r < 0 ? 0 : r)) % n_me;
      if (me[i].kind == M_JVP_SPRY && (r >= spry_reps || (r < 0 && spry_reps < reps))) continue;
      double ms = run_method(&c, &me[i], (uint32_t)(r + warmup));
      if (r >= 0) me[i].ms[me[i].n++] = ms;
    }
    fprintf(stderr, "step %s: rep %d/%d done\n", s.name, r + 1, reps);
  }
  printf("{\"command\": \"step\", \"threads\": %d, ", threads);
  print_model(m, &s, B, T);
  printf(", \"reps\": %d, \"spry_reps\": %d, \"warmup\": %d, \"clients\": %d, \"methods\": [", reps, spry_reps,
         warmup, c.n_slots);
  for (int i = 0; i < n_me; i++) {
    double med = me[i].n ? median(me[i].ms, me[i].n) : NAN;
    printf("%s\n  {\"name\": \"%s\", \"K\": %d, \"flops\": %.6e, \"median_ms\": %.4f, \"gflops\": %.3f, "
           "\"loss\": %.7g, ",
           i ? "," : "", me[i].name, me[i].K, me[i].flops, med, me[i].flops / med * 1e-6, me[i].loss);
    print_array("ms", me[i].ms, me[i].n, "%.4f");
    printf("}");
    free(me[i].ms);
  }
  printf("]}\n");
  for (int j = 0; j < c.n_slots; j++) free(c.slot_active[j]);
  free(c.slot_active);
  spry_free(&c.grad);
  spry_free(&c.jvp);
  spry_free(&c.gemm_in);
  spry_free(&c.gemm_out);
  free_batch(&bb);
  spry_model_free(&m);
  return 0;
}

/* ---- serve: the engine side of an interleaved comparison ------------------------------------------------- */

/* Builds the model and batch exactly as `export` does, prints {"ready": ...}, then reads lines "METHOD" (fwd, jvpK,
 * bwd, zo) from stdin, runs that method once and prints {"name": ..., "ms": ...}; "quit" or EOF ends. The PyTorch
 * peer drives it so that the two implementations alternate method by method in the same minutes of a shared
 * machine (bench/torch_peer.py --engine). */
static int cmd_serve(const args *a) {
  int threads = set_threads(a);
  size_preset s = find_size(a);
  int B = opt_int(a, "--B", 8), T = s.T, max_K = opt_int(a, "--K", 16);
  spry_model_config cfg = model_config(&s);
  spry_model *m = make_model(&cfg, B, T, max_K);
  bench_batch bb = make_batch(&cfg, B, T, 11);
  step_ctx c = {.m = m, .b = &bb.b};
  c.grad = spry_alloc_floats("bench", spry_model_n_trainable(m));
  c.jvp = spry_alloc_floats("bench", (size_t)max_K);
  printf("{\"ready\": 1, \"threads\": %d, \"size\": \"%s\", \"loss\": %.9g}\n", threads, s.name,
         (double)spry_model_forward(m, &bb.b, NULL));
  fflush(stdout);
  char line[256];
  uint32_t step = 1;
  while (fgets(line, sizeof line, stdin)) {
    line[strcspn(line, "\r\n")] = '\0';
    if (strcmp(line, "quit") == 0) break;
    method me;
    parse_methods(line, &me, 1);
    SPRY_CHECK(me.kind != M_JVP_SPRY && me.K <= max_K, "serve: method '%s' not served (K <= %d, no @spry)", line,
               max_K);
    double ms = run_method(&c, &me, step++);
    printf("{\"name\": \"%s\", \"ms\": %.4f, \"loss\": %.9g}\n", me.name, ms, me.loss);
    fflush(stdout);
  }
  spry_free(&c.grad);
  spry_free(&c.jvp);
  free_batch(&bb);
  spry_model_free(&m);
  return 0;
}

/* ---- export for the PyTorch peer ------------------------------------------------------------------------- */

static void write_bin(const char *dir, const char *name, const void *data, size_t bytes) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "wb");
  SPRY_CHECK(f, "cannot write %s", path);
  SPRY_CHECK(fwrite(data, 1, bytes, f) == bytes, "short write to %s", path);
  fclose(f);
}

/* DIR/frozen.f32, w.f32 (the parameter table says where each tensor lives), tokens/lengths/labels .i32,
 * tangents.f32 (K, d) materialised from the keys the engine used, grad.f32 (d); DIR/model.json holds the
 * configuration, the parameter table and the engine's loss and jvps. */
static int cmd_export(const args *a) {
  set_threads(a);
  size_preset s = find_size(a);
  int B = opt_int(a, "--B", 8), T = s.T, K = opt_int(a, "--K", 4);
  const char *dir = opt_str(a, "--dir", NULL);
  SPRY_CHECK(dir, "export: --dir DIR is required");
  mkdir(dir, 0755);
  spry_model_config cfg = model_config(&s);
  spry_model *m = make_model(&cfg, B, T, K);
  bench_batch bb = make_batch(&cfg, B, T, 11);
  size_t d = spry_model_n_trainable(m);
  spry_tangent_spec spec = {.K = K, .key = tangent_key(0), .kind = SPRY_TANGENT_GAUSSIAN};
  float *tan = spry_alloc_floats("bench", (size_t)K * d), *grad = spry_alloc_floats("bench", d);
  for (int k = 0; k < K; k++) spry_tangent_materialise(m, &spec, k, tan + (size_t)k * d);
  float jvp[64], loss_f, loss_j, loss_b;
  SPRY_CHECK(K <= 64, "export: K = %d > 64", K);
  loss_f = spry_model_forward(m, &bb.b, NULL);
  loss_j = spry_model_jvp(m, &bb.b, &spec, jvp);
  loss_b = spry_model_backward(m, &bb.b, NULL, grad);
  write_bin(dir, "frozen.f32", spry_model_frozen(m), sizeof(float) * spry_model_n_frozen(m));
  write_bin(dir, "w.f32", spry_model_w(m), sizeof(float) * d);
  write_bin(dir, "tokens.i32", bb.tokens, sizeof(int32_t) * (size_t)B * T);
  write_bin(dir, "lengths.i32", bb.lengths, sizeof(int32_t) * (size_t)B);
  write_bin(dir, "labels.i32", bb.labels, sizeof(int32_t) * (size_t)B);
  write_bin(dir, "tangents.f32", tan, sizeof(float) * (size_t)K * d);
  write_bin(dir, "grad.f32", grad, sizeof(float) * d);
  char path[1024];
  snprintf(path, sizeof path, "%s/model.json", dir);
  FILE *f = fopen(path, "w");
  SPRY_CHECK(f, "cannot write %s", path);
  const spry_model_config *c = spry_model_cfg(m);
  fprintf(f, "{\"size\": \"%s\", \"B\": %d, \"T\": %d, \"K\": %d,\n", s.name, B, T, K);
  fprintf(f, " \"config\": {\"n_layer\": %d, \"n_head\": %d, \"n_embd\": %d, \"n_ctx\": %d, \"vocab_size\": %d, "
             "\"causal\": %d, \"task\": \"%s\", \"n_class\": %d, \"lora_rank\": %d, \"lora_alpha\": %.9g, "
             "\"lora_targets\": %u, \"head_trainable\": %d, \"layernorm_eps\": 1e-5},\n",
          c->n_layer, c->n_head, c->n_embd, c->n_ctx, c->vocab_size, c->causal,
          c->task == SPRY_TASK_CLASSIFY ? "classify" : "lm", c->n_class, c->lora_rank, (double)c->lora_alpha,
          c->lora_targets, c->head_trainable);
  fprintf(f, " \"n_frozen\": %zu, \"n_trainable\": %zu,\n", spry_model_n_frozen(m), d);
  fprintf(f, " \"spry\": {\"loss_forward\": %.9g, \"loss_jvp\": %.9g, \"loss_backward\": %.9g, \"jvp\": [",
          (double)loss_f, (double)loss_j, (double)loss_b);
  for (int k = 0; k < K; k++) fprintf(f, "%s%.9g", k ? ", " : "", (double)jvp[k]);
  fprintf(f, "]},\n \"params\": [");
  const spry_param *p = spry_model_params(m);
  for (int i = 0; i < spry_model_n_params(m); i++)
    fprintf(f, "%s\n  {\"name\": \"%s\", \"shape\": [%d%s%.0d], \"offset\": %zu, \"count\": %zu, \"trainable\": %d}",
            i ? "," : "", p[i].name, p[i].shape[0], p[i].ndim == 2 ? ", " : "", p[i].ndim == 2 ? p[i].shape[1] : 0,
            p[i].offset, p[i].count, p[i].trainable);
  fprintf(f, "]}\n");
  fclose(f);
  printf("{\"command\": \"export\", \"dir\": \"%s\", \"loss\": %.9g}\n", dir, (double)loss_f);
  spry_free(&tan);
  spry_free(&grad);
  free_batch(&bb);
  spry_model_free(&m);
  return 0;
}

/* ---- peak memory of one method ---------------------------------------------------------------------------- */

static int cmd_mem(const args *a) {
  int threads = set_threads(a);
  size_preset s = find_size(a);
  int B = opt_int(a, "--B", 8), T = s.T;
  method me;
  parse_methods(opt_str(a, "--method", "fwd"), &me, 1);
  SPRY_CHECK(me.kind != M_JVP_SPRY, "mem: jvpK@spry is not a single call; use jvpK");
  spry_model_config cfg = model_config(&s);
  cfg.lora_rank = opt_int(a, "--lora_rank", cfg.lora_rank);
  cfg.lora_alpha = (float)cfg.lora_rank * 2.0f; /* scale alpha/r = 2, as the default; memory does not depend on it */
  /* --chunk C (method.tangent_chunk): the model holds C tangents, spry_model_jvp takes K in passes of C */
  int chunk = opt_int(a, "--chunk", 0);
  SPRY_CHECK(chunk >= 0, "mem: --chunk = %d, need >= 0 (0 = all K tangents in one pass)", chunk);
  int pass_K = chunk > 0 && chunk < me.K ? chunk : me.K;
  size_t before_model = spry_mem_current();
  spry_model *m = make_model(&cfg, B, T, pass_K);
  bench_batch bb = make_batch(&cfg, B, T, 11);
  size_t model_bytes = spry_mem_current() - before_model;
  float *grad = me.kind == M_BWD ? spry_alloc_floats("gradients", spry_model_n_trainable(m)) : NULL;
  float *jvp = spry_alloc_floats("bench", (size_t)me.K);
  step_ctx c = {.m = m, .b = &bb.b, .grad = grad, .jvp = jvp};
  spry_mem_reset_peak();
  size_t base = spry_mem_current();
  long rss_before = max_rss_kib();
  double ms = run_method(&c, &me, 0);
  size_t peak = spry_mem_peak();
  printf("{\"command\": \"mem\", \"threads\": %d, \"method\": \"%s\", \"K\": %d, \"pass_K\": %d, ", threads, me.name,
         me.K, pass_K);
  print_model(m, &s, B, T);
  printf(", \"model_bytes\": %zu, \"base_bytes\": %zu, \"peak_bytes\": %zu, \"workspace_peak_bytes\": %zu, "
         "\"max_rss_kib\": %ld, \"rss_before_kib\": %ld, \"ms\": %.3f, \"labels\": {",
         model_bytes, base, peak, peak - base, max_rss_kib(), rss_before, ms);
  spry_mem_label lab[64];
  int nl = spry_mem_labels(lab, 64);
  for (int i = 0; i < nl && i < 64; i++) printf("%s\"%s\": %zu", i ? ", " : "", lab[i].label, lab[i].peak);
  printf("}}\n");
  spry_free(&grad);
  spry_free(&jvp);
  free_batch(&bb);
  spry_model_free(&m);
  return 0;
}

/* ---- federated simulation throughput ---------------------------------------------------------------------- */

typedef struct {
  int warmup;
  int n;
  double seconds[4096];
  long client_steps[4096];
  double bytes_up[4096], bytes_down[4096];
  int slots[4096];
  uint64_t peak;
} fed_stats;

static void fed_observe(void *ctx, const spry_fed *f, const spry_round_record *rec) {
  fed_stats *st = ctx;
  /* not timed: warm-up rounds, and rounds that evaluate the global model (the last one always does) */
  if (spry_fed_rank(f) != 0 || (int)rec->round < st->warmup || rec->evaluated || st->n >= 4096) return;
  long steps = 0;
  for (int j = 0; j < rec->n_slots; j++) steps += rec->slots[j].n_steps;
  int i = st->n++;
  st->seconds[i] = rec->seconds;
  st->client_steps[i] = steps;
  st->bytes_up[i] = (double)rec->bytes_up;
  st->bytes_down[i] = (double)rec->bytes_down;
  st->slots[i] = rec->n_slots;
  if (rec->peak_bytes > st->peak) st->peak = rec->peak_bytes;
}

static int cmd_fed(const args *a) {
  MPI_Init(NULL, NULL);
  spry_mpi_install_abort();
  int rank, size;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  spry_set_rank(rank);
  int rounds = opt_int(a, "--rounds", 4), warmup = opt_int(a, "--warmup_rounds", 1);
  const char *ov[64];
  int n_ov = 0;
  static char rounds_ov[64];
  snprintf(rounds_ov, sizeof rounds_ov, "run.rounds=%d", rounds + warmup + 1); /* + the evaluating last round */
  ov[n_ov++] = rounds_ov;
  ov[n_ov++] = "run.quiet=true";
  ov[n_ov++] = "run.eval_every=0";
  for (int i = 2; i + 1 < a->argc && n_ov < 64; i++)
    if (strcmp(a->argv[i], "--set") == 0) ov[n_ov++] = a->argv[++i];
  spry_config cfg;
  char err[4096];
  int st = 0;
  if (rank == 0) {
    st = spry_config_load(&cfg, NULL, ov, n_ov, err, sizeof err);
    if (st) fprintf(stderr, "bench_engine fed: invalid configuration:\n%s\n", err);
  }
  SPRY_CHECK_MPI(MPI_Bcast(&st, 1, MPI_INT, 0, MPI_COMM_WORLD));
  if (st) {
    MPI_Finalize();
    return 2;
  }
  SPRY_CHECK_MPI(MPI_Bcast(&cfg, (int)sizeof cfg, MPI_BYTE, 0, MPI_COMM_WORLD));
  if (cfg.run.threads > 0) openblas_set_num_threads(cfg.run.threads);
  static fed_stats stats;
  stats.warmup = warmup;
  spry_fed_observer obs = {.ctx = &stats, .round = fed_observe};
  double t0 = spry_now();
  spry_fed *f = spry_fed_create(&cfg, MPI_COMM_WORLD);
  double t_create = spry_now() - t0;
  int status = spry_fed_run(f, 0, &obs);
  if (rank == 0) {
    char preset[64] = "", est[64] = "", comm[64] = "";
    spry_config_get(&cfg, "method.preset", preset, sizeof preset);
    spry_config_get(&cfg, "method.estimator", est, sizeof est);
    spry_config_get(&cfg, "method.comm", comm, sizeof comm);
    double secs = 0, steps = 0, up = 0, down = 0, slots = 0;
    for (int i = 0; i < stats.n; i++) {
      secs += stats.seconds[i];
      steps += (double)stats.client_steps[i];
      up += stats.bytes_up[i];
      down += stats.bytes_down[i];
      slots += stats.slots[i];
    }
    printf("{\"command\": \"fed\", \"config\": {\"dataset\": \"%s\", \"n_layer\": %d, \"n_embd\": %d, "
           "\"vocab_size\": %d, \"lora_rank\": %d, \"lora_targets\": \"%s\", \"clients\": %d, \"batch_size\": %d, "
           "\"n_trainable\": %zu}, ",
           cfg.data.dataset, cfg.model.n_layer, cfg.model.n_embd, cfg.model.vocab_size, cfg.lora.rank, cfg.lora.targets,
           cfg.fl.clients, cfg.data.batch_size, spry_model_n_trainable(spry_fed_model(f)));
    printf("\"status\": %d, \"ranks\": %d, \"preset\": \"%s\", \"estimator\": \"%s\", "
           "\"comm\": \"%s\", \"K\": %d, \"clients_per_round\": %d, \"rounds_timed\": %d, \"create_s\": %.4f, "
           "\"median_round_s\": %.5f, \"mean_round_s\": %.5f, \"client_steps_per_round\": %.2f, "
           "\"client_steps_per_s\": %.3f, \"bytes_up_per_client_round\": %.1f, "
           "\"bytes_down_per_client_round\": %.1f, \"peak_bytes\": %llu, ",
           status, size, preset, est, comm, cfg.method.K, cfg.fl.clients_per_round, stats.n, t_create,
           median(stats.seconds, stats.n > 0 ? stats.n : 1), secs / (stats.n > 0 ? stats.n : 1),
           steps / (stats.n > 0 ? stats.n : 1), steps / (secs > 0 ? secs : 1), up / (slots > 0 ? slots : 1),
           down / (slots > 0 ? slots : 1), (unsigned long long)stats.peak);
    print_array("round_s", stats.seconds, stats.n, "%.5f");
    printf("}\n");
    fflush(stdout);
  }
  spry_fed_free(&f);
  MPI_Finalize();
  return status;
}

int main(int argc, char **argv) {
  args a = {argc, argv};
  if (argc < 2) {
    fprintf(stderr, "usage: bench_engine sgemm|step|export|serve|mem|fed [options] (see the comment at the top of "
                    "bench/bench_engine.c)\n");
    return 2;
  }
  const char *cmd = argv[1];
  if (strcmp(cmd, "sgemm") == 0) return cmd_sgemm(&a);
  if (strcmp(cmd, "step") == 0) return cmd_step(&a);
  if (strcmp(cmd, "export") == 0) return cmd_export(&a);
  if (strcmp(cmd, "mem") == 0) return cmd_mem(&a);
  if (strcmp(cmd, "serve") == 0) return cmd_serve(&a);
  if (strcmp(cmd, "fed") == 0) return cmd_fed(&a);
  fprintf(stderr, "bench_engine: unknown command '%s' (allowed: sgemm, step, export, serve, mem, fed)\n", cmd);
  return 2;
}
