#include "spry/basemodel.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "spry/core.h"
#include "spry/h5util.h"
#include "spry/safetensors.h"

static const struct {
  const char *name;
  size_t field;
} arch_fields[] = {
    {"n_layer", offsetof(spry_model_config, n_layer)},
    {"n_head", offsetof(spry_model_config, n_head)},
    {"n_embd", offsetof(spry_model_config, n_embd)},
    {"vocab_size", offsetof(spry_model_config, vocab_size)},
};

/* ---- the checksum ---------------------------------------------------------------------------------------
 * params_fnv1a64: FNV-1a 64 over the architecture attributes (int64, in the order below; absent = INT64_MIN) and
 * every dataset of /params in name order (its name, its dims as uint64, its values as float32). */
static const char *const digest_attrs[] = {"n_layer", "n_head", "n_embd", "n_ctx", "vocab_size", "causal"};

static int base_digest(hid_t f, const char *path, uint64_t *out, char *err, size_t errlen) {
  uint64_t h = 0;
  for (size_t i = 0; i < sizeof digest_attrs / sizeof digest_attrs[0]; i++) {
    int64_t v = INT64_MIN;
    if (spry_h5_attr_int(f, digest_attrs[i], &v) < 0) v = INT64_MIN;
    h = spry_fnv1a(&v, sizeof v, h);
  }
  hid_t g = H5Lexists(f, "params", H5P_DEFAULT) > 0 ? H5Gopen2(f, "params", H5P_DEFAULT) : -1;
  H5G_info_t gi;
  if (g < 0 || H5Gget_info(g, &gi) < 0) {
    snprintf(err, errlen, "%s has no readable group /params", path);
    if (g >= 0) H5Gclose(g);
    return -1;
  }
  int rc = 0;
  for (hsize_t i = 0; i < gi.nlinks && rc == 0; i++) {
    char name[256];
    ssize_t nl = H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, i, name, sizeof name, H5P_DEFAULT);
    hsize_t dims[4] = {0, 0, 0, 0};
    int nd = nl > 0 && (size_t)nl < sizeof name ? spry_h5_dims(g, name, dims) : -1;
    size_t count = nd >= 0 ? 1 : 0;
    for (int k = 0; k < nd; k++) count = dims[k] > 0 && count <= ((size_t)1 << 34) / dims[k] ? count * dims[k] : 0;
    if (nd < 0 || count == 0) {
      snprintf(err, errlen, "%s: /params entry %llu (%s) is not a readable tensor of at most 2^34 values", path,
               (unsigned long long)i, nl > 0 ? name : "?");
      rc = -1;
      break;
    }
    float *x = spry_alloc_floats("base model", count);
    if (spry_h5_read(g, name, H5T_NATIVE_FLOAT, x, count) < 0) {
      snprintf(err, errlen, "%s: tensor /params/%s cannot be read (truncated or corrupt file)", path, name);
      rc = -1;
    } else {
      uint64_t d64[4] = {dims[0], dims[1], dims[2], dims[3]};
      h = spry_fnv1a(name, strlen(name) + 1, h);
      h = spry_fnv1a(d64, sizeof(uint64_t) * (size_t)nd, h);
      h = spry_fnv1a(x, sizeof(float) * count, h);
    }
    spry_free(&x);
  }
  H5Gclose(g);
  *out = h;
  return rc;
}

/* Verify the stored checksum; 0, or -1 with the reason (absent, mismatch, unreadable) in err. */
static int base_verify(hid_t f, const char *path, char *err, size_t errlen) {
  uint64_t want = 0, got = 0;
  hid_t a = H5Aexists(f, "params_fnv1a64") > 0 ? H5Aopen(f, "params_fnv1a64", H5P_DEFAULT) : -1;
  int have = a >= 0 && H5Aget_storage_size(a) == sizeof want && H5Aread(a, H5T_NATIVE_UINT64, &want) >= 0;
  if (a >= 0) H5Aclose(a);
  if (!have) {
    snprintf(err, errlen, "%s has no checksum (root attribute params_fnv1a64, written by spry pretrain since "
             "this checksum existed): a damaged base model cannot be told from a good one. If this is the file you mean, add the "
             "checksum once with: spry base-checksum %s", path, path);
    return -1;
  }
  if (base_digest(f, path, &got, err, errlen) != 0) return -1;
  if (got != want) {
    snprintf(err, errlen, "%s: corrupt base model: its weights and architecture have checksum %016" PRIx64 ", the "
             "file says %016" PRIx64 " (changed or damaged after it was written)", path, got, want);
    return -1;
  }
  return 0;
}

int spry_base_checksum_main(const char *path) {
  char err[4600];
  if (!spry_h5_probe(path, err, sizeof err)) {
    fprintf(stderr, "spry base-checksum: %s\n", err);
    return 2;
  }
  hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
  char format[64] = "";
  if (f < 0 || spry_h5_attr_str(f, "format", format, sizeof format) < 0 || strcmp(format, "spry-model") != 0) {
    fprintf(stderr, "spry base-checksum: %s is not a writable spry base-model file (format '%s')\n", path, format);
    if (f >= 0) H5Fclose(f);
    return 2;
  }
  int rc = 0;
  if (H5Aexists(f, "params_fnv1a64") > 0) {
    rc = base_verify(f, path, err, sizeof err) == 0 ? 0 : 2;
    if (rc) fprintf(stderr, "spry base-checksum: %s\n", err);
    else printf("%s: checksum present and correct (nothing changed)\n", path);
  } else {
    uint64_t h;
    if (base_digest(f, path, &h, err, sizeof err) != 0) {
      fprintf(stderr, "spry base-checksum: %s\n", err);
      rc = 2;
    } else {
      hid_t sp = H5Screate(H5S_SCALAR);
      hid_t a = H5Acreate2(f, "params_fnv1a64", H5T_STD_U64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
      rc = a >= 0 && H5Awrite(a, H5T_NATIVE_UINT64, &h) >= 0 ? 0 : 2;
      if (a >= 0) H5Aclose(a);
      H5Sclose(sp);
      if (rc) fprintf(stderr, "spry base-checksum: %s: cannot write the attribute\n", path);
      else printf("%s: checksum %016" PRIx64 " added (weights unchanged)\n", path, h);
    }
  }
  if (H5Fclose(f) < 0 && rc == 0) {
    fprintf(stderr, "spry base-checksum: %s: cannot close the file\n", path);
    rc = 2;
  }
  return rc;
}

void spry_base_load(spry_model *m, const char *base, uint32_t seed) {
  if (strcmp(base, "random") == 0) {
    spry_model_init_backbone(m, seed);
    return;
  }
  size_t n = strlen(base);
  if (n >= 12 && strcmp(base + n - 12, ".safetensors") == 0) { /* a Hugging Face GPT-2 checkpoint */
    spry_st_load_gpt2(m, base, seed);
    return;
  }
  char err[4600];
  if (!spry_h5_probe(base, err, sizeof err))
    spry_fatal("model.base: %s%s", err,
               base[0] == '/' ? ""
                              : " (a relative path is read from the current directory: run from the repository "
                                "root, give an absolute path, or set model.base = random)");
  hid_t f = H5Fopen(base, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) spry_fatal("model.base: %s: HDF5 cannot open it (truncated or corrupt file)", base);
  char format[64] = "";
  if (spry_h5_attr_str(f, "format", format, sizeof format) < 0 || strcmp(format, "spry-model") != 0)
    spry_fatal("model.base: %s is not a spry base-model file (root attribute format = '%s', expected "
               "'spry-model'; make one with `spry pretrain`)", base, format);
  if (base_verify(f, base, err, sizeof err) != 0) spry_fatal("model.base: %s", err);
  const spry_model_config *mc = spry_model_cfg(m);
  for (size_t i = 0; i < sizeof arch_fields / sizeof arch_fields[0]; i++) {
    int64_t v;
    int want = *(const int *)((const char *)mc + arch_fields[i].field);
    if (spry_h5_attr_int(f, arch_fields[i].name, &v) < 0)
      spry_fatal("model.base: %s has no attribute %s", base, arch_fields[i].name);
    if (v != want)
      spry_fatal("model.base: %s was trained with %s = %lld but the configuration has model.%s = %d (the "
                 "architecture must match the base model)", base, arch_fields[i].name, (long long)v,
                 arch_fields[i].name, want);
  }
  int64_t n_ctx;
  if (spry_h5_attr_int(f, "n_ctx", &n_ctx) < 0 || n_ctx < mc->n_ctx)
    spry_fatal("model.base: %s has n_ctx = %lld, shorter than model.n_ctx = %d", base, (long long)n_ctx, mc->n_ctx);
  hid_t g = H5Gopen2(f, "params", H5P_DEFAULT);
  if (g < 0) spry_fatal("model.base: %s has no group /params", base);
  const spry_param *p = spry_model_params(m);
  for (int i = 0; i < spry_model_n_params(m); i++) {
    if (p[i].trainable) continue;
    hsize_t dims[4];
    int nd = spry_h5_dims(g, p[i].name, dims);
    if (nd < 0) spry_fatal("model.base: %s has no tensor /params/%s", base, p[i].name);
    float *dst = spry_model_param_data(m, &p[i]);
    if (strcmp(p[i].name, "wpe.weight") == 0 && nd == 2 && (int64_t)dims[0] >= p[i].shape[0] &&
        (int)dims[1] == p[i].shape[1]) {
      /* a longer position table: take its first n_ctx rows */
      hid_t ds = SPRY_CHECK_H5(H5Dopen2(g, p[i].name, H5P_DEFAULT));
      hid_t fs = SPRY_CHECK_H5(H5Dget_space(ds));
      hsize_t start[2] = {0, 0}, count[2] = {(hsize_t)p[i].shape[0], (hsize_t)p[i].shape[1]};
      SPRY_CHECK_H5(H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL));
      hid_t ms = SPRY_CHECK_H5(H5Screate_simple(2, count, NULL));
      SPRY_CHECK_H5(H5Dread(ds, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, dst));
      H5Sclose(ms), H5Sclose(fs), H5Dclose(ds);
      continue;
    }
    int shape_ok = nd == p[i].ndim && (int)dims[0] == p[i].shape[0] && (nd == 1 || (int)dims[1] == p[i].shape[1]);
    if (!shape_ok || spry_h5_read(g, p[i].name, H5T_NATIVE_FLOAT, dst, p[i].count) < 0)
      spry_fatal("model.base: %s: tensor %s has the wrong shape or cannot be read (expected %d x %d)", base,
                 p[i].name, p[i].shape[0], p[i].ndim > 1 ? p[i].shape[1] : 1);
  }
  H5Gclose(g);
  H5Fclose(f);
}

void spry_base_save(spry_model *m, const char *path, const char *extra_attrs_ini) {
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  hid_t fcpl = SPRY_CHECK_H5(H5Pcreate(H5P_FILE_CREATE));
  hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, fcpl, H5P_DEFAULT);
  if (f < 0) spry_fatal("cannot create %s (directory missing or not writable?)", tmp);
  H5Pclose(fcpl);
  const spry_model_config *mc = spry_model_cfg(m);
  spry_h5_write_attr_str(f, "format", "spry-model");
  spry_h5_write_attr_int(f, "format_version", 1);
  spry_h5_write_attr_int(f, "n_layer", mc->n_layer);
  spry_h5_write_attr_int(f, "n_head", mc->n_head);
  spry_h5_write_attr_int(f, "n_embd", mc->n_embd);
  spry_h5_write_attr_int(f, "n_ctx", mc->n_ctx);
  spry_h5_write_attr_int(f, "vocab_size", mc->vocab_size);
  spry_h5_write_attr_int(f, "causal", mc->causal);
  spry_h5_write_attr_str(f, "spry_version", SPRY_VERSION);
  if (extra_attrs_ini) spry_h5_write_attr_str(f, "config", extra_attrs_ini);
  hid_t g = SPRY_CHECK_H5(H5Gcreate2(f, "params", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  const spry_param *p = spry_model_params(m);
  for (int i = 0; i < spry_model_n_params(m); i++) {
    if (p[i].trainable) continue;
    hsize_t dims[2] = {(hsize_t)p[i].shape[0], (hsize_t)p[i].shape[1]};
    hid_t sp = SPRY_CHECK_H5(H5Screate_simple(p[i].ndim, dims, NULL));
    hid_t dcpl = SPRY_CHECK_H5(H5Pcreate(H5P_DATASET_CREATE));
    SPRY_CHECK_H5(H5Pset_obj_track_times(dcpl, 0));
    hid_t ds = SPRY_CHECK_H5(H5Dcreate2(g, p[i].name, H5T_IEEE_F32LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT));
    SPRY_CHECK_H5(H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, spry_model_param_data(m, &p[i])));
    H5Dclose(ds), H5Pclose(dcpl), H5Sclose(sp);
  }
  H5Gclose(g);
  uint64_t h;
  char err[4600];
  if (base_digest(f, tmp, &h, err, sizeof err) != 0) spry_fatal("%s", err);
  hid_t sp = SPRY_CHECK_H5(H5Screate(H5S_SCALAR));
  hid_t a = SPRY_CHECK_H5(H5Acreate2(f, "params_fnv1a64", H5T_STD_U64LE, sp, H5P_DEFAULT, H5P_DEFAULT));
  SPRY_CHECK_H5(H5Awrite(a, H5T_NATIVE_UINT64, &h));
  H5Aclose(a), H5Sclose(sp);
  SPRY_CHECK_H5(H5Fclose(f));
  if (rename(tmp, path) != 0) spry_fatal("cannot rename %s to %s", tmp, path);
}
