#include "spry/dataset.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spry/core.h"
#include "spry/rng.h"

static spry_dataset *dataset_alloc(int n, int max_len, int n_class, int vocab) {
  spry_dataset *ds = spry_alloc("dataset", sizeof *ds);
  ds->n = n;
  ds->max_len = max_len;
  ds->n_class = n_class;
  ds->vocab_size = vocab;
  ds->tokens = spry_alloc("dataset", sizeof(int32_t) * (size_t)n * max_len);
  ds->lengths = spry_alloc("dataset", sizeof(int32_t) * (size_t)n);
  ds->labels = spry_alloc("dataset", sizeof(int32_t) * (size_t)n);
  ds->is_test = spry_alloc("dataset", (size_t)n);
  ds->class_names = spry_alloc("dataset", sizeof(char *) * (size_t)n_class);
  return ds;
}

spry_dataset *spry_dataset_synthetic(int n, int n_class, int vocab, int max_len, double test_fraction,
                                     uint32_t seed) {
  SPRY_CHECK(n >= 2 * n_class && n_class >= 2, "synthetic data: n_examples = %d, n_class = %d: need n_class >= 2 "
             "and n_examples >= 2 * n_class", n, n_class);
  SPRY_CHECK(vocab >= 4 * n_class, "synthetic data: vocab_size = %d < 4 * n_class = %d (keywords + noise)", vocab,
             4 * n_class);
  SPRY_CHECK(max_len >= 2, "synthetic data: seq_len = %d must be >= 2", max_len);
  SPRY_CHECK(test_fraction >= 0.0 && test_fraction < 1.0, "synthetic data: test fraction %g not in [0, 1)",
             test_fraction);
  spry_dataset *ds = dataset_alloc(n, max_len, n_class, vocab);
  /* Keywords: class c owns tokens [c*kw, (c+1)*kw); noise tokens are the rest. */
  int kw = vocab / (2 * n_class);
  int noise_lo = kw * n_class, n_noise = vocab - noise_lo;
  for (int i = 0; i < n; i++) {
    spry_rng_stream st = spry_rng_stream_at((spry_rng_key){.seed = seed, .purpose = SPRY_RNG_DATASET, .client = 1,
                                                           .step = (uint32_t)i});
    int c = i % n_class;
    int len = max_len / 2 + (int)spry_stream_below(&st, (uint32_t)(max_len - max_len / 2 + 1));
    if (len < 1) len = 1;
    int32_t *tok = ds->tokens + (size_t)i * max_len;
    int keywords = 0;
    for (int t = 0; t < len; t++) {
      if (spry_stream_below(&st, 3) == 0) {
        tok[t] = c * kw + (int32_t)spry_stream_below(&st, (uint32_t)kw);
        keywords++;
      } else {
        tok[t] = noise_lo + (int32_t)spry_stream_below(&st, (uint32_t)n_noise);
      }
    }
    if (!keywords) tok[spry_stream_below(&st, (uint32_t)len)] = c * kw + (int32_t)spry_stream_below(&st, (uint32_t)kw);
    ds->lengths[i] = len;
    ds->labels[i] = c;
  }
  /* Held-out set: a seeded shuffle, the first test_fraction of it. */
  int32_t *perm = spry_alloc("dataset", sizeof(int32_t) * (size_t)n);
  for (int i = 0; i < n; i++) perm[i] = i;
  spry_rng_stream st = spry_rng_stream_at((spry_rng_key){.seed = seed, .purpose = SPRY_RNG_DATASET, .client = 2});
  spry_stream_shuffle(&st, perm, (size_t)n);
  int n_test = (int)(test_fraction * n);
  for (int i = 0; i < n_test; i++) ds->is_test[perm[i]] = 1;
  spry_free(&perm);
  for (int c = 0; c < n_class; c++) {
    ds->class_names[c] = spry_alloc("dataset", 24);
    snprintf(ds->class_names[c], 24, "class%d", c);
  }
  snprintf(ds->source, sizeof ds->source, "synthetic(n=%d, classes=%d, vocab=%d, len=%d, seed=%u)", n, n_class,
           vocab, max_len, seed);
  return ds;
}

void spry_dataset_free(spry_dataset **pds) {
  spry_dataset *ds = *pds;
  if (!ds) return;
  for (int c = 0; c < ds->n_class; c++) spry_free(&ds->class_names[c]);
  spry_free(&ds->class_names);
  spry_free(&ds->tokens);
  spry_free(&ds->lengths);
  spry_free(&ds->labels);
  spry_free(&ds->is_test);
  spry_free(pds);
}

int32_t *spry_dataset_split_indices(const spry_dataset *ds, int test, int *count) {
  int c = 0;
  for (int i = 0; i < ds->n; i++) c += (ds->is_test[i] != 0) == (test != 0);
  int32_t *idx = spry_alloc("dataset", sizeof(int32_t) * (size_t)(c > 0 ? c : 1));
  int j = 0;
  for (int i = 0; i < ds->n; i++)
    if ((ds->is_test[i] != 0) == (test != 0)) idx[j++] = i;
  *count = c;
  return idx;
}

int spry_dataset_gather(const spry_dataset *ds, const int32_t *idx, int B, int32_t *tokens, int32_t *lengths,
                        int32_t *labels) {
  int T = 1;
  for (int b = 0; b < B; b++) {
    SPRY_CHECK(idx[b] >= 0 && idx[b] < ds->n, "dataset gather: index %d not in [0, %d)", idx[b], ds->n);
    if (ds->lengths[idx[b]] > T) T = ds->lengths[idx[b]];
  }
  for (int b = 0; b < B; b++) {
    const int32_t *src = ds->tokens + (size_t)idx[b] * ds->max_len;
    memcpy(tokens + (size_t)b * T, src, sizeof(int32_t) * (size_t)T);
    lengths[b] = ds->lengths[idx[b]];
    if (labels) labels[b] = ds->labels[idx[b]];
  }
  return T;
}

/* ---- HDF5 datasets ------------------------------------------------------------------------------------ */
#include "spry/h5util.h"

spry_dataset *spry_dataset_load(const char *path, int max_len) {
  char err[512];
  if (!spry_h5_probe(path, err, sizeof err))
    spry_fatal("data.dataset: %s%s", err,
               path[0] == '/' ? ""
                              : " (a relative path is read from the current directory; the project's datasets are "
                                "built by `/usr/bin/python3 data/build_datasets.py` in the repository, which "
                                "scripts/main-job.sh runs; or set data.dataset = synthetic)");
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) spry_fatal("data.dataset: %s: HDF5 cannot open it (truncated or corrupt file)", path);
  char kind[64] = "";
  int64_t n_class = 0, vocab = 0;
  if (spry_h5_attr_str(f, "kind", kind, sizeof kind) < 0 || strcmp(kind, "labelled") != 0)
    spry_fatal("data.dataset: %s is not a spry labelled dataset (root attribute kind = '%s', expected 'labelled'; "
               "build one with data/build_datasets.py)", path, kind);
  if (spry_h5_attr_int(f, "n_class", &n_class) < 0 || n_class < 2 || spry_h5_attr_int(f, "vocab_size", &vocab) < 0 ||
      vocab < 2)
    spry_fatal("data.dataset: %s: missing or invalid attributes n_class (%lld) / vocab_size (%lld)", path,
               (long long)n_class, (long long)vocab);
  hsize_t dims[4];
  if (spry_h5_dims(f, "lengths", dims) != 1) spry_fatal("data.dataset: %s: no 1-d dataset 'lengths'", path);
  int n = (int)dims[0];
  hsize_t tdims[4];
  if (spry_h5_dims(f, "tokens", tdims) != 1) spry_fatal("data.dataset: %s: no 1-d dataset 'tokens'", path);
  size_t n_tok = (size_t)tdims[0];
  int64_t *offsets = spry_alloc("dataset", sizeof(int64_t) * ((size_t)n + 1));
  int32_t *tokens = spry_alloc("dataset", sizeof(int32_t) * (n_tok > 0 ? n_tok : 1));
  int32_t *lengths = spry_alloc("dataset", sizeof(int32_t) * (size_t)(n > 0 ? n : 1));
  if (n < 1) spry_fatal("data.dataset: %s holds no examples", path);
  if (spry_h5_read(f, "offsets", H5T_NATIVE_INT64, offsets, (size_t)n + 1) < 0 ||
      spry_h5_read(f, "tokens", H5T_NATIVE_INT32, tokens, n_tok) < 0 ||
      spry_h5_read(f, "lengths", H5T_NATIVE_INT32, lengths, (size_t)n) < 0)
    spry_fatal("data.dataset: %s: datasets tokens/offsets/lengths missing, empty or of inconsistent sizes "
               "(expected offsets of n+1 = %d entries)", path, n + 1);
  int longest = 0;
  for (int i = 0; i < n; i++) {
    if (lengths[i] < 1 || offsets[i + 1] - offsets[i] != lengths[i] || offsets[i + 1] > (int64_t)n_tok)
      spry_fatal("data.dataset: %s: example %d has length %d but offsets [%lld, %lld) (truncated or corrupt file)",
                 path, i, lengths[i], (long long)offsets[i], (long long)offsets[i + 1]);
    if (lengths[i] > longest) longest = lengths[i];
  }
  if (longest > max_len)
    spry_fatal("data.dataset: %s has examples of up to %d tokens, longer than the %d the model takes "
               "(data.max_len, or model.n_ctx when it is 0): raise model.n_ctx or rebuild the dataset with a "
               "smaller --max-len", path, longest, max_len);
  spry_dataset *ds = dataset_alloc(n, longest, (int)n_class, (int)vocab);
  if (spry_h5_read(f, "labels", H5T_NATIVE_INT32, ds->labels, (size_t)n) < 0 ||
      spry_h5_read(f, "split", H5T_NATIVE_UINT8, ds->is_test, (size_t)n) < 0)
    spry_fatal("data.dataset: %s: datasets labels/split missing or not of %d entries", path, n);
  for (int i = 0; i < n; i++) {
    if (ds->labels[i] < 0 || ds->labels[i] >= n_class)
      spry_fatal("data.dataset: %s: example %d has label %d, outside [0, n_class = %lld)", path, i, ds->labels[i],
                 (long long)n_class);
    if (ds->is_test[i] > 1) spry_fatal("data.dataset: %s: example %d has split %d (0 or 1 allowed)", path, i,
                                       ds->is_test[i]);
    ds->lengths[i] = lengths[i];
    for (int t = 0; t < lengths[i]; t++) {
      int32_t id = tokens[offsets[i] + t];
      if (id < 0 || id >= vocab)
        spry_fatal("data.dataset: %s: example %d holds token id %d outside [0, vocab_size = %lld)", path, i, id,
                   (long long)vocab);
      ds->tokens[(size_t)i * longest + t] = id;
    }
  }
  /* class names: fixed-length strings */
  hid_t cn = H5Dopen2(f, "class_names", H5P_DEFAULT);
  if (cn < 0) spry_fatal("data.dataset: %s: no dataset 'class_names'", path);
  hid_t ft = H5Dget_type(cn);
  size_t sz = H5Tget_size(ft);
  char *names = spry_alloc("dataset", (sz + 1) * (size_t)n_class);
  hid_t mt = H5Tcopy(H5T_C_S1);
  H5Tset_size(mt, sz + 1);
  if (H5Tis_variable_str(ft) > 0 || H5Dread(cn, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, names) < 0)
    spry_fatal("data.dataset: %s: 'class_names' must hold %lld fixed-length strings", path, (long long)n_class);
  for (int c = 0; c < n_class; c++) {
    ds->class_names[c] = spry_alloc("dataset", sz + 1);
    memcpy(ds->class_names[c], names + (sz + 1) * (size_t)c, sz);
  }
  H5Tclose(mt);
  H5Tclose(ft);
  H5Dclose(cn);
  H5Fclose(f);
  spry_free(&names);
  spry_free(&offsets);
  spry_free(&tokens);
  spry_free(&lengths);
  snprintf(ds->source, sizeof ds->source, "%s", path);
  return ds;
}
