/* The configuration module: defaults, precedence (table < preset < file < --set), preset resolution, INI
 * round trip, hash and diff, a table of bad inputs (each must fail with a message naming the key and the bad
 * value), the INI dialect details, and docs/configuration.md kept identical to spry_config_doc().
 * Run with --doc to print the generated block for docs/configuration.md. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "spry/config.h"
#include "testlib.h"

static char tmpdir[256];
static int n_tmpfiles;
static char tmpfiles[64][300];

/* Write text to a new file in the test's temporary directory; returns its path (static storage). */
static const char *write_tmp(const char *name, const char *text) {
  char *path = tmpfiles[n_tmpfiles++];
  snprintf(path, 300, "%s/%s", tmpdir, name);
  FILE *f = fopen(path, "wb");
  if (!f) {
    fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno));
    exit(2);
  }
  fputs(text, f);
  fclose(f);
  return path;
}

static int load_text(spry_config *c, const char *text, const char *const *ov, int n, char *err, size_t errlen) {
  return spry_config_parse(c, text, "test.ini", ov, n, err, errlen);
}

/* ---- defaults --------------------------------------------------------------------------------------------- */

static void defaults_valid(void) {
  spry_config c, l;
  char err[SPRY_CONFIG_ERRLEN];
  spry_config_defaults(&c);
  TEST_CHECK(c.run.seed == 1 && c.run.rounds == 60 && c.run.eval_every == 20 && c.run.checkpoint_every == 0,
             "run defaults");
  TEST_CHECK(!c.run.quiet && c.run.threads == 1, "run.quiet/threads defaults");
  TEST_CHECK(strcmp(c.model.base, "data/base-m8000.h5") == 0 && c.model.n_layer == 4 && c.model.n_head == 4 &&
                 c.model.n_embd == 128 && c.model.n_ctx == 64 && c.model.vocab_size == 8257 && c.model.causal &&
                 c.model.task == SPRY_TASK_CLASSIFY && c.model.lm_chunk == 2048,
             "model defaults");
  TEST_CHECK(c.lora.rank == 1 && c.lora.alpha == 2.0 && strcmp(c.lora.targets, "q,v") == 0 && c.lora.head &&
                 c.lora.target_mask == (SPRY_LORA_Q | SPRY_LORA_V),
             "lora defaults (mask %#x)", c.lora.target_mask);
  TEST_CHECK(strcmp(c.data.dataset, "data/build/gpt2-bpe-m8000/wordnet.h5") == 0 && c.data.n_class == 4 && c.data.n_examples == 4000 &&
                 c.data.seq_len == 32 && c.data.batch_size == 16 && c.data.max_len == 0,
             "data defaults");
  TEST_CHECK(spry_config_max_len(&c) == 64, "max_len 0 resolves to n_ctx");
  TEST_CHECK(c.fl.clients == 100 && c.fl.clients_per_round == 10 && c.fl.alpha == 0.1 &&
                 c.fl.quantity_skew == SPRY_SKEW_NONE && c.fl.quantity_param == 1.0 && c.fl.test_fraction == 0.2 &&
                 c.fl.weighting == SPRY_WEIGHT_SAMPLES,
             "fl defaults");
  const spry_config_method *m = &c.method;
  TEST_CHECK(m->preset == SPRY_PRESET_SPRY && m->estimator == SPRY_EST_FORWARD && m->split == SPRY_SPLIT_SPRY &&
                 m->comm == SPRY_COMM_EPOCH && m->client_opt == SPRY_CLIENT_OPT_ADAMW &&
                 m->server_opt == SPRY_SERVER_OPT_FEDYOGI && m->K == 1 && m->tangent == SPRY_TANGENT_GAUSSIAN,
             "method axes default to the spry preset");
  TEST_CHECK(m->server_lr == 1e-2 && m->server_beta1 == 0.9 && m->server_beta2 == 0.99 && m->server_tau == 1e-3,
             "spry server: FedYogi eta 1e-2, beta 0.9/0.99, tau 1e-3 (THEORY 2)");
  TEST_CHECK(m->local_epochs == 1 && m->local_steps == 0 && m->client_lr == 1e-3 && m->zo_eps == 1e-3 &&
                 m->assignment == SPRY_ASSIGN_ROUNDROBIN && m->head_shared,
             "method defaults");
  TEST_CHECK(c.log.gradients == SPRY_GRADLOG_SCALARS && !c.log.sample_indices, "log defaults");
  TEST_CHECK(spry_config_origin_of(&c, "run.seed") == SPRY_ORIGIN_DEFAULT, "run.seed origin default");
  TEST_CHECK(spry_config_origin_of(&c, "method.estimator") == SPRY_ORIGIN_PRESET, "estimator origin preset");
  TEST_CHECK(spry_config_origin_of(&c, "method.nope") == -1 && spry_config_origin_of(&c, "nodot") == -1,
             "origin of unknown key is -1");

  /* load with no file and no overrides is the same configuration, byte for byte (broadcast-safe) */
  int st = spry_config_load(&l, NULL, NULL, 0, err, sizeof err);
  TEST_CHECK(st == 0, "load(NULL) succeeds: %s", err);
  TEST_CHECK(memcmp(&c, &l, sizeof c) == 0, "load(NULL) == spry_config_defaults, bytewise");

  /* the table: every key has a doc line without '|' (it is a markdown cell), names are unique */
  int n = spry_config_key_count();
  TEST_CHECK(n > 50 && n <= SPRY_CONFIG_MAX_KEYS, "key count %d", n);
  TEST_CHECK(spry_config_key_at(n) == NULL && spry_config_key_at(-1) == NULL, "key_at bounds");
  for (int i = 0; i < n; i++) {
    const spry_config_key *k = spry_config_key_at(i);
    TEST_CHECK(k->doc && *k->doc && !strchr(k->doc, '|'), "doc of %s.%s", k->section, k->key);
    for (int j = 0; j < i; j++) {
      const spry_config_key *o = spry_config_key_at(j);
      TEST_CHECK(strcmp(k->section, o->section) || strcmp(k->key, o->key), "duplicate table key %s.%s",
                 k->section, k->key);
    }
  }
  printf("defaults: every documented default, origins, load(NULL) bytewise equal, table sanity\n");
}

/* ---- presets ---------------------------------------------------------------------------------------------- */

static const char *const PRESETS[] = {"spry",    "fedfgd", "fedavg", "fedyogi",      "fedsgd",
                                      "fedmezo", "baffle", "fwdllm", "fedavg-split", "custom"};

static void presets(void) {
  char err[SPRY_CONFIG_ERRLEN], set[64];
  spry_config c[10];
  for (int p = 0; p < 10; p++) {
    snprintf(set, sizeof set, "method.preset=%s", PRESETS[p]);
    const char *ov[] = {set};
    int st = load_text(&c[p], "", ov, 1, err, sizeof err);
    TEST_CHECK(st == 0, "preset %s valid with default other keys: %s", PRESETS[p], err);
    TEST_CHECK((int)c[p].method.preset == p, "preset %s enum value %d", PRESETS[p], p);
    /* a preset supplies exactly the keys flagged preset; custom supplies none */
    for (int i = 0; i < spry_config_key_count(); i++) {
      const spry_config_key *k = spry_config_key_at(i);
      int want = (k->flags & SPRY_CK_PRESET) && p != SPRY_PRESET_CUSTOM ? SPRY_ORIGIN_PRESET : SPRY_ORIGIN_DEFAULT;
      if (!strcmp(k->section, "method") && !strcmp(k->key, "preset")) want = SPRY_ORIGIN_OVERRIDE;
      TEST_CHECK(c[p].origin[i] == want, "preset %s: origin of %s.%s is %d, want %d", PRESETS[p], k->section,
                 k->key, c[p].origin[i], want);
    }
  }
  const spry_config_method *m;
  m = &c[SPRY_PRESET_FEDFGD].method;
  TEST_CHECK(m->estimator == SPRY_EST_FORWARD && m->split == SPRY_SPLIT_NONE &&
                 m->server_opt == SPRY_SERVER_OPT_FEDYOGI,
             "fedfgd = forward, no split, otherwise spry");
  m = &c[SPRY_PRESET_FEDAVG].method;
  TEST_CHECK(m->estimator == SPRY_EST_BACKPROP && m->split == SPRY_SPLIT_NONE && m->comm == SPRY_COMM_EPOCH &&
                 m->server_opt == SPRY_SERVER_OPT_FEDAVG && m->server_lr == 1.0,
             "fedavg = backprop, per epoch, averaging at rate 1");
  m = &c[SPRY_PRESET_FEDYOGI].method;
  TEST_CHECK(m->estimator == SPRY_EST_BACKPROP && m->server_opt == SPRY_SERVER_OPT_FEDYOGI, "fedyogi");
  m = &c[SPRY_PRESET_FEDSGD].method;
  TEST_CHECK(m->estimator == SPRY_EST_BACKPROP && m->comm == SPRY_COMM_ITERATION && m->local_steps == 1 &&
                 m->server_opt == SPRY_SERVER_OPT_FEDAVG,
             "fedsgd = backprop, one step per round, server steps");
  m = &c[SPRY_PRESET_FEDMEZO].method;
  TEST_CHECK(m->estimator == SPRY_EST_ZEROTH && m->comm == SPRY_COMM_EPOCH && m->client_opt == SPRY_CLIENT_OPT_SGD,
             "fedmezo = zeroth, per epoch, sgd");
  m = &c[SPRY_PRESET_BAFFLE].method;
  TEST_CHECK(m->estimator == SPRY_EST_ZEROTH && m->comm == SPRY_COMM_ITERATION && m->K == 20, "baffle K=20");
  m = &c[SPRY_PRESET_FWDLLM].method;
  TEST_CHECK(m->estimator == SPRY_EST_FWDLLM && m->split == SPRY_SPLIT_NONE && m->comm == SPRY_COMM_ITERATION &&
                 m->K >= 2,
             "fwdllm");
  m = &c[SPRY_PRESET_FEDAVG_SPLIT].method;
  TEST_CHECK(m->estimator == SPRY_EST_BACKPROP && m->split == SPRY_SPLIT_SPRY && m->comm == SPRY_COMM_EPOCH,
             "fedavg-split = backprop on the split");
  /* fedavg-split differs from spry in the estimator only; custom equals spry in every result key */
  char diff[512];
  int nd = spry_config_diff(&c[SPRY_PRESET_SPRY], &c[SPRY_PRESET_FEDAVG_SPLIT], true, diff, sizeof diff);
  TEST_CHECK(nd == 1 && strstr(diff, "method.estimator: forward -> backprop"), "spry vs fedavg-split: %s", diff);
  nd = spry_config_diff(&c[SPRY_PRESET_SPRY], &c[SPRY_PRESET_CUSTOM], true, diff, sizeof diff);
  TEST_CHECK(nd == 0, "custom resolves to the spry values: %s", diff);
  TEST_CHECK(spry_config_hash(&c[SPRY_PRESET_SPRY]) == spry_config_hash(&c[SPRY_PRESET_CUSTOM]),
             "preset itself is not hashed");
  nd = spry_config_diff(&c[SPRY_PRESET_SPRY], &c[SPRY_PRESET_CUSTOM], false, diff, sizeof diff);
  TEST_CHECK(nd == 1 && strstr(diff, "method.preset: spry -> custom"), "all-keys diff shows preset: %s", diff);
  printf("presets: all 10 valid, each sets exactly the preset keys, documented axis values\n");
}

/* ---- precedence -------------------------------------------------------------------------------------------- */

static void precedence(void) {
  char err[SPRY_CONFIG_ERRLEN];
  spry_config c;
  const char *path = write_tmp("prec.ini",
                               "; precedence test\n"
                               "[run]\nseed = 7\nrounds = 50\n"
                               "[method]\n"
                               "client_lr = 0.5   ; explicit: beats the preset\n"
                               "preset = fedavg\n");
  const char *ov[] = {"run.seed=9", "method.K = 1", " lora.targets = v, q ,fc "};
  int st = spry_config_load(&c, path, ov, 3, err, sizeof err);
  TEST_CHECK(st == 0, "load file + overrides: %s", err);
  TEST_CHECK(c.run.seed == 9 && spry_config_origin_of(&c, "run.seed") == SPRY_ORIGIN_OVERRIDE, "--set beats file");
  TEST_CHECK(c.run.rounds == 50 && spry_config_origin_of(&c, "run.rounds") == SPRY_ORIGIN_FILE, "file beats default");
  TEST_CHECK(c.method.estimator == SPRY_EST_BACKPROP && spry_config_origin_of(&c, "method.estimator") ==
                                                            SPRY_ORIGIN_PRESET,
             "preset fills unset preset keys");
  TEST_CHECK(c.method.server_lr == 1.0, "fedavg server rate 1");
  TEST_CHECK(c.method.client_lr == 0.5 && spry_config_origin_of(&c, "method.client_lr") == SPRY_ORIGIN_FILE,
             "explicit key written before the preset line still beats the preset");
  TEST_CHECK(c.method.K == 1 && spry_config_origin_of(&c, "method.K") == SPRY_ORIGIN_OVERRIDE,
             "override equal to the preset value is still explicit");
  TEST_CHECK(strcmp(c.lora.targets, "q,v,fc") == 0 &&
                 c.lora.target_mask == (SPRY_LORA_Q | SPRY_LORA_V | SPRY_LORA_FC),
             "targets trimmed and canonicalised: '%s'", c.lora.targets);

  /* --set changes the preset: the new preset fills the keys; the file's explicit client_lr stays */
  const char *ov2[] = {"method.preset=baffle", "run.seed=3", "run.seed=4"};
  st = spry_config_load(&c, path, ov2, 3, err, sizeof err);
  TEST_CHECK(st == 0, "preset override: %s", err);
  TEST_CHECK(c.method.estimator == SPRY_EST_ZEROTH && c.method.K == 20 && c.method.client_lr == 0.5,
             "--set method.preset=baffle over file preset fedavg");
  TEST_CHECK(c.run.seed == 4, "the later of two --set of one key wins");
  char buf[64];
  TEST_CHECK(spry_config_get(&c, "method.estimator", buf, sizeof buf) == 0 && strcmp(buf, "zeroth") == 0, "get");
  TEST_CHECK(spry_config_get(&c, "method.bogus", buf, sizeof buf) == -1 && buf[0] == 0, "get unknown");

  /* failure leaves *cfg untouched */
  spry_config before = c;
  const char *bad[] = {"run.seed=x"};
  st = spry_config_load(&c, path, bad, 1, err, sizeof err);
  TEST_CHECK(st != 0 && memcmp(&before, &c, sizeof c) == 0, "failed load leaves cfg untouched");
  printf("precedence: default < preset < file < --set, later --set wins, failure leaves cfg untouched\n");
}

/* ---- INI dialect ---------------------------------------------------------------------------------------- */

static void dialect(void) {
  char err[SPRY_CONFIG_ERRLEN];
  spry_config c;
  const char *text = "\xEF\xBB\xBF# BOM, CRLF, indentation, comments, 'key: value'\r\n"
                     "[run]\r\n"
                     "    seed = 5 ; inline comment\r\n"
                     "\trounds: 12\r\n"
                     "   quiet = YES\r\n"
                     "[fl]\n"
                     "alpha = Infinity\n"
                     "[method]\n"
                     "estimator = BackProp\n"
                     "[model]\n"
                     "base = /data/models/base model.h5\n";
  int st = load_text(&c, text, NULL, 0, err, sizeof err);
  TEST_CHECK(st == 0, "dialect file parses: %s", err);
  TEST_CHECK(c.run.seed == 5 && c.run.rounds == 12 && c.run.quiet, "indented keys, ':' separator, YES");
  TEST_CHECK(isinf(c.fl.alpha) && c.fl.alpha > 0, "fl.alpha = Infinity");
  TEST_CHECK(c.method.estimator == SPRY_EST_BACKPROP, "enum case-insensitive");
  TEST_CHECK(strcmp(c.model.base, "/data/models/base model.h5") == 0, "string with a blank: '%s'", c.model.base);

  /* a comment longer than inih's line buffer is fine; a value line that long is not */
  char longc[600];
  memset(longc, 'x', sizeof longc);
  memcpy(longc, "[run]\n; ", 8);
  strcpy(longc + 500, "\nseed = 3\n");
  st = load_text(&c, longc, NULL, 0, err, sizeof err);
  TEST_CHECK(st == 0 && c.run.seed == 3, "long comment line: %s", err);

  /* all errors are reported, each on its own line */
  st = load_text(&c, "[run]\nseed = x\nrounds = -3\n[lora]\nrank = y\n", NULL, 0, err, sizeof err);
  int lines = 1;
  for (const char *p = err; *p; p++) lines += *p == '\n';
  TEST_CHECK(st == SPRY_CONFIG_ERR_VALUE && lines == 3 && strstr(err, "run.seed") && strstr(err, "run.rounds") &&
                 strstr(err, "lora.rank"),
             "three errors, three lines: %s", err);
  TEST_CHECK(strstr(err, "test.ini:2:") && strstr(err, "test.ini:3:") && strstr(err, "test.ini:5:"),
             "messages carry file:line: %s", err);

  /* cross-checks wait until every key is valid: an invalid key must not produce misleading rule messages */
  const char *mixed[] = {"run.seed=x", "fl.clients=5", "fl.clients_per_round=6"};
  st = load_text(&c, "", mixed, 3, err, sizeof err);
  TEST_CHECK(st == SPRY_CONFIG_ERR_VALUE && strstr(err, "run.seed") && !strstr(err, "clients_per_round"),
             "no cross-checks while a key is invalid: %s", err);

  /* small or absent error buffers are safe */
  char tiny[8];
  memset(tiny, '#', sizeof tiny);
  st = load_text(&c, "[run]\nseed = x\n", NULL, 0, tiny, sizeof tiny);
  TEST_CHECK(st == SPRY_CONFIG_ERR_VALUE && strlen(tiny) == sizeof tiny - 1, "tiny error buffer cut and terminated");
  st = load_text(&c, "[run]\nseed = x\n", NULL, 0, NULL, 0);
  TEST_CHECK(st == SPRY_CONFIG_ERR_VALUE, "NULL error buffer");
  printf("dialect: BOM, CRLF, indentation, ':' separator, comments, case, all errors listed, bounded messages\n");
}

/* ---- round trip ----------------------------------------------------------------------------------------- */

/* Compare every table field (not the origin record) of two configs. */
static int values_equal(const spry_config *a, const spry_config *b) {
  return memcmp(a, b, offsetof(spry_config, origin)) == 0;
}

static void round_trip_one(const char *label, const spry_config *c) {
  char err[SPRY_CONFIG_ERRLEN];
  int n = spry_config_to_ini(c, NULL, 0);
  TEST_CHECK(n > 0, "%s: to_ini length %d", label, n);
  char *text = malloc((size_t)n + 1);
  int n2 = spry_config_to_ini(c, text, (size_t)n + 1);
  TEST_CHECK(n2 == n && (int)strlen(text) == n, "%s: to_ini fills exactly %d chars", label, n);
  spry_config back;
  int st = spry_config_parse(&back, text, "round-trip", NULL, 0, err, sizeof err);
  TEST_CHECK(st == 0, "%s: printed config parses back: %s", label, err);
  if (st == 0) {
    char diff[1024];
    int nd = spry_config_diff(c, &back, false, diff, sizeof diff);
    TEST_CHECK(nd == 0, "%s: round trip differs in %d keys: %s", label, nd, diff);
    TEST_CHECK(values_equal(c, &back), "%s: round trip bytewise equal", label);
    TEST_CHECK(spry_config_hash(c) == spry_config_hash(&back), "%s: hash survives round trip", label);
    for (int i = 0; i < spry_config_key_count(); i++)
      TEST_CHECK(back.origin[i] == SPRY_ORIGIN_FILE, "%s: parsed-back key %d is explicit", label, i);
  }
  /* a cut buffer is terminated and the return is still the full length */
  char small[32];
  TEST_CHECK(spry_config_to_ini(c, small, sizeof small) == n && strlen(small) == sizeof small - 1,
             "%s: cut to_ini", label);
  /* spry_config_print writes the same text */
  char *mem = NULL;
  size_t memlen = 0;
  FILE *f = open_memstream(&mem, &memlen);
  spry_config_print(f, c);
  fclose(f);
  TEST_CHECK(memlen == (size_t)n && strcmp(mem, text) == 0, "%s: print == to_ini", label);
  free(mem);
  free(text);
}

static void round_trip(void) {
  char err[SPRY_CONFIG_ERRLEN];
  spry_config c;
  spry_config_defaults(&c);
  round_trip_one("defaults", &c);
  const char *ov[] = {"fl.alpha=inf",
                      "lora.targets=proj,k,o",
                      "lora.alpha=3.14159265358979",
                      "method.preset=fedmezo",
                      "method.zo_eps=1e-7",
                      "method.client_lr=0.1",
                      "method.client_weight_decay=0.30000000000000004",
                      "method.tangent=rademacher",
                      "run.seed=4294967295",
                      "run.quiet=on",
                      "model.base=/scratch/some where/base.h5",
                      "data.dataset=/data/wordnet.h5",
                      "fl.quantity_skew=lognormal",
                      "fl.quantity_param=0.5",
                      "log.gradients=oracle",
                      "model.task=lm",
                      "lora.head=false"};
  int st = load_text(&c, "", ov, (int)(sizeof ov / sizeof *ov), err, sizeof err);
  TEST_CHECK(st == 0, "varied config: %s", err);
  TEST_CHECK(c.method.client_weight_decay == 0.30000000000000004 && c.method.zo_eps == 1e-7,
             "doubles stored exactly");
  round_trip_one("varied", &c);
  /* the empty targets string survives too */
  const char *ov2[] = {"lora.targets=", "lora.head=true"};
  st = load_text(&c, "", ov2, 2, err, sizeof err);
  TEST_CHECK(st == 0 && c.lora.targets[0] == 0 && c.lora.target_mask == 0, "head-only: %s", err);
  round_trip_one("head-only", &c);
  for (int p = 0; p < 10; p++) {
    char set[64];
    snprintf(set, sizeof set, "method.preset=%s", PRESETS[p]);
    const char *o[] = {set};
    st = load_text(&c, "", o, 1, err, sizeof err);
    round_trip_one(PRESETS[p], &c);
  }
  /* the printed text marks origins */
  const char *ov3[] = {"run.seed=3", "method.preset=fedsgd"};
  st = load_text(&c, "[run]\nrounds = 9\n", ov3, 2, err, sizeof err);
  char text[8192];
  spry_config_to_ini(&c, text, sizeof text);
  TEST_CHECK(strstr(text, "seed") && strstr(text, "; --set") && strstr(text, "; file") &&
                 strstr(text, "; preset fedsgd") && strstr(text, "; default"),
             "origin comments in printed config");
  printf("round trip: defaults, a varied config (inf, exact doubles, paths with blanks, lm), head-only, every "
         "preset: to_ini -> parse gives bytewise-equal values and hash\n");
}

/* ---- hash and diff -------------------------------------------------------------------------------------- */

static uint64_t reference_fnv1a(const char *s) {
  uint64_t h = 14695981039346656037ull;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h;
}

static uint64_t hash_with(const char *a, const char *b) {
  char err[SPRY_CONFIG_ERRLEN];
  spry_config c;
  const char *ov[] = {a, b};
  int st = load_text(&c, "", ov, (a ? 1 : 0) + (b ? 1 : 0), err, sizeof err);
  TEST_CHECK(st == 0, "hash_with(%s, %s): %s", a ? a : "-", b ? b : "-", err);
  return spry_config_hash(&c);
}

static void hashing(void) {
  /* the reference FNV-1a against published test vectors (Fowler/Noll/Vo) */
  TEST_CHECK(reference_fnv1a("") == 0xcbf29ce484222325ull, "FNV-1a('')");
  TEST_CHECK(reference_fnv1a("a") == 0xaf63dc4c8601ec8cull, "FNV-1a('a')");
  TEST_CHECK(reference_fnv1a("foobar") == 0x85944171f73967e8ull, "FNV-1a('foobar')");
  spry_config c;
  spry_config_defaults(&c);
  char canon[8192];
  int n = spry_config_canonical(&c, canon, sizeof canon);
  TEST_CHECK(n > 0 && n < (int)sizeof canon, "canonical text length %d", n);
  TEST_CHECK(spry_config_hash(&c) == reference_fnv1a(canon), "hash = FNV-1a 64 of the canonical text");
  TEST_CHECK(strncmp(canon, "spry-config v1\nrun.seed=1\n", 26) == 0, "canonical text starts with version, seed");
  TEST_CHECK(!strstr(canon, "run.quiet") && !strstr(canon, "run.rounds") &&
                 !strstr(canon, "run.checkpoint_every") && !strstr(canon, "method.preset"),
             "operational keys are not in the canonical text");
  TEST_CHECK(strstr(canon, "run.threads=1\n") != NULL, "run.threads is hashed (OpenBLAS rounding depends on it)");
  TEST_CHECK(strstr(canon, "fl.alpha=0.1\n") && strstr(canon, "method.server_tau=0.001\n"),
             "canonical doubles are shortest round-trip text");

  uint64_t h0 = hash_with(NULL, NULL);
  TEST_CHECK(h0 == spry_config_hash(&c), "hash is deterministic");
  TEST_CHECK(hash_with("run.quiet=true", NULL) == h0, "run.quiet does not change the hash");
  TEST_CHECK(hash_with("run.checkpoint_every=5", NULL) == h0, "checkpoint_every: no change");
  TEST_CHECK(hash_with("run.threads=2", NULL) != h0, "threads changes the hash");
  TEST_CHECK(hash_with("run.rounds=1000", NULL) == h0, "rounds (extendable on resume): no change");
  TEST_CHECK(hash_with("lora.targets=v,q", NULL) == h0, "targets order is canonical");
  TEST_CHECK(hash_with("method.preset=custom", NULL) == h0, "preset acts only through resolved keys");
  TEST_CHECK(hash_with("run.seed=2", NULL) != h0, "seed changes the hash");
  TEST_CHECK(hash_with("fl.alpha=inf", NULL) != h0, "fl.alpha changes the hash");
  TEST_CHECK(hash_with("method.server_lr=0.02", NULL) != h0, "server_lr changes the hash");
  TEST_CHECK(hash_with("log.gradients=dense", NULL) != h0, "log.gradients changes the hash (run file content)");
  TEST_CHECK(hash_with("run.eval_every=1", NULL) != h0, "eval_every changes the hash (run file content)");
  TEST_CHECK(hash_with("fl.alpha=0.1000000001", NULL) != h0, "a tiny double change changes the hash");
  /* keys hashed only when set (SPRY_CK_HASH_SET): absent at their default, so runs made before the key existed
   * keep their run ids; set, they change the hash like any result key */
  TEST_CHECK(!strstr(canon, "method.tangent_chunk"), "tangent_chunk at its default is not in the canonical text");
  TEST_CHECK(hash_with("method.tangent_chunk=0", NULL) == h0, "tangent_chunk = 0 (its default): no change");
  TEST_CHECK(hash_with("method.tangent_chunk=4", NULL) != h0, "tangent_chunk = 4 changes the hash");

  /* diff: names the differing result keys; quiet is not one of them */
  char err[SPRY_CONFIG_ERRLEN], diff[512];
  spry_config a, b;
  const char *ova[] = {"run.seed=2", "run.quiet=true", "fl.alpha=inf"};
  TEST_CHECK(load_text(&a, "", ova, 3, err, sizeof err) == 0, "%s", err);
  int nd = spry_config_diff(&c, &a, true, diff, sizeof diff);
  TEST_CHECK(nd == 2 && strcmp(diff, "run.seed: 1 -> 2; fl.alpha: 0.1 -> inf") == 0, "result diff: %d '%s'", nd,
             diff);
  nd = spry_config_diff(&c, &a, false, diff, sizeof diff);
  TEST_CHECK(nd == 3 && strstr(diff, "run.quiet: false -> true"), "all-keys diff: %d '%s'", nd, diff);
  nd = spry_config_diff(&c, &a, true, NULL, 0);
  TEST_CHECK(nd == 2, "diff counts without a buffer");
  spry_config_defaults(&b);
  TEST_CHECK(spry_config_diff(&c, &b, false, diff, sizeof diff) == 0 && diff[0] == 0, "no diff: empty text");
  printf("hash: FNV-1a 64 (reference vectors) of the canonical text; operational keys excluded; result keys, "
         "logging and eval_every included; diff names keys and both values\n");
}

/* ---- bad inputs ---------------------------------------------------------------------------------------- */

typedef struct {
  const char *what;
  const char *ini;      /* file content, or NULL = no file */
  const char *ov[4];    /* overrides */
  int status;           /* expected spry_config_status */
  const char *needle[4]; /* strings the message must contain (key name, bad value, what is allowed) */
} bad_case;

static const bad_case BAD[] = {
    {"unknown key in file", "[run]\nsed = 3\n", {0}, SPRY_CONFIG_ERR_UNKNOWN, {"run.sed", "'3'", "seed, rounds"}},
    {"unknown key suggests the key of another section", "[model]\nrank = 4\n", {0}, SPRY_CONFIG_ERR_UNKNOWN,
     {"model.rank", "'4'", "[lora]", "n_layer"}},
    {"unknown section", "[modle]\nn_layer = 2\n", {0}, SPRY_CONFIG_ERR_UNKNOWN,
     {"[modle]", "n_layer", "did you mean [model]", "run, model, lora"}},
    {"key before any section", "seed = 1\n", {0}, SPRY_CONFIG_ERR_UNKNOWN, {"'seed'", "'1'", "before any"}},
    {"unknown key by --set", NULL, {"method.lr=0.1"}, SPRY_CONFIG_ERR_UNKNOWN, {"method.lr", "0.1", "client_lr"}},
    {"unknown section by --set", NULL, {"training.rounds=3"}, SPRY_CONFIG_ERR_UNKNOWN, {"[training]", "rounds", "3"}},
    {"malformed --set (no =)", NULL, {"model.n_layer"}, SPRY_CONFIG_ERR_SYNTAX, {"model.n_layer", "section.key=value"}},
    {"malformed --set (no section)", NULL, {"seed=3"}, SPRY_CONFIG_ERR_SYNTAX, {"seed=3", "section.key=value"}},
    {"int given letters", NULL, {"model.n_layer=abc"}, SPRY_CONFIG_ERR_VALUE,
     {"model.n_layer", "'abc'", "not a whole number", "1 .. 256"}},
    {"int given a fraction", "[run]\nrounds = 1.5\n", {0}, SPRY_CONFIG_ERR_VALUE, {"run.rounds", "1.5", "whole"}},
    {"int given exponent form", NULL, {"data.n_examples=1e3"}, SPRY_CONFIG_ERR_VALUE, {"data.n_examples", "1e3"}},
    {"int empty", NULL, {"data.batch_size="}, SPRY_CONFIG_ERR_VALUE, {"data.batch_size", "''"}},
    {"int overflow", NULL, {"run.rounds=99999999999999999999"}, SPRY_CONFIG_ERR_VALUE,
     {"run.rounds", "99999999999999999999", "out of range"}},
    {"uint32 negative", NULL, {"run.seed=-1"}, SPRY_CONFIG_ERR_VALUE, {"run.seed", "-1", "0 .. 4294967295"}},
    {"uint32 too big", NULL, {"run.seed=4294967296"}, SPRY_CONFIG_ERR_VALUE, {"run.seed", "4294967296"}},
    {"bool maybe", NULL, {"run.quiet=maybe"}, SPRY_CONFIG_ERR_VALUE, {"run.quiet", "'maybe'", "true, false"}},
    {"int out of range", NULL, {"model.n_layer=0"}, SPRY_CONFIG_ERR_VALUE, {"model.n_layer", "= 0", "1 .. 256"}},
    {"tangent_chunk negative", NULL, {"method.tangent_chunk=-1"}, SPRY_CONFIG_ERR_VALUE,
     {"method.tangent_chunk", "-1", "0 .. 65536"}},
    {"double out of range", NULL, {"fl.test_fraction=0.95"}, SPRY_CONFIG_ERR_VALUE,
     {"fl.test_fraction", "0.95", "0 < x <= 0.9"}},
    {"double not a number", NULL, {"method.client_lr=fast"}, SPRY_CONFIG_ERR_VALUE, {"method.client_lr", "'fast'"}},
    {"double overflow", NULL, {"method.server_lr=1e999"}, SPRY_CONFIG_ERR_VALUE, {"method.server_lr", "1e999"}},
    {"inf where only finite allowed", NULL, {"lora.alpha=inf"}, SPRY_CONFIG_ERR_VALUE,
     {"lora.alpha", "inf", "0 < x <= 1000000"}},
    {"beta at its open bound", NULL, {"method.server_beta2=1"}, SPRY_CONFIG_ERR_VALUE,
     {"method.server_beta2", "= 1", "0 <= x < 1"}},
    {"fl.alpha zero", NULL, {"fl.alpha=0"}, SPRY_CONFIG_ERR_VALUE, {"fl.alpha", "= 0", "x > 0, or inf"}},
    {"fl.alpha negative infinity", NULL, {"fl.alpha=-inf"}, SPRY_CONFIG_ERR_VALUE, {"fl.alpha", "-inf"}},
    {"fl.alpha nan", NULL, {"fl.alpha=nan"}, SPRY_CONFIG_ERR_VALUE, {"fl.alpha", "'nan'", "not a number"}},
    {"zo_eps zero", NULL, {"method.preset=fedmezo", "method.zo_eps=0"}, SPRY_CONFIG_ERR_VALUE,
     {"method.zo_eps", "= 0", "0 < x <= 1"}},
    {"bad enum", NULL, {"method.estimator=sideways"}, SPRY_CONFIG_ERR_VALUE,
     {"method.estimator", "'sideways'", "forward, backprop, zeroth, fwdllm"}},
    {"bad preset", "[method]\npreset = fedprox\n", {0}, SPRY_CONFIG_ERR_VALUE,
     {"method.preset", "'fedprox'", "fedavg-split, custom", "test.ini:2:"}},
    {"unknown lora target", NULL, {"lora.targets=q,x"}, SPRY_CONFIG_ERR_VALUE, {"lora.targets", "'q,x'", "'x'"}},
    {"repeated lora target", NULL, {"lora.targets=q,q"}, SPRY_CONFIG_ERR_VALUE, {"lora.targets", "'q,q'", "twice"}},
    {"string with the comment character", NULL, {"model.base=a;b"}, SPRY_CONFIG_ERR_VALUE,
     {"model.base", "a;b", "';'"}},
    {"empty dataset", NULL, {"data.dataset="}, SPRY_CONFIG_ERR_VALUE, {"data.dataset", "''", "not be empty"}},
    {"string too long", NULL,
     {"model.base=/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"},
     SPRY_CONFIG_ERR_VALUE,
     {"model.base", "/aaaaaaaa", "178 characters", "at most 160"}},
    {"clients_per_round > clients", NULL, {"fl.clients=5", "fl.clients_per_round=6"}, SPRY_CONFIG_ERR_CROSS,
     {"fl.clients_per_round = 6", "fl.clients = 5"}},
    {"n_embd not a multiple of n_head", NULL, {"model.n_head=3"}, SPRY_CONFIG_ERR_CROSS,
     {"model.n_embd = 128", "model.n_head = 3"}},
    {"lora.rank > n_embd", NULL, {"model.n_embd=16", "lora.rank=32"}, SPRY_CONFIG_ERR_CROSS,
     {"lora.rank = 32", "model.n_embd = 16"}},
    {"seq_len > n_ctx", NULL, {"data.seq_len=100"}, SPRY_CONFIG_ERR_CROSS, {"data.seq_len = 100", "model.n_ctx = 64"}},
    {"max_len > n_ctx", NULL, {"data.max_len=65"}, SPRY_CONFIG_ERR_CROSS, {"data.max_len = 65", "model.n_ctx = 64"}},
    {"lm with a trainable head", NULL, {"model.task=lm"}, SPRY_CONFIG_ERR_CROSS,
     {"model.task = lm", "lora.head = true", "lora.head = false"}},
    {"nothing to train", NULL, {"lora.targets=", "lora.head=false"}, SPRY_CONFIG_ERR_CROSS,
     {"lora.targets = ''", "lora.head = false"}},
    {"per-iteration with several local steps", NULL, {"method.comm=iteration"}, SPRY_CONFIG_ERR_CROSS,
     {"method.comm = iteration", "method.local_steps = 0"}},
    {"steps and epochs both", NULL, {"method.local_steps=5", "method.local_epochs=2"}, SPRY_CONFIG_ERR_CROSS,
     {"method.local_steps = 5", "method.local_epochs = 2"}},
    {"backprop with K > 1", NULL, {"method.preset=fedavg", "method.K=4"}, SPRY_CONFIG_ERR_CROSS,
     {"method.K = 4", "backprop"}},
    {"fwdllm with K = 1", NULL, {"method.preset=fwdllm", "method.K=1"}, SPRY_CONFIG_ERR_CROSS,
     {"method.K = 1", "fwdllm"}},
    {"fwdllm max_K below K", NULL, {"method.preset=fwdllm", "method.K=8", "method.fwdllm_max_K=4"},
     SPRY_CONFIG_ERR_CROSS, {"method.fwdllm_max_K = 4", "method.K = 8"}},
    {"bad partition", NULL, {"fl.partition=shuffled"}, SPRY_CONFIG_ERR_VALUE,
     {"fl.partition", "'shuffled'", "pool, sampled, homogeneous"}},
    {"examples_per_client negative", NULL, {"fl.examples_per_client=-3"}, SPRY_CONFIG_ERR_VALUE,
     {"fl.examples_per_client", "-3"}},
    {"sampled without examples_per_client", NULL, {"fl.partition=sampled"}, SPRY_CONFIG_ERR_CROSS,
     {"fl.partition = sampled", "fl.examples_per_client >= 2", "got 0"}},
    {"sampled with one example", NULL, {"fl.partition=sampled", "fl.examples_per_client=1"}, SPRY_CONFIG_ERR_CROSS,
     {"fl.partition = sampled", "got 1"}},
    {"homogeneous with quantity skew", NULL, {"fl.partition=homogeneous", "fl.quantity_skew=lognormal"},
     SPRY_CONFIG_ERR_CROSS, {"fl.partition = homogeneous", "fl.quantity_skew = lognormal", "none"}},
    {"homogeneous with one example", NULL, {"fl.partition=homogeneous", "fl.examples_per_client=1"},
     SPRY_CONFIG_ERR_CROSS, {"fl.examples_per_client = 1", "0 = the whole train pool, or >= 2"}},
    {"pool with one example", NULL, {"fl.examples_per_client=1"}, SPRY_CONFIG_ERR_CROSS,
     {"fl.partition = pool", "fl.examples_per_client = 1"}},
    {"examples in all overflow", NULL, {"fl.partition=sampled", "fl.clients=100000", "fl.examples_per_client=100000"},
     SPRY_CONFIG_ERR_CROSS, {"fl.clients = 100000", "fl.examples_per_client = 100000", "2^31-1"}},
    {"too few synthetic examples", NULL, {"data.dataset=synthetic", "data.n_examples=10", "fl.clients=20"},
     SPRY_CONFIG_ERR_CROSS, {"data.n_examples = 10", "8 training examples", "fl.clients = 20"}},
    {"syntax error", "# comment\n\n[run]\n; another\nrounds 30\n", {0}, SPRY_CONFIG_ERR_SYNTAX,
     {"test.ini:5:", "line 5", "'rounds 30'"}},
    {"unclosed section header", "[run\nseed = 1\n", {0}, SPRY_CONFIG_ERR_SYNTAX, {"test.ini:1:", "'[run'"}},
    {"duplicate key", "[run]\nseed = 1\nrounds = 3\n[model]\nn_layer=2\n[run]\nseed = 5\n", {0},
     SPRY_CONFIG_ERR_DUPLICATE, {"run.seed", "'5'", "test.ini:7:", "line 2"}},
    {"line too long", "[model]\nbase = /xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                      "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                      "xxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n",
     {0}, SPRY_CONFIG_ERR_SYNTAX, {"test.ini:2:", "longer than 198", "base = /xxxx"}},
};

/* A bad-input case: its status, and every needle in the message. File cases go through a real file. */
static void check_bad(const bad_case *b, int idx) {
  char err[SPRY_CONFIG_ERRLEN] = "";
  spry_config c;
  int n_ov = 0;
  while (n_ov < 4 && b->ov[n_ov]) n_ov++;
  int st;
  if (b->ini) {
    char name[32];
    snprintf(name, sizeof name, "test.ini");
    /* a file named test.ini in its own subdirectory, so messages read "<dir>/test.ini:LINE:" */
    char dir[300];
    snprintf(dir, sizeof dir, "%s/case%d", tmpdir, idx);
    mkdir(dir, 0700);
    char path[400];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    fputs(b->ini, f);
    fclose(f);
    st = spry_config_load(&c, path, b->ov, n_ov, err, sizeof err);
    unlink(path);
    rmdir(dir);
  } else {
    st = spry_config_load(&c, NULL, b->ov, n_ov, err, sizeof err);
  }
  TEST_CHECK(st == b->status, "bad input '%s': status %d, want %d (message: %s)", b->what, st, b->status, err);
  for (int i = 0; i < 4 && b->needle[i]; i++)
    TEST_CHECK(strstr(err, b->needle[i]) != NULL, "bad input '%s': message lacks \"%s\": %s", b->what, b->needle[i],
               err);
}

static void bad_inputs(void) {
  int n = (int)(sizeof BAD / sizeof BAD[0]);
  for (int i = 0; i < n; i++) check_bad(&BAD[i], i);

  /* files: missing, a directory, unreadable (permissions do not stop root), binary */
  char err[SPRY_CONFIG_ERRLEN];
  spry_config c;
  char missing[300];
  snprintf(missing, sizeof missing, "%s/no-such.ini", tmpdir);
  int st = spry_config_load(&c, missing, NULL, 0, err, sizeof err);
  TEST_CHECK(st == SPRY_CONFIG_ERR_FILE && strstr(err, missing) && strstr(err, "No such file"), "missing file: %s",
             err);
  st = spry_config_load(&c, tmpdir, NULL, 0, err, sizeof err);
  TEST_CHECK(st == SPRY_CONFIG_ERR_FILE && strstr(err, tmpdir) && strstr(err, "Is a directory"),
             "directory as file: %s", err);
  const char *noperm = write_tmp("noperm.ini", "[run]\nseed = 1\n");
  chmod(noperm, 0);
  if (geteuid() != 0) {
    st = spry_config_load(&c, noperm, NULL, 0, err, sizeof err);
    TEST_CHECK(st == SPRY_CONFIG_ERR_FILE && strstr(err, noperm) && strstr(err, "Permission denied"),
               "unreadable file: %s", err);
  } else {
    printf("  (running as root: permission-denied case skipped, the directory case covers read errors)\n");
  }
  FILE *f = fopen(write_tmp("binary.ini", ""), "wb");
  fwrite("[run]\n\0\1\2", 1, 9, f);
  fclose(f);
  st = spry_config_load(&c, tmpfiles[n_tmpfiles - 1], NULL, 0, err, sizeof err);
  TEST_CHECK(st == SPRY_CONFIG_ERR_FILE && strstr(err, "NUL"), "binary file: %s", err);
  printf("bad inputs: %d cases + missing/directory/unreadable/binary files, each with status and key/value in the "
         "message\n",
         n);
}

/* ---- docs/configuration.md is the generated reference ------------------------------------------------------ */

static char *generated_doc(void) {
  char *mem = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&mem, &len);
  spry_config_doc(f);
  fclose(f);
  return mem;
}

static void doc_up_to_date(void) {
  /* __FILE__ is tests/unit/test_config.c under the source tree (CMake passes absolute paths) */
  char path[1024];
  snprintf(path, sizeof path, "%s", __FILE__);
  char *cut = strstr(path, "tests/unit/test_config.c");
  if (!cut || path[0] != '/') {
    printf("doc: source path unknown (%s); check skipped\n", __FILE__);
    return;
  }
  strcpy(cut, "docs/configuration.md");
  FILE *f = fopen(path, "rb");
  TEST_CHECK(f != NULL, "open %s", path);
  if (!f) return;
  static char doc[1 << 18];
  size_t n = fread(doc, 1, sizeof doc - 1, f);
  fclose(f);
  doc[n] = '\0';
  const char *begin_mark = "<!-- BEGIN GENERATED by spry_config_doc (test_config --doc) -->\n";
  const char *end_mark = "<!-- END GENERATED -->";
  char *b = strstr(doc, begin_mark), *e = b ? strstr(b, end_mark) : NULL;
  TEST_CHECK(b && e, "generated markers in %s", path);
  if (!b || !e) return;
  b += strlen(begin_mark);
  *e = '\0';
  char *gen = generated_doc();
  TEST_CHECK(strcmp(b, gen) == 0,
             "docs/configuration.md is out of date: regenerate the block with ./build/tests/test_config --doc");
  free(gen);
  printf("doc: docs/configuration.md matches spry_config_doc()\n");
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "--doc") == 0) {
    spry_config_doc(stdout);
    return 0;
  }
  const char *base = getenv("TMPDIR");
  snprintf(tmpdir, sizeof tmpdir, "%s/spry_test_config_XXXXXX", base && *base ? base : "/tmp");
  if (!mkdtemp(tmpdir)) {
    fprintf(stderr, "mkdtemp: %s\n", strerror(errno));
    return 2;
  }
  defaults_valid();
  presets();
  precedence();
  dialect();
  round_trip();
  hashing();
  bad_inputs();
  doc_up_to_date();
  for (int i = 0; i < n_tmpfiles; i++) unlink(tmpfiles[i]);
  rmdir(tmpdir);
  return test_finish("test_config");
}
