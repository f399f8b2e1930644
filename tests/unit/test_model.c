/* Whole-model derivatives: forward mode (K tangents) vs reverse mode vs finite differences, on classification
 * and causal-LM models, causal and bidirectional, with padding; active-block subsets; stacked vs single
 * tangents, and K tangents in passes of fewer; zeroth order's O(eps^2) convergence to the jvp; forward-mode memory
 * flat in depth; invalid configs. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "spry/core.h"
#include "spry/model.h"
#include "testlib.h"

typedef struct {
  const char *name;
  spry_model_config cfg;
  int B, T;
} model_case;

static spry_model_config make_cfg(spry_task task, int causal, int L, int NH, int C, int V, unsigned targets) {
  spry_model_config c = spry_model_config_default();
  c.task = task;
  c.causal = causal;
  c.n_layer = L;
  c.n_head = NH;
  c.n_embd = C;
  c.n_ctx = 16;
  c.vocab_size = V;
  c.n_class = 5;
  c.lora_rank = 4;
  c.lora_alpha = 8.0f;
  c.lora_targets = targets;
  c.head_trainable = task == SPRY_TASK_CLASSIFY;
  c.lm_chunk = 16; /* V is not a multiple of 16 in the LM cases: the last chunk is partial */
  return c;
}

/* A model with a random backbone and random (not LoRA-init) trainable weights, so that every adapter matrix has a
 * non-zero gradient (with B = 0 the gradient of A vanishes and a bug there would go unseen). */
static spry_model *make_model(const model_case *mc, int K, uint32_t seed) {
  spry_model *m = spry_model_create(&mc->cfg, mc->B, mc->T, K);
  spry_model_init_backbone(m, seed);
  test_fill_normal(spry_model_w(m), spry_model_n_trainable(m), 0.1f, seed + 100);
  return m;
}

typedef struct {
  int32_t tokens[8 * 16], lengths[8], labels[8];
  spry_batch b;
} test_batch;

/* Row b has length T - (b % 3) * 2 (>= 1): several rows padded. */
static void make_batch(test_batch *tb, const model_case *mc, uint32_t seed) {
  spry_rng_stream st = spry_rng_stream_at((spry_rng_key){.seed = seed, .purpose = SPRY_RNG_TEST, .client = 77});
  for (int i = 0; i < mc->B * mc->T; i++) tb->tokens[i] = (int32_t)spry_stream_below(&st, (uint32_t)mc->cfg.vocab_size);
  for (int b = 0; b < mc->B; b++) {
    int len = mc->T - (b % 3) * 2;
    tb->lengths[b] = len >= 1 ? len : 1;
    tb->labels[b] = (int32_t)spry_stream_below(&st, (uint32_t)mc->cfg.n_class);
  }
  tb->b = (spry_batch){.B = mc->B, .T = mc->T, .tokens = tb->tokens, .lengths = tb->lengths,
                       .labels = mc->cfg.task == SPRY_TASK_CLASSIFY ? tb->labels : NULL};
}

static spry_tangent_spec key_spec(int K, const unsigned char *active, uint32_t k0) {
  spry_tangent_spec s = {.K = K, .active = active, .kind = SPRY_TANGENT_GAUSSIAN};
  s.key = (spry_rng_key){.seed = 99, .purpose = SPRY_RNG_TANGENT, .round = 1, .client = 2, .step = 3, .k = k0};
  return s;
}

/* Test 2 + 4: jvp_k == <grad, v_k> for K = 1 and 8; explicit tangents == regenerated ones; stacked == single.
 * Tolerance 1e-4 relative (the bar): both sides are exact derivatives, differing only by fp32 rounding
 * through ~10 layers of reductions (measured ~1e-6). */
static void check_jvp_vs_backprop(const model_case *mc) {
  spry_model *m = make_model(mc, 8, 5);
  test_batch tb;
  make_batch(&tb, mc, 9);
  size_t d = spry_model_n_trainable(m);
  float *grad = malloc(sizeof(float) * d), *v = malloc(sizeof(float) * d * 8);
  float loss_b = spry_model_backward(m, &tb.b, NULL, grad);
  float loss_f = spry_model_forward(m, &tb.b, NULL);
  TEST_CHECK(loss_b == loss_f, "%s: backward's loss %.9g != forward's %.9g", mc->name, loss_b, loss_f);
  int Ks[2] = {1, 8};
  for (int ki = 0; ki < 2; ki++) {
    int K = Ks[ki];
    spry_tangent_spec spec = key_spec(K, NULL, 0);
    float jvp[8], ref[8], jvp_explicit[8];
    float loss_j = spry_model_jvp(m, &tb.b, &spec, jvp);
    TEST_CHECK(loss_j == loss_f, "%s: jvp's loss %.9g != forward's %.9g", mc->name, loss_j, loss_f);
    for (int k = 0; k < K; k++) {
      spry_tangent_materialise(m, &spec, k, v + (size_t)k * d);
      ref[k] = (float)test_dot(grad, v + (size_t)k * d, d);
    }
    double err = test_rel_err(jvp, ref, (size_t)K);
    TEST_CHECK(err <= 1e-4, "%s K=%d: jvp vs <backprop grad, v> relative error %.3g > 1e-4", mc->name, K, err);
    printf("%-28s K=%d  jvp vs <grad,v>: rel err %.2e (tol 1e-4)  |jvp| ~ %.3g\n", mc->name, K, err, fabs(ref[0]));
    /* explicit tangents (K, d) must give the same numbers as the regenerated ones */
    spry_tangent_spec ex = spec;
    ex.tangents = v;
    ex.ldt = d;
    spry_model_jvp(m, &tb.b, &ex, jvp_explicit);
    double e2 = test_rel_err(jvp, jvp_explicit, (size_t)K);
    TEST_CHECK(e2 <= 1e-6, "%s K=%d: explicit tangents differ from regenerated ones: %.3g", mc->name, K, e2);
    if (K == 8) { /* Test 4: the stacked pass equals K single-tangent passes */
      float single[8];
      for (int k = 0; k < K; k++) {
        spry_tangent_spec one = key_spec(1, NULL, (uint32_t)k);
        spry_model_jvp(m, &tb.b, &one, &single[k]);
      }
      double e3 = test_rel_err(jvp, single, 8);
      TEST_CHECK(e3 <= 1e-6, "%s: K=8 stacked vs 8 single passes: %.3g > 1e-6", mc->name, e3);
      printf("%-28s stacked K=8 vs 8 single passes: rel err %.2e (tol 1e-6)\n", mc->name, e3);
      /* the same 8 tangents through a model whose workspace holds 3 (method.tangent_chunk = 3): passes of 3, 3, 2
       * in one call, regenerated and explicit, must give each tangent's number and the primal's loss */
      spry_model *m3 = spry_model_create(&mc->cfg, mc->B, mc->T, 3);
      spry_model_init_backbone(m3, 5);
      memcpy(spry_model_w(m3), spry_model_w(m), sizeof(float) * d);
      float chunked[8], chunked_ex[8];
      float loss_c = spry_model_jvp(m3, &tb.b, &spec, chunked);
      spry_model_jvp(m3, &tb.b, &ex, chunked_ex);
      /* tangents named by a k_list (FwdLLM's selected candidates): the passes must follow the list */
      const uint32_t klist[8] = {11, 2, 7, 0, 5, 13, 3, 9};
      spry_tangent_spec listed = spec;
      listed.k_list = klist;
      float list_stacked[8], list_chunked[8];
      spry_model_jvp(m, &tb.b, &listed, list_stacked);
      spry_model_jvp(m3, &tb.b, &listed, list_chunked);
      double e6 = test_rel_err(list_stacked, list_chunked, 8);
      TEST_CHECK(e6 <= 1e-6, "%s: k_list tangents in passes of 3 vs stacked: %.3g > 1e-6", mc->name, e6);
      spry_tangent_spec one = key_spec(1, NULL, klist[7]);
      float last;
      spry_model_jvp(m, &tb.b, &one, &last);
      TEST_CHECK(test_close(list_chunked[7], last, 1e-6, 0),
                 "%s: tangent k_list[7] = %u in the last pass: %.9g vs %.9g", mc->name, klist[7], list_chunked[7],
                 last);
      double e4 = test_rel_err(jvp, chunked, 8), e5 = test_rel_err(jvp, chunked_ex, 8);
      TEST_CHECK(loss_c == loss_j, "%s: chunked jvp's loss %.9g != stacked %.9g", mc->name, loss_c, loss_j);
      TEST_CHECK(e4 <= 1e-6 && e5 <= 1e-6, "%s: K=8 in passes of 3 vs stacked: %.3g, explicit %.3g > 1e-6",
                 mc->name, e4, e5);
      printf("%-28s K=8 in passes of 3,3,2 vs stacked: rel err %.2e, explicit %.2e (tol 1e-6)%s\n", mc->name, e4,
             e5, memcmp(jvp, chunked, sizeof jvp) ? "" : " [bitwise equal]");
      spry_model_free(&m3);
    }
  }
  /* Finite differences along a unit direction u: (f(w+hu) - f(w-hu))/2h vs <grad, u>. With h = 5e-2 the
   * truncation error h^2/6 |f'''| stays below 1e-3 relative for these smooth losses, and the fp32 rounding of
   * the two losses contributes at most 2 ulp(f) / 2h = 2.4e-7 |f| / h absolute: tolerance 3e-3 relative plus
   * twice that rounding bound. */
  float *u = v;
  test_fill_normal(u, d, 1.0f, 31);
  double nu = sqrt(test_dot(u, u, d));
  for (size_t i = 0; i < d; i++) u[i] = (float)(u[i] / nu);
  spry_tangent_spec ex = {.K = 1, .tangents = u, .ldt = d, .kind = SPRY_TANGENT_GAUSSIAN};
  float fd, jv;
  const float h = 5e-2f;
  spry_model_zeroth(m, &tb.b, &ex, h, &fd, NULL);
  spry_model_jvp(m, &tb.b, &ex, &jv);
  double gu = test_dot(grad, u, d), fd_atol = 2 * 2.4e-7 * fabs(loss_f) / h;
  TEST_CHECK(test_close(fd, gu, 3e-3, fd_atol), "%s: finite difference %.7g vs <grad,u> %.7g", mc->name, fd, gu);
  TEST_CHECK(test_close(jv, gu, 1e-4, 1e-7), "%s: jvp %.7g vs <grad,u> %.7g", mc->name, jv, gu);
  printf("%-28s FD(h=5e-2) %.6g  jvp %.6g  <grad,u> %.6g (FD tol 3e-3 rel + %.1e)\n", mc->name, fd, jv, gu, fd_atol);
  free(grad);
  free(v);
  spry_model_free(&m);
}

/* Test 3: active-block subsets. Backward restricted to S equals the full gradient on S (same arithmetic: the
 * reverse pass just stops earlier) and is zero off S; jvp with tangents on S equals <grad_S, v_S>. */
static void check_active_subsets(const model_case *mc) {
  spry_model *m = make_model(mc, 4, 6);
  test_batch tb;
  make_batch(&tb, mc, 10);
  size_t d = spry_model_n_trainable(m);
  int nb = spry_model_n_blocks(m);
  const spry_block *blocks = spry_model_blocks(m);
  float *full = malloc(sizeof(float) * d), *gs = malloc(sizeof(float) * d), *v = malloc(sizeof(float) * d);
  spry_model_backward(m, &tb.b, NULL, full);
  unsigned char subsets[4][16];
  memset(subsets, 0, sizeof subsets);
  subsets[0][nb - 1] = 1;           /* the top block alone (head, or the last layer for LM) */
  subsets[1][1] = subsets[1][3 % nb] = 1; /* two middle blocks */
  subsets[2][0] = 1;                /* the bottom block: tangents from the first layer on */
  for (int i = 0; i < nb; i += 2) subsets[3][i] = 1; /* every other block */
  for (int s = 0; s < 4; s++) {
    spry_model_backward(m, &tb.b, subsets[s], gs);
    int ok_on = 1, ok_off = 1;
    for (int blk = 0; blk < nb; blk++)
      for (size_t i = blocks[blk].offset; i < blocks[blk].offset + blocks[blk].size; i++) {
        if (subsets[s][blk]) ok_on &= gs[i] == full[i];
        else ok_off &= gs[i] == 0.0f;
      }
    TEST_CHECK(ok_on, "%s subset %d: restricted gradient differs from the full gradient on S", mc->name, s);
    TEST_CHECK(ok_off, "%s subset %d: restricted gradient non-zero off S", mc->name, s);
    spry_tangent_spec spec = key_spec(4, subsets[s], 0);
    float jvp[4], ref[4];
    spry_model_jvp(m, &tb.b, &spec, jvp);
    for (int k = 0; k < 4; k++) {
      spry_tangent_materialise(m, &spec, k, v);
      ref[k] = (float)test_dot(gs, v, d);
    }
    double err = test_rel_err(jvp, ref, 4);
    TEST_CHECK(err <= 1e-4, "%s subset %d: jvp vs <grad_S, v> rel err %.3g", mc->name, s, err);
    printf("%-28s subset %d: jvp on S vs <grad_S, v>: rel err %.2e (tol 1e-4)\n", mc->name, s, err);
  }
  free(full);
  free(gs);
  free(v);
  spry_model_free(&m);
}

/* Test 6: the two-point estimate approaches the jvp at the O(eps^2) rate: the error ratio between eps and eps/2
 * must be close to 4. Direction: the head block (classification) scaled to norm 4, so that the truncation error
 * (eps^2/6 f''') dominates fp32 rounding (~1e-7/eps) over eps in [0.05, 0.4]. Accepted ratio range [3, 5]. */
static void check_zeroth_rate(void) {
  model_case mc = {"zeroth", make_cfg(SPRY_TASK_CLASSIFY, 1, 2, 2, 16, 40, SPRY_LORA_Q | SPRY_LORA_V), 4, 8};
  spry_model *m = make_model(&mc, 1, 8);
  test_batch tb;
  make_batch(&tb, &mc, 12);
  size_t d = spry_model_n_trainable(m);
  float *u = malloc(sizeof(float) * d);
  test_fill_normal(u, d, 1.0f, 41);
  double nu = sqrt(test_dot(u, u, d));
  for (size_t i = 0; i < d; i++) u[i] = (float)(4.0 * u[i] / nu);
  spry_tangent_spec ex = {.K = 1, .tangents = u, .ldt = d, .kind = SPRY_TANGENT_GAUSSIAN};
  float jv;
  spry_model_jvp(m, &tb.b, &ex, &jv);
  double eps[4] = {0.4, 0.2, 0.1, 0.05}, err[4];
  for (int i = 0; i < 4; i++) {
    float zo;
    spry_model_zeroth(m, &tb.b, &ex, (float)eps[i], &zo, NULL);
    err[i] = fabs(zo - jv);
  }
  for (int i = 0; i + 1 < 4; i++) {
    double ratio = err[i] / err[i + 1];
    TEST_CHECK(ratio > 3.0 && ratio < 5.0, "zeroth order: error ratio eps %.2g -> %.2g is %.3g, want ~4 (O(eps^2))",
               eps[i], eps[i + 1], ratio);
    printf("zeroth order: eps %.3f err %.3e, eps %.3f err %.3e, ratio %.2f (want 4, accept [3,5])\n", eps[i], err[i],
           eps[i + 1], err[i + 1], ratio);
  }
  free(u);
  spry_model_free(&m);
}

/* Test 5: working-memory peak (workspaces only: the frozen weights grow with depth by construction) of forward
 * mode is identical for n_layer = 2, 4, 8, while reverse mode's grows with depth. Exact comparison: the allocator
 * counts bytes. */
static void check_memory_flat(void) {
  size_t fwd[3], bwd[3];
  int Ls[3] = {2, 4, 8};
  for (int i = 0; i < 3; i++) {
    model_case mc = {"mem", make_cfg(SPRY_TASK_CLASSIFY, 1, Ls[i], 4, 32, 50, SPRY_LORA_Q | SPRY_LORA_V), 4, 16};
    spry_model *m = make_model(&mc, 4, 3);
    test_batch tb;
    make_batch(&tb, &mc, 3);
    float jvp[4], *grad = malloc(sizeof(float) * spry_model_n_trainable(m));
    size_t base = spry_mem_current();
    spry_mem_reset_peak();
    spry_tangent_spec spec = key_spec(4, NULL, 0);
    spry_model_jvp(m, &tb.b, &spec, jvp);
    fwd[i] = spry_mem_peak() - base;
    spry_model_release_workspaces(m);
    spry_mem_reset_peak();
    spry_model_backward(m, &tb.b, NULL, grad);
    bwd[i] = spry_mem_peak() - base;
    printf("memory n_layer=%d: forward mode (K=4) workspace peak %zu B, backprop %zu B\n", Ls[i], fwd[i], bwd[i]);
    free(grad);
    spry_model_free(&m);
  }
  TEST_CHECK(fwd[0] == fwd[1] && fwd[1] == fwd[2], "forward-mode peak varies with depth: %zu %zu %zu", fwd[0],
             fwd[1], fwd[2]);
  /* K = 4 in passes of 1 (a model made for max_K = 1): the workspace of one tangent, below the stacked one's */
  model_case mc = {"mem", make_cfg(SPRY_TASK_CLASSIFY, 1, 4, 4, 32, 50, SPRY_LORA_Q | SPRY_LORA_V), 4, 16};
  spry_model *m = make_model(&mc, 1, 3);
  test_batch tb;
  make_batch(&tb, &mc, 3);
  float jvp[4];
  size_t base = spry_mem_current();
  spry_mem_reset_peak();
  spry_tangent_spec spec = key_spec(4, NULL, 0);
  spry_model_jvp(m, &tb.b, &spec, jvp);
  size_t chunked = spry_mem_peak() - base;
  printf("memory n_layer=4: forward mode K=4 in passes of 1: workspace peak %zu B (stacked %zu B)\n", chunked, fwd[1]);
  TEST_CHECK(chunked < fwd[1], "K=4 in passes of 1 peaks at %zu B, not below the stacked %zu B", chunked, fwd[1]);
  spry_model_free(&m);
  TEST_CHECK(bwd[0] < bwd[1] && bwd[1] < bwd[2], "backprop peak does not grow with depth: %zu %zu %zu", bwd[0],
             bwd[1], bwd[2]);
}

/* Invalid configurations are rejected with a message naming the field and the value. */
static void check_invalid_configs(void) {
  struct {
    const char *what, *needle; /* the case (mutation in the switch below) and a word its message must name */
  } cases[] = {
      {"n_embd % n_head", "n_head"}, {"zero layers", "n_layer"},     {"rank 0", "lora.rank"},
      {"rank > n_embd", "lora.rank"}, {"zero vocab", "vocab_size"},  {"no targets", "lora.targets"},
      {"lm with head", "lora.head"},  {"one class", "n_class"},
  };
  for (int i = 0; i < (int)(sizeof cases / sizeof cases[0]); i++) {
    spry_model_config c = spry_model_config_default();
    switch (i) {
      case 0: c.n_embd = 30, c.n_head = 4; break;
      case 1: c.n_layer = 0; break;
      case 2: c.lora_rank = 0; break;
      case 3: c.lora_rank = c.n_embd + 1; break;
      case 4: c.vocab_size = 0; break;
      case 5: c.lora_targets = 0; break;
      case 6: c.task = SPRY_TASK_LM, c.head_trainable = 1; break;
      case 7: c.n_class = 1; break;
    }
    char err[256] = "";
    int rc = spry_model_config_check(&c, err, sizeof err);
    TEST_CHECK(rc != 0 && strstr(err, cases[i].needle), "invalid config '%s' not rejected properly: rc=%d msg='%s'",
               cases[i].what, rc, err);
    printf("rejected (%s): %s\n", cases[i].what, err);
  }
  spry_model_config ok = spry_model_config_default();
  char err[256] = "";
  TEST_CHECK(spry_model_config_check(&ok, err, sizeof err) == 0, "default config rejected: %s", err);
}

int main(void) {
  const unsigned QV = SPRY_LORA_Q | SPRY_LORA_V;
  model_case cases[] = {
      {"classify causal L4 H4 qv", make_cfg(SPRY_TASK_CLASSIFY, 1, 4, 4, 32, 50, QV), 3, 12},
      {"classify bidir L2 H2 all", make_cfg(SPRY_TASK_CLASSIFY, 0, 2, 2, 24, 50, SPRY_LORA_ALL), 4, 10},
      {"lm causal L4 H4 qv", make_cfg(SPRY_TASK_LM, 1, 4, 4, 32, 97, QV), 3, 12},
      {"lm bidir L3 H1 k,o,fc", make_cfg(SPRY_TASK_LM, 0, 3, 1, 16, 61, SPRY_LORA_K | SPRY_LORA_O | SPRY_LORA_FC), 2, 9},
  };
  for (int i = 0; i < 4; i++) check_jvp_vs_backprop(&cases[i]);
  for (int i = 0; i < 4; i++) check_active_subsets(&cases[i]);
  check_zeroth_rate();
  check_memory_flat();
  check_invalid_configs();
  return test_finish("test_model");
}
