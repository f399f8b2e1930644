/* The run file writer; see include/spry/runlog.h and docs/runfile.md. */
#include "spry/runlog.h"

#include <hdf5.h>
#include <hdf5_hl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "spry/core.h"
#include "spry/h5util.h"
#include "spry/mpi_util.h"

/* Axes named by dimension scales. */
enum { AX_ROUND, AX_SLOT, AX_CLIENT, AX_CLASS, AX_PARAM, AX_BLOCK, AX_STEP, AX_K, AX_BATCH, AX_NONE, N_AXES = AX_NONE };
static const char *const AXIS_NAME[N_AXES] = {"round", "slot", "client", "class", "parameter",
                                              "block", "step", "k",      "batch"};

/* The datasets that grow by one row per round. */
enum {
  S_ROUND_AXIS,
  S_METRICS,
  S_RESOURCES,
  S_BLOCK_COUNT,
  S_AGGREGATE,
  S_TRUE_GLOBAL,
  S_BATCH_GLOBAL,
  S_CLASS_GRADS,
  S_BIAS_SQ,
  S_BATCH_BIAS_SQ,
  S_CLASS_VAR,
  S_INFO,
  S_RANK,
  S_ASSIGNED,
  S_SCALARS,
  S_STEP_K,
  S_K_INDEX,
  S_SAMPLES,
  S_ESTIMATE,
  S_BATCH_GRAD,
  S_LOCAL_GRAD,
  S_MB_VAR,
  S_RESIDUAL,
  N_SERIES
};

typedef struct {
  const char *path;
  int present;    /* written at this configuration's log level */
  int per_slot;   /* dims[1] = M, rows written by the slot's rank */
  int ndim;       /* including the round axis */
  hsize_t dims[4];  /* dims[0] = rounds written */
  hsize_t chunk[4];
  int axes[4];
  hid_t mtype;    /* memory type (not owned for native types; owned for compounds) */
  int owns_type;
  hid_t dset;
  size_t elem;    /* bytes of one element (memory) */
} series;

/* Row types: the file uses these exact layouts (no conversion: parallel HDF5 writes filtered data collectively
 * only without datatype conversion), so they are laid out without padding bytes. */
typedef struct {
  double train_loss, eval_loss, eval_acc, local_acc;
  double sq_error, cosine, z2, batch_z2;
  double objective, grad_sq, pool_objective, pool_grad_sq, secant;
  double personal_acc, personal_loss;
  uint64_t bytes_up, bytes_down;
  int64_t evaluated;
} metrics_row;
_Static_assert(sizeof(metrics_row) == 144, "metrics_row must have no padding");

typedef struct {
  double seconds;
  uint64_t peak_bytes;
} resources_row;
_Static_assert(sizeof(resources_row) == 16, "resources_row must have no padding");

typedef struct {
  int32_t slot, client, n_blocks, n_steps, K, n_examples, test_correct, test_count, personal_correct, personal_count;
  double weight, loss, test_loss, personal_loss;
  uint64_t bytes_up, bytes_down;
} slot_row;
_Static_assert(sizeof(slot_row) == 88, "slot_row must have no padding");

struct spry_runlog {
  spry_config cfg;
  MPI_Comm comm;
  int rank, size;
  char path[4096];
  hid_t file, dxpl;
  hid_t done_attr; /* the root attribute rounds_done, kept open */
  series s[N_SERIES];
  series wts, wts_round; /* log.weights_every > 0: /weights/w [Rw, d], /weights/round [Rw] (rows: wrows) */
  uint32_t wrows;
  int M, L, C, N, S, K, B;
  size_t d;
  uint32_t rounds; /* rows written */
  void *buf;       /* row assembly buffer */
  size_t buf_cap;
  double seconds;
  double round_seconds; /* sum of the rounds' own seconds (rank 0 record) */
};

/* ---- small helpers -------------------------------------------------------------------------------------- */

static void *grow(spry_runlog *g, size_t bytes) {
  if (bytes > g->buf_cap) {
    spry_free(&g->buf);
    g->buf_cap = bytes + bytes / 2 + 64;
    g->buf = spry_alloc("run file", g->buf_cap);
  }
  return g->buf;
}

static void attr_text(hid_t loc, const char *name, const char *s) {
  if (H5Aexists(loc, name) > 0) SPRY_CHECK_H5(H5Adelete(loc, name));
  hid_t t = SPRY_CHECK_H5(H5Tcopy(H5T_C_S1));
  SPRY_CHECK_H5(H5Tset_size(t, H5T_VARIABLE));
  SPRY_CHECK_H5(H5Tset_cset(t, H5T_CSET_UTF8));
  hid_t sp = SPRY_CHECK_H5(H5Screate(H5S_SCALAR));
  hid_t a = SPRY_CHECK_H5(H5Acreate2(loc, name, t, sp, H5P_DEFAULT, H5P_DEFAULT));
  SPRY_CHECK_H5(H5Awrite(a, t, &s));
  H5Aclose(a);
  H5Sclose(sp);
  H5Tclose(t);
}

/* A dataset written whole by rank 0 (every rank takes part: creation is collective). */
static hid_t static_dataset(spry_runlog *g, hid_t loc, const char *name, hid_t ftype, hid_t mtype, int ndim,
                            const hsize_t *dims, const void *data, const int *axes) {
  hid_t sp = SPRY_CHECK_H5(H5Screate_simple(ndim, dims, NULL));
  hid_t ds = SPRY_CHECK_H5(H5Dcreate2(loc, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  hid_t fsp = SPRY_CHECK_H5(H5Dget_space(ds));
  hid_t msp = SPRY_CHECK_H5(H5Screate_simple(ndim, dims, NULL));
  if (g->rank != 0) {
    SPRY_CHECK_H5(H5Sselect_none(fsp));
    SPRY_CHECK_H5(H5Sselect_none(msp));
  }
  static const char dummy[16];
  hsize_t elems = 1;
  for (int i = 0; i < ndim; i++) elems *= dims[i];
  if (elems > 0) /* an empty dataset (K = 0 for backprop) has nothing to write */
    SPRY_CHECK_H5(H5Dwrite(ds, mtype, msp, fsp, g->dxpl, g->rank == 0 && data ? data : (const void *)dummy));
  H5Sclose(msp);
  H5Sclose(fsp);
  H5Sclose(sp);
  if (axes) {
    for (int i = 0; i < ndim; i++) {
      if (axes[i] == AX_NONE) continue;
      char p[64];
      snprintf(p, sizeof p, "/axes/%s", AXIS_NAME[axes[i]]);
      hid_t sc = SPRY_CHECK_H5(H5Dopen2(g->file, p, H5P_DEFAULT));
      SPRY_CHECK_H5(H5DSattach_scale(ds, sc, (unsigned)i));
      H5Dclose(sc);
    }
  }
  return ds;
}

static void write_static(spry_runlog *g, hid_t loc, const char *name, hid_t ftype, hid_t mtype, int ndim,
                         const hsize_t *dims, const void *data, const int *axes) {
  H5Dclose(static_dataset(g, loc, name, ftype, mtype, ndim, dims, data, axes));
}

/* ---- the series table ----------------------------------------------------------------------------------- */

static hid_t metrics_type(void) {
  hid_t t = SPRY_CHECK_H5(H5Tcreate(H5T_COMPOUND, sizeof(metrics_row)));
  H5Tinsert(t, "train_loss", HOFFSET(metrics_row, train_loss), H5T_NATIVE_DOUBLE);
  H5Tinsert(t, "evaluated", HOFFSET(metrics_row, evaluated), H5T_NATIVE_INT64);
  H5Tinsert(t, "eval_loss", HOFFSET(metrics_row, eval_loss), H5T_NATIVE_DOUBLE);
  H5Tinsert(t, "eval_acc", HOFFSET(metrics_row, eval_acc), H5T_NATIVE_DOUBLE);
  H5Tinsert(t, "local_acc", HOFFSET(metrics_row, local_acc), H5T_NATIVE_DOUBLE);
  H5Tinsert(t, "bytes_up", HOFFSET(metrics_row, bytes_up), H5T_NATIVE_UINT64);
  H5Tinsert(t, "bytes_down", HOFFSET(metrics_row, bytes_down), H5T_NATIVE_UINT64);
  H5Tinsert(t, "sq_error", HOFFSET(metrics_row, sq_error), H5T_NATIVE_DOUBLE);
  H5Tinsert(t, "cosine", HOFFSET(metrics_row, cosine), H5T_NATIVE_DOUBLE);
  H5Tinsert(t, "z2", HOFFSET(metrics_row, z2), H5T_NATIVE_DOUBLE);
  H5Tinsert(t, "batch_z2", HOFFSET(metrics_row, batch_z2), H5T_NATIVE_DOUBLE);
  H5Tinsert(t, "objective", HOFFSET(metrics_row, objective), H5T_NATIVE_DOUBLE);
  H5Tinsert(t, "grad_sq", HOFFSET(metrics_row, grad_sq), H5T_NATIVE_DOUBLE);
  H5Tinsert(t, "pool_objective", HOFFSET(metrics_row, pool_objective), H5T_NATIVE_DOUBLE);
  H5Tinsert(t, "pool_grad_sq", HOFFSET(metrics_row, pool_grad_sq), H5T_NATIVE_DOUBLE);
  H5Tinsert(t, "secant", HOFFSET(metrics_row, secant), H5T_NATIVE_DOUBLE);
  H5Tinsert(t, "personal_acc", HOFFSET(metrics_row, personal_acc), H5T_NATIVE_DOUBLE);
  H5Tinsert(t, "personal_loss", HOFFSET(metrics_row, personal_loss), H5T_NATIVE_DOUBLE);
  return t;
}

static hid_t resources_type(void) {
  hid_t t = SPRY_CHECK_H5(H5Tcreate(H5T_COMPOUND, sizeof(resources_row)));
  H5Tinsert(t, "seconds", HOFFSET(resources_row, seconds), H5T_NATIVE_DOUBLE);
  H5Tinsert(t, "peak_bytes", HOFFSET(resources_row, peak_bytes), H5T_NATIVE_UINT64);
  return t;
}

static hid_t slot_type(void) {
  hid_t t = SPRY_CHECK_H5(H5Tcreate(H5T_COMPOUND, sizeof(slot_row)));
  H5Tinsert(t, "slot", HOFFSET(slot_row, slot), H5T_NATIVE_INT32);
  H5Tinsert(t, "client", HOFFSET(slot_row, client), H5T_NATIVE_INT32);
  H5Tinsert(t, "n_blocks", HOFFSET(slot_row, n_blocks), H5T_NATIVE_INT32);
  H5Tinsert(t, "n_steps", HOFFSET(slot_row, n_steps), H5T_NATIVE_INT32);
  H5Tinsert(t, "K", HOFFSET(slot_row, K), H5T_NATIVE_INT32);
  H5Tinsert(t, "n_examples", HOFFSET(slot_row, n_examples), H5T_NATIVE_INT32);
  H5Tinsert(t, "weight", HOFFSET(slot_row, weight), H5T_NATIVE_DOUBLE);
  H5Tinsert(t, "loss", HOFFSET(slot_row, loss), H5T_NATIVE_DOUBLE);
  H5Tinsert(t, "test_correct", HOFFSET(slot_row, test_correct), H5T_NATIVE_INT32);
  H5Tinsert(t, "test_count", HOFFSET(slot_row, test_count), H5T_NATIVE_INT32);
  H5Tinsert(t, "test_loss", HOFFSET(slot_row, test_loss), H5T_NATIVE_DOUBLE);
  H5Tinsert(t, "personal_correct", HOFFSET(slot_row, personal_correct), H5T_NATIVE_INT32);
  H5Tinsert(t, "personal_count", HOFFSET(slot_row, personal_count), H5T_NATIVE_INT32);
  H5Tinsert(t, "personal_loss", HOFFSET(slot_row, personal_loss), H5T_NATIVE_DOUBLE);
  H5Tinsert(t, "bytes_up", HOFFSET(slot_row, bytes_up), H5T_NATIVE_UINT64);
  H5Tinsert(t, "bytes_down", HOFFSET(slot_row, bytes_down), H5T_NATIVE_UINT64);
  return t;
}

static void def(series *x, const char *path, int present, int per_slot, hid_t mtype, int owns, int ndim,
                const hsize_t *tail, const int *axes) {
  memset(x, 0, sizeof *x);
  x->path = path;
  x->present = present;
  x->per_slot = per_slot;
  x->ndim = ndim;
  x->mtype = mtype;
  x->owns_type = owns;
  x->dset = -1;
  x->dims[0] = 0;
  x->chunk[0] = 1;
  x->axes[0] = AX_ROUND;
  for (int i = 1; i < ndim; i++) {
    x->dims[i] = tail[i - 1];
    x->chunk[i] = tail[i - 1] > 0 ? tail[i - 1] : 1;
    x->axes[i] = axes[i - 1];
  }
  x->elem = H5Tget_size(mtype);
  /* a chunk holds one round; long vectors are cut so that a chunk stays under ~1 MiB */
  size_t bytes = x->elem;
  for (int i = 1; i < ndim; i++) bytes *= x->chunk[i];
  for (int i = 1; i < ndim && bytes > (1u << 20); i++) {
    while (x->chunk[i] > 1 && bytes > (1u << 20)) {
      bytes /= x->chunk[i];
      x->chunk[i] = (x->chunk[i] + 1) / 2;
      bytes *= x->chunk[i];
    }
  }
}

static void define_series(spry_runlog *g) {
  const spry_config *cfg = &g->cfg;
  int lvl = cfg->log.gradients;
  hsize_t M = (hsize_t)g->M, L = (hsize_t)g->L, C = (hsize_t)g->C, S = (hsize_t)g->S, K = (hsize_t)g->K,
          B = (hsize_t)g->B, d = g->d;
  int scal = lvl >= SPRY_GRADLOG_SCALARS && g->K > 0, fwdllm = cfg->method.estimator == SPRY_EST_FWDLLM;
  series *s = g->s;
  def(&s[S_ROUND_AXIS], "/axes/round", 1, 0, H5T_NATIVE_INT64, 0, 1, NULL, NULL);
  s[S_ROUND_AXIS].axes[0] = AX_NONE;
  def(&s[S_METRICS], "/rounds/metrics", 1, 0, metrics_type(), 1, 1, NULL, NULL);
  def(&s[S_RESOURCES], "/rounds/resources", 1, 0, resources_type(), 1, 1, NULL, NULL);
  def(&s[S_BLOCK_COUNT], "/rounds/block_count", 1, 0, H5T_NATIVE_INT32, 0, 2, (hsize_t[]){L}, (int[]){AX_BLOCK});
  def(&s[S_AGGREGATE], "/rounds/aggregate", lvl >= SPRY_GRADLOG_DENSE, 0, H5T_NATIVE_FLOAT, 0, 2, (hsize_t[]){d},
      (int[]){AX_PARAM});
  def(&s[S_TRUE_GLOBAL], "/rounds/true_gradient", lvl >= SPRY_GRADLOG_ORACLE, 0, H5T_NATIVE_FLOAT, 0, 2,
      (hsize_t[]){d}, (int[]){AX_PARAM});
  def(&s[S_BATCH_GLOBAL], "/rounds/batch_gradient", lvl >= SPRY_GRADLOG_ORACLE, 0, H5T_NATIVE_FLOAT, 0, 2,
      (hsize_t[]){d}, (int[]){AX_PARAM});
  def(&s[S_BATCH_BIAS_SQ], "/rounds/batch_bias_sq", lvl >= SPRY_GRADLOG_ORACLE, 0, H5T_NATIVE_DOUBLE, 0, 2,
      (hsize_t[]){L}, (int[]){AX_BLOCK});
  def(&s[S_CLASS_GRADS], "/rounds/class_gradients", lvl >= SPRY_GRADLOG_ORACLE, 0, H5T_NATIVE_FLOAT, 0, 3,
      (hsize_t[]){C, d}, (int[]){AX_CLASS, AX_PARAM});
  def(&s[S_BIAS_SQ], "/rounds/bias_sq", lvl >= SPRY_GRADLOG_ORACLE, 0, H5T_NATIVE_DOUBLE, 0, 2, (hsize_t[]){L},
      (int[]){AX_BLOCK});
  def(&s[S_CLASS_VAR], "/rounds/class_variance", lvl >= SPRY_GRADLOG_ORACLE, 0, H5T_NATIVE_DOUBLE, 0, 2,
      (hsize_t[]){L}, (int[]){AX_BLOCK});
  def(&s[S_INFO], "/slots/info", 1, 1, slot_type(), 1, 2, (hsize_t[]){M}, (int[]){AX_SLOT});
  def(&s[S_RANK], "/slots/rank", 1, 1, H5T_NATIVE_INT32, 0, 2, (hsize_t[]){M}, (int[]){AX_SLOT});
  def(&s[S_ASSIGNED], "/slots/assigned", 1, 1, H5T_NATIVE_UINT8, 0, 3, (hsize_t[]){M, L}, (int[]){AX_SLOT, AX_BLOCK});
  def(&s[S_SCALARS], "/slots/scalars", scal, 1, H5T_NATIVE_FLOAT, 0, 4, (hsize_t[]){M, S, K},
      (int[]){AX_SLOT, AX_STEP, AX_K});
  def(&s[S_STEP_K], "/slots/step_K", scal && fwdllm, 1, H5T_NATIVE_INT32, 0, 3, (hsize_t[]){M, S},
      (int[]){AX_SLOT, AX_STEP});
  def(&s[S_K_INDEX], "/slots/k_index", scal && fwdllm, 1, H5T_NATIVE_UINT32, 0, 4, (hsize_t[]){M, S, K},
      (int[]){AX_SLOT, AX_STEP, AX_K});
  def(&s[S_SAMPLES], "/slots/sample_idx", cfg->log.sample_indices, 1, H5T_NATIVE_INT32, 0, 4, (hsize_t[]){M, S, B},
      (int[]){AX_SLOT, AX_STEP, AX_BATCH});
  def(&s[S_ESTIMATE], "/slots/estimate", lvl >= SPRY_GRADLOG_DENSE, 1, H5T_NATIVE_FLOAT, 0, 3, (hsize_t[]){M, d},
      (int[]){AX_SLOT, AX_PARAM});
  def(&s[S_BATCH_GRAD], "/slots/batch_gradient", lvl >= SPRY_GRADLOG_ORACLE, 1, H5T_NATIVE_FLOAT, 0, 3,
      (hsize_t[]){M, d}, (int[]){AX_SLOT, AX_PARAM});
  def(&s[S_LOCAL_GRAD], "/slots/local_gradient", lvl >= SPRY_GRADLOG_ORACLE, 1, H5T_NATIVE_FLOAT, 0, 3,
      (hsize_t[]){M, d}, (int[]){AX_SLOT, AX_PARAM});
  def(&s[S_MB_VAR], "/slots/minibatch_variance", lvl >= SPRY_GRADLOG_ORACLE, 1, H5T_NATIVE_DOUBLE, 0, 3,
      (hsize_t[]){M, L}, (int[]){AX_SLOT, AX_BLOCK});
  def(&s[S_RESIDUAL], "/slots/residual_sq", lvl >= SPRY_GRADLOG_ORACLE, 1, H5T_NATIVE_DOUBLE, 0, 3,
      (hsize_t[]){M, L}, (int[]){AX_SLOT, AX_BLOCK});
  /* per-slot dense rows: one slot per chunk, so each rank compresses only its own chunks */
  s[S_ESTIMATE].chunk[1] = s[S_BATCH_GRAD].chunk[1] = s[S_LOCAL_GRAD].chunk[1] = 1;
  s[S_CLASS_GRADS].chunk[1] = 1;
  /* /weights: rows are not rounds (w_0, w_n, ..., and the last), so they carry no round scale */
  int wl = cfg->log.weights_every > 0;
  def(&g->wts, "/weights/w", wl, 0, H5T_NATIVE_FLOAT, 0, 2, (hsize_t[]){d}, (int[]){AX_PARAM});
  def(&g->wts_round, "/weights/round", wl, 0, H5T_NATIVE_INT64, 0, 1, NULL, NULL);
  g->wts.axes[0] = g->wts_round.axes[0] = AX_NONE;
}

static void create_series(spry_runlog *g, series *x) {
  hsize_t maxdims[4];
  for (int i = 0; i < x->ndim; i++) maxdims[i] = x->dims[i];
  maxdims[0] = H5S_UNLIMITED;
  hid_t sp = SPRY_CHECK_H5(H5Screate_simple(x->ndim, x->dims, maxdims));
  hid_t dcpl = SPRY_CHECK_H5(H5Pcreate(H5P_DATASET_CREATE));
  SPRY_CHECK_H5(H5Pset_chunk(dcpl, x->ndim, x->chunk));
  SPRY_CHECK_H5(H5Pset_shuffle(dcpl));
  SPRY_CHECK_H5(H5Pset_deflate(dcpl, 4));
  if (x->mtype == H5T_NATIVE_FLOAT) {
    float nan = NAN;
    SPRY_CHECK_H5(H5Pset_fill_value(dcpl, H5T_NATIVE_FLOAT, &nan));
  } else if (x->mtype == H5T_NATIVE_DOUBLE) {
    double nan = NAN;
    SPRY_CHECK_H5(H5Pset_fill_value(dcpl, H5T_NATIVE_DOUBLE, &nan));
  }
  hid_t ftype = SPRY_CHECK_H5(H5Tcopy(x->mtype));
  x->dset = SPRY_CHECK_H5(H5Dcreate2(g->file, x->path, ftype, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT));
  H5Tclose(ftype);
  H5Pclose(dcpl);
  H5Sclose(sp);
  for (int i = 0; i < x->ndim; i++) {
    if (x->axes[i] == AX_NONE) continue;
    char p[64];
    snprintf(p, sizeof p, "/axes/%s", AXIS_NAME[x->axes[i]]);
    hid_t sc = SPRY_CHECK_H5(H5Dopen2(g->file, p, H5P_DEFAULT));
    SPRY_CHECK_H5(H5DSattach_scale(x->dset, sc, (unsigned)i));
    H5Dclose(sc);
  }
}

/* ---- opening -------------------------------------------------------------------------------------------- */

static const char NONDETERMINISTIC[] =
    "/@created /@git_commit /@world_size /@resume_log /@round_seconds_total /@log_seconds_total /rounds/resources "
    "/slots/rank";

static void iso_now(char *out, size_t len) {
  time_t now = time(NULL);
  struct tm tmv;
  gmtime_r(&now, &tmv);
  strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tmv);
}

/* Root attributes config (INI text) and config_hash. */
static void write_config(spry_runlog *g) {
  int n = spry_config_to_ini(&g->cfg, NULL, 0);
  SPRY_CHECK(n >= 0, "out of memory printing the configuration");
  char *text = spry_alloc("run file", (size_t)n + 1);
  spry_config_to_ini(&g->cfg, text, (size_t)n + 1);
  attr_text(g->file, "config", text);
  spry_free(&text);
  char hex[32];
  snprintf(hex, sizeof hex, "%016" PRIx64, spry_config_hash(&g->cfg));
  attr_text(g->file, "config_hash", hex);
}

static void root_attributes(spry_runlog *g, const spry_runlog_options *o) {
  const spry_config *cfg = &g->cfg;
  hid_t root = g->file;
  attr_text(root, "format", SPRY_RUNFILE_FORMAT);
  spry_h5_write_attr_int(root, "format_version", SPRY_RUNFILE_VERSION);
  attr_text(root, "spry_version", SPRY_VERSION);
  attr_text(root, "git_commit", o->git_commit ? o->git_commit : "unknown");
  char when[64];
  iso_now(when, sizeof when);
  attr_text(root, "created", when);
  spry_h5_write_attr_int(root, "world_size", g->size);
  spry_h5_write_attr_int(root, "seed", cfg->run.seed);
  write_config(g);
  char v[64];
  spry_config_get(cfg, "log.gradients", v, sizeof v);
  attr_text(root, "log_gradients", v);
  spry_h5_write_attr_int(root, "sample_indices", cfg->log.sample_indices);
  spry_h5_write_attr_int(root, "d", (int64_t)g->d);
  spry_h5_write_attr_int(root, "n_blocks", g->L);
  spry_h5_write_attr_int(root, "n_clients", g->N);
  spry_h5_write_attr_int(root, "clients_per_round", g->M);
  spry_h5_write_attr_int(root, "n_class", g->C);
  spry_h5_write_attr_int(root, "K", g->K);
  spry_h5_write_attr_int(root, "steps_max", g->S);
  spry_h5_write_attr_int(root, "batch_size", g->B);
  spry_h5_write_attr_int(root, "rounds_planned", cfg->run.rounds);
  spry_h5_write_attr_int(root, "rounds_done", 0);
  attr_text(root, "status", "running");
  attr_text(root, "resume_log", "");
  spry_h5_write_attr_double(root, "round_seconds_total", 0);
  spry_h5_write_attr_double(root, "log_seconds_total", 0);
  spry_h5_write_attr_double(root, "initial_eval_loss", NAN);
  spry_h5_write_attr_double(root, "initial_eval_acc", NAN);
  attr_text(root, "nondeterministic", NONDETERMINISTIC);
}

static void write_axes(spry_runlog *g) {
  hid_t grp = SPRY_CHECK_H5(H5Gcreate2(g->file, "axes", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  size_t sizes[N_AXES] = {0, (size_t)g->M, (size_t)g->N, (size_t)g->C, g->d,
                          (size_t)g->L, (size_t)g->S, (size_t)g->K, (size_t)g->B};
  size_t big = 1;
  for (int a = 1; a < N_AXES; a++) big = sizes[a] > big ? sizes[a] : big;
  int64_t *vals = spry_alloc("run file", sizeof(int64_t) * big);
  for (size_t i = 0; i < big; i++) vals[i] = (int64_t)i;
  for (int a = 1; a < N_AXES; a++) {
    hsize_t dims[1] = {sizes[a]};
    hid_t ds = static_dataset(g, grp, AXIS_NAME[a], H5T_STD_I64LE, H5T_NATIVE_INT64, 1, dims, vals, NULL);
    SPRY_CHECK_H5(H5DSset_scale(ds, AXIS_NAME[a]));
    H5Dclose(ds);
  }
  spry_free(&vals);
  H5Gclose(grp);
  /* the round axis grows with the rounds */
  series *x = &g->s[S_ROUND_AXIS];
  create_series(g, x);
  SPRY_CHECK_H5(H5DSset_scale(x->dset, "round"));
  /* Each scale is also hard-linked at the root (/round = /axes/round, ...: the same object, no copy). netCDF-4
   * readers (h5netcdf, hence xarray's engine="h5netcdf") look a variable's dimension scales up only in its own
   * group and the groups above it; with the links, xr.open_dataset(run, engine="h5netcdf", group="rounds") names
   * every dimension (docs/runfile.md "Reading"). */
  for (int a = 0; a < N_AXES; a++) {
    char src[64], dst[64];
    snprintf(src, sizeof src, "/axes/%s", AXIS_NAME[a]);
    snprintf(dst, sizeof dst, "/%s", AXIS_NAME[a]);
    SPRY_CHECK_H5(H5Lcreate_hard(g->file, src, g->file, dst, H5P_DEFAULT, H5P_DEFAULT));
  }
}

typedef struct {
  char name[64];
  int32_t ndim, shape[2];
  int64_t offset, count;
  int8_t trainable;
  int32_t block;
} param_row;

typedef struct {
  char name[32];
  int64_t offset, size;
  int32_t layer;
} block_row;

static void write_model(spry_runlog *g, spry_model *model) {
  hid_t grp = SPRY_CHECK_H5(H5Gcreate2(g->file, "model", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  int np = spry_model_n_params(model);
  const spry_param *pp = spry_model_params(model);
  param_row *rows = spry_alloc("run file", sizeof(param_row) * (size_t)(np > 0 ? np : 1));
  for (int i = 0; i < np; i++) {
    snprintf(rows[i].name, sizeof rows[i].name, "%s", pp[i].name);
    rows[i].ndim = pp[i].ndim;
    rows[i].shape[0] = pp[i].shape[0];
    rows[i].shape[1] = pp[i].ndim > 1 ? pp[i].shape[1] : 0;
    rows[i].offset = (int64_t)pp[i].offset;
    rows[i].count = (int64_t)pp[i].count;
    rows[i].trainable = (int8_t)pp[i].trainable;
    rows[i].block = pp[i].block;
  }
  hid_t name64 = SPRY_CHECK_H5(H5Tcopy(H5T_C_S1));
  H5Tset_size(name64, 64);
  hid_t name32 = SPRY_CHECK_H5(H5Tcopy(H5T_C_S1));
  H5Tset_size(name32, 32);
  hsize_t two[1] = {2};
  hid_t shape_t = SPRY_CHECK_H5(H5Tarray_create2(H5T_NATIVE_INT32, 1, two));
  hid_t pt = SPRY_CHECK_H5(H5Tcreate(H5T_COMPOUND, sizeof(param_row)));
  H5Tinsert(pt, "name", HOFFSET(param_row, name), name64);
  H5Tinsert(pt, "ndim", HOFFSET(param_row, ndim), H5T_NATIVE_INT32);
  H5Tinsert(pt, "shape", HOFFSET(param_row, shape), shape_t);
  H5Tinsert(pt, "offset", HOFFSET(param_row, offset), H5T_NATIVE_INT64);
  H5Tinsert(pt, "count", HOFFSET(param_row, count), H5T_NATIVE_INT64);
  H5Tinsert(pt, "trainable", HOFFSET(param_row, trainable), H5T_NATIVE_INT8);
  H5Tinsert(pt, "block", HOFFSET(param_row, block), H5T_NATIVE_INT32);
  hid_t pft = SPRY_CHECK_H5(H5Tcopy(pt));
  H5Tpack(pft);
  hsize_t dims[1] = {(hsize_t)np};
  write_static(g, grp, "params", pft, pt, 1, dims, rows, NULL);
  spry_free(&rows);

  const spry_block *bl = spry_model_blocks(model);
  block_row *brows = spry_alloc("run file", sizeof(block_row) * (size_t)g->L);
  int64_t *bsize = spry_alloc("run file", sizeof(int64_t) * (size_t)g->L);
  for (int l = 0; l < g->L; l++) {
    snprintf(brows[l].name, sizeof brows[l].name, "%s", bl[l].name);
    brows[l].offset = (int64_t)bl[l].offset;
    brows[l].size = (int64_t)bl[l].size;
    brows[l].layer = bl[l].layer;
    bsize[l] = (int64_t)bl[l].size;
  }
  hid_t bt = SPRY_CHECK_H5(H5Tcreate(H5T_COMPOUND, sizeof(block_row)));
  H5Tinsert(bt, "name", HOFFSET(block_row, name), name32);
  H5Tinsert(bt, "offset", HOFFSET(block_row, offset), H5T_NATIVE_INT64);
  H5Tinsert(bt, "size", HOFFSET(block_row, size), H5T_NATIVE_INT64);
  H5Tinsert(bt, "layer", HOFFSET(block_row, layer), H5T_NATIVE_INT32);
  hid_t bft = SPRY_CHECK_H5(H5Tcopy(bt));
  H5Tpack(bft);
  hsize_t ldims[1] = {(hsize_t)g->L};
  write_static(g, grp, "blocks", bft, bt, 1, ldims, brows, (int[]){AX_BLOCK});
  write_static(g, grp, "block_size", H5T_STD_I64LE, H5T_NATIVE_INT64, 1, ldims, bsize, (int[]){AX_BLOCK});
  spry_free(&brows);
  spry_free(&bsize);
  hsize_t ddims[1] = {g->d};
  write_static(g, grp, "w_init", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 1, ddims, spry_model_w(model), (int[]){AX_PARAM});
  H5Tclose(pt);
  H5Tclose(pft);
  H5Tclose(bt);
  H5Tclose(bft);
  H5Tclose(shape_t);
  H5Tclose(name64);
  H5Tclose(name32);
  H5Gclose(grp);
}

static void write_partition(spry_runlog *g, const spry_partition *part, const spry_dataset *ds) {
  hid_t grp = SPRY_CHECK_H5(H5Gcreate2(g->file, "partition", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  spry_h5_write_attr_double(grp, "alpha", g->cfg.fl.alpha);
  char v[64];
  spry_config_get(&g->cfg, "fl.quantity_skew", v, sizeof v);
  attr_text(grp, "quantity_skew", v);
  spry_h5_write_attr_double(grp, "quantity_param", g->cfg.fl.quantity_param);
  spry_h5_write_attr_double(grp, "test_fraction", g->cfg.fl.test_fraction);
  attr_text(grp, "partition", spry_partition_mode_name(part->mode));
  spry_h5_write_attr_int(grp, "examples_per_client", (int64_t)g->cfg.fl.examples_per_client);
  hsize_t nc[2] = {(hsize_t)g->N, (hsize_t)g->C}, n1[1] = {(hsize_t)g->N}, c1[1] = {(hsize_t)g->C};
  int ax_nc[2] = {AX_CLIENT, AX_CLASS}, ax_n[1] = {AX_CLIENT}, ax_c[1] = {AX_CLASS};
  write_static(g, grp, "label_counts", H5T_STD_I32LE, H5T_NATIVE_INT32, 2, nc, part->train_counts, ax_nc);
  write_static(g, grp, "test_label_counts", H5T_STD_I32LE, H5T_NATIVE_INT32, 2, nc, part->test_counts, ax_nc);
  write_static(g, grp, "proportions", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 2, nc, part->proportions, ax_nc);
  /* realised vs drawn (THEORY 5.6): the train label mix each client really holds, and its distance to pi_m */
  double *realised = spry_alloc("run file", sizeof(double) * (size_t)g->N * (size_t)(g->C > 0 ? g->C : 1));
  double *distance = spry_alloc("run file", sizeof(double) * (size_t)g->N);
  for (int m = 0; m < g->N; m++) {
    spry_partition_realised(part, m, realised + (size_t)m * g->C);
    distance[m] = spry_partition_distance(part, m);
  }
  write_static(g, grp, "realised_proportions", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 2, nc, realised, ax_nc);
  write_static(g, grp, "proportion_distance", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 1, n1, distance, ax_n);
  write_static(g, grp, "pool_label_counts", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, c1, part->pool_counts, ax_c);
  spry_free(&realised);
  spry_free(&distance);
  int32_t *n_train = spry_alloc("run file", sizeof(int32_t) * (size_t)g->N);
  int32_t *n_test = spry_alloc("run file", sizeof(int32_t) * (size_t)g->N);
  for (int m = 0; m < g->N; m++) {
    n_train[m] = spry_partition_n_train(part, m);
    n_test[m] = spry_partition_n_test(part, m);
  }
  write_static(g, grp, "n_train", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, n1, n_train, ax_n);
  write_static(g, grp, "n_test", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, n1, n_test, ax_n);
  spry_free(&n_train);
  spry_free(&n_test);
  /* fixed-length strings: parallel HDF5 cannot write variable-length data */
  size_t width = 1;
  for (int c = 0; c < g->C; c++)
    if (ds->class_names && ds->class_names[c] && strlen(ds->class_names[c]) > width) width = strlen(ds->class_names[c]);
  char *names = spry_alloc("run file", width * (size_t)(g->C > 0 ? g->C : 1));
  for (int c = 0; c < g->C; c++)
    if (ds->class_names && ds->class_names[c]) memcpy(names + (size_t)c * width, ds->class_names[c], strlen(ds->class_names[c]));
  hid_t st = SPRY_CHECK_H5(H5Tcopy(H5T_C_S1));
  SPRY_CHECK_H5(H5Tset_size(st, width));
  SPRY_CHECK_H5(H5Tset_strpad(st, H5T_STR_NULLPAD));
  SPRY_CHECK_H5(H5Tset_cset(st, H5T_CSET_UTF8));
  write_static(g, grp, "class_names", st, st, 1, c1, names, ax_c);
  spry_free(&names);
  H5Tclose(st);
  H5Gclose(grp);
}

static void free_types(spry_runlog *g) {
  for (int i = 0; i < N_SERIES; i++)
    if (g->s[i].owns_type) {
      H5Tclose(g->s[i].mtype);
      g->s[i].owns_type = 0;
    }
}

static void close_file(spry_runlog *g) {
  for (int i = 0; i < N_SERIES; i++)
    if (g->s[i].dset >= 0) H5Dclose(g->s[i].dset), g->s[i].dset = -1;
  if (g->wts.dset >= 0) H5Dclose(g->wts.dset), g->wts.dset = -1;
  if (g->wts_round.dset >= 0) H5Dclose(g->wts_round.dset), g->wts_round.dset = -1;
  free_types(g);
  if (g->dxpl >= 0) H5Pclose(g->dxpl), g->dxpl = -1;
  if (g->done_attr >= 0) H5Aclose(g->done_attr), g->done_attr = -1;
  if (g->file >= 0) H5Fclose(g->file), g->file = -1;
  spry_h5_collective_end();
}

static int steps_max(const spry_config *cfg, const spry_partition *part) {
  if (cfg->method.comm == SPRY_COMM_ITERATION) return 1;
  if (cfg->method.local_steps > 0) return cfg->method.local_steps;
  int most = 1, B = cfg->data.batch_size;
  for (int m = 0; m < part->n_clients; m++) {
    int per_epoch = (spry_partition_n_train(part, m) + B - 1) / B;
    if (cfg->method.local_epochs * per_epoch > most) most = cfg->method.local_epochs * per_epoch;
  }
  return most;
}

/* Resume: the file must be this run's; truncate every series to resume_rounds rows. Returns 0 or -1 (err). */
static int reopen(spry_runlog *g, const spry_runlog_options *o, char *err, size_t errlen) {
  char format[64] = "", hex[64] = "";
  int64_t version = 0, done = 0;
  if (spry_h5_attr_str(g->file, "format", format, sizeof format) != 0 || strcmp(format, SPRY_RUNFILE_FORMAT) != 0) {
    snprintf(err, errlen, "%s: not a spry run file (format '%s'), cannot resume into it", o->path, format);
    return -1;
  }
  if (spry_h5_attr_int(g->file, "format_version", &version) != 0 || version != SPRY_RUNFILE_VERSION) {
    snprintf(err, errlen, "%s: run file format version %lld, this spry writes version %d", o->path,
             (long long)version, SPRY_RUNFILE_VERSION);
    return -1;
  }
  spry_h5_attr_str(g->file, "config_hash", hex, sizeof hex);
  char want[32];
  snprintf(want, sizeof want, "%016" PRIx64, o->resume_config_hash);
  if (strcmp(hex, want) != 0 && !o->force) {
    snprintf(err, errlen,
             "%s: the run file's configuration hash %s differs from the checkpoint's %s: they belong to different "
             "runs (use --force to resume anyway)",
             o->path, hex, want);
    return -1;
  }
  spry_h5_attr_int(g->file, "rounds_done", &done);
  if ((uint64_t)done < o->resume_rounds) {
    snprintf(err, errlen,
             "%s: the run file holds %lld finished rounds, fewer than the checkpoint's %u: it is not the file the "
             "checkpoint was written with",
             o->path, (long long)done, o->resume_rounds);
    return -1;
  }
  for (int i = 0; i < N_SERIES; i++) {
    series *x = &g->s[i];
    int exists = H5Lexists(g->file, x->path, H5P_DEFAULT) > 0;
    if (exists != x->present) {
      snprintf(err, errlen, "%s: dataset %s is %s, but this configuration %s it (log levels differ)", o->path,
               x->path, exists ? "present" : "missing", x->present ? "writes" : "does not write");
      return -1;
    }
    if (!exists) continue;
    x->dset = SPRY_CHECK_H5(H5Dopen2(g->file, x->path, H5P_DEFAULT));
    hid_t sp = SPRY_CHECK_H5(H5Dget_space(x->dset));
    hsize_t dims[4];
    int nd = H5Sget_simple_extent_ndims(sp);
    H5Sget_simple_extent_dims(sp, dims, NULL);
    H5Sclose(sp);
    int same = nd == x->ndim;
    for (int k = 1; same && k < nd; k++) same = dims[k] == x->dims[k];
    if (!same) {
      snprintf(err, errlen, "%s: dataset %s has a shape that does not match this configuration", o->path, x->path);
      return -1;
    }
    x->dims[0] = o->resume_rounds;
    SPRY_CHECK_H5(H5Dset_extent(x->dset, x->dims));
  }
  int wexists = H5Lexists(g->file, "/weights", H5P_DEFAULT) > 0 && H5Lexists(g->file, "/weights/w", H5P_DEFAULT) > 0;
  if (wexists != g->wts.present) {
    snprintf(err, errlen, "%s: /weights is %s, but this configuration %s it (log.weights_every differs)", o->path,
             wexists ? "present" : "missing", g->wts.present ? "writes" : "does not write");
    return -1;
  }
  if (wexists) { /* keep the rows of the rounds before the resume point (w_t written during round t) */
    g->wts.dset = SPRY_CHECK_H5(H5Dopen2(g->file, g->wts.path, H5P_DEFAULT));
    g->wts_round.dset = SPRY_CHECK_H5(H5Dopen2(g->file, g->wts_round.path, H5P_DEFAULT));
    hid_t sp = SPRY_CHECK_H5(H5Dget_space(g->wts_round.dset));
    hsize_t n = 0;
    H5Sget_simple_extent_dims(sp, &n, NULL);
    H5Sclose(sp);
    int64_t *r = spry_alloc("run file", sizeof(int64_t) * (size_t)(n > 0 ? n : 1));
    if (n > 0) SPRY_CHECK_H5(H5Dread(g->wts_round.dset, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, r));
    hsize_t keep = 0;
    while (keep < n && (uint64_t)r[keep] < o->resume_rounds) keep++;
    spry_free(&r);
    g->wts.dims[0] = g->wts_round.dims[0] = keep;
    SPRY_CHECK_H5(H5Dset_extent(g->wts.dset, g->wts.dims));
    SPRY_CHECK_H5(H5Dset_extent(g->wts_round.dset, g->wts_round.dims));
    g->wrows = (uint32_t)keep;
  }
  if (H5Lexists(g->file, "/model/w_final", H5P_DEFAULT) > 0) SPRY_CHECK_H5(H5Ldelete(g->file, "/model/w_final", H5P_DEFAULT));
  spry_h5_write_attr_int(g->file, "rounds_done", o->resume_rounds);
  spry_h5_write_attr_int(g->file, "rounds_planned", g->cfg.run.rounds);
  spry_h5_write_attr_int(g->file, "world_size", g->size);
  write_config(g); /* the configuration the run continues with (run.rounds may have grown; forced: new keys) */
  attr_text(g->file, "status", "running");
  char log[8192] = "";
  spry_h5_attr_str(g->file, "resume_log", log, sizeof log);
  char when[64], line[2048];
  iso_now(when, sizeof when);
  snprintf(line, sizeof line, "%s%s resumed at round %u on %d rank(s)%s%s", log[0] ? "\n" : "", when,
           o->resume_rounds, g->size, o->resume_note && o->resume_note[0] ? "; " : "",
           o->resume_note ? o->resume_note : "");
  if (strlen(log) + strlen(line) + 1 < sizeof log) strcat(log, line);
  attr_text(g->file, "resume_log", log);
  g->rounds = o->resume_rounds;
  SPRY_CHECK_H5(H5Fflush(g->file, H5F_SCOPE_GLOBAL));
  return 0;
}

spry_runlog *spry_runlog_open(const spry_runlog_options *o, char *err, size_t errlen) {
  spry_h5_quiet();
  if (getenv("SPRY_H5_ERRORS")) H5Eset_auto2(H5E_DEFAULT, (H5E_auto2_t)H5Eprint2, stderr);
  spry_runlog *g = spry_alloc("run file", sizeof *g);
  g->cfg = *o->cfg;
  g->comm = o->comm;
  g->file = g->dxpl = g->done_attr = -1;
  SPRY_CHECK_MPI(MPI_Comm_rank(o->comm, &g->rank));
  SPRY_CHECK_MPI(MPI_Comm_size(o->comm, &g->size));
  snprintf(g->path, sizeof g->path, "%s", o->path);
  g->M = g->cfg.fl.clients_per_round;
  g->N = g->cfg.fl.clients;
  g->L = spry_model_n_blocks(o->model);
  g->C = o->ds->n_class;
  g->d = spry_model_n_trainable(o->model);
  g->K = spry_config_step_K(&g->cfg);
  g->S = steps_max(&g->cfg, o->part);
  g->B = g->cfg.data.batch_size;
  define_series(g);

  hid_t fapl = SPRY_CHECK_H5(H5Pcreate(H5P_FILE_ACCESS));
  SPRY_CHECK_H5(H5Pset_fapl_mpio(fapl, o->comm, MPI_INFO_NULL));
  SPRY_CHECK_H5(H5Pset_all_coll_metadata_ops(fapl, 1));
  SPRY_CHECK_H5(H5Pset_coll_metadata_write(fapl, 1));
  spry_set_io_file(o->path); /* named by the MPI-IO error handler */
  if (o->resume) g->file = H5Fopen(o->path, H5F_ACC_RDWR, fapl);
  else g->file = H5Fcreate(o->path, o->overwrite ? H5F_ACC_TRUNC : H5F_ACC_EXCL, H5P_DEFAULT, fapl);
  H5Pclose(fapl);
  if (g->file < 0) {
    snprintf(err, errlen, "%s: cannot %s the run file (%s)", o->path, o->resume ? "open" : "create",
             o->resume ? "missing, unreadable, or not a complete HDF5 file" : "directory missing or not writable, or the file exists");
    free_types(g);
    spry_free(&g);
    return NULL;
  }
  spry_h5_collective_begin(o->path); /* any I/O error from here on ends the job with the file and the cause */
  g->dxpl = SPRY_CHECK_H5(H5Pcreate(H5P_DATASET_XFER));
  SPRY_CHECK_H5(H5Pset_dxpl_mpio(g->dxpl, H5FD_MPIO_COLLECTIVE));
  if (o->resume) {
    if (reopen(g, o, err, errlen) != 0) {
      close_file(g);
      spry_free(&g);
      return NULL;
    }
    g->done_attr = SPRY_CHECK_H5(H5Aopen(g->file, "rounds_done", H5P_DEFAULT));
    return g;
  }
  root_attributes(g, o);
  write_axes(g);
  write_model(g, o->model);
  write_partition(g, o->part, o->ds);
  H5Gclose(SPRY_CHECK_H5(H5Gcreate2(g->file, "rounds", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)));
  H5Gclose(SPRY_CHECK_H5(H5Gcreate2(g->file, "slots", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)));
  for (int i = 0; i < N_SERIES; i++)
    if (g->s[i].present && i != S_ROUND_AXIS) create_series(g, &g->s[i]);
  if (g->wts.present) {
    H5Gclose(SPRY_CHECK_H5(H5Gcreate2(g->file, "weights", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)));
    create_series(g, &g->wts);
    create_series(g, &g->wts_round);
  }
  g->done_attr = SPRY_CHECK_H5(H5Aopen(g->file, "rounds_done", H5P_DEFAULT));
  SPRY_CHECK_H5(H5Fflush(g->file, H5F_SCOPE_GLOBAL));
  return g;
}

/* ---- one round ------------------------------------------------------------------------------------------ */

/* Extend x by one row and write it: rank 0 writes the whole row (global series) or every rank its slots
 * [first, first + count) (per-slot series), from buf (row-major, the selected part only). */
static void write_row(spry_runlog *g, series *x, uint32_t t, int first, int count, const void *buf) {
  x->dims[0] = (hsize_t)t + 1;
  SPRY_CHECK_H5(H5Dset_extent(x->dset, x->dims));
  hid_t fsp = SPRY_CHECK_H5(H5Dget_space(x->dset));
  hsize_t start[4] = {t, 0, 0, 0}, cnt[4];
  for (int i = 0; i < x->ndim; i++) cnt[i] = x->dims[i];
  cnt[0] = 1;
  int mine = x->per_slot ? count > 0 : g->rank == 0;
  if (x->per_slot) {
    start[1] = (hsize_t)(first > 0 ? first : 0);
    cnt[1] = (hsize_t)(count > 0 ? count : 0);
  }
  hid_t msp;
  if (mine) {
    SPRY_CHECK_H5(H5Sselect_hyperslab(fsp, H5S_SELECT_SET, start, NULL, cnt, NULL));
    msp = SPRY_CHECK_H5(H5Screate_simple(x->ndim, cnt, NULL));
  } else {
    SPRY_CHECK_H5(H5Sselect_none(fsp));
    hsize_t one[1] = {1};
    msp = SPRY_CHECK_H5(H5Screate_simple(1, one, NULL));
    SPRY_CHECK_H5(H5Sselect_none(msp));
  }
  static const char dummy[16];
  SPRY_CHECK_H5(H5Dwrite(x->dset, x->mtype, msp, fsp, g->dxpl, mine && buf ? buf : (const void *)dummy));
  H5Sclose(msp);
  H5Sclose(fsp);
}

static void write_round(void *ctx, const spry_fed *f, const spry_round_record *rec) {
  (void)f;
  spry_runlog *g = ctx;
  double t0 = spry_now();
  const spry_config *cfg = &g->cfg;
  uint32_t t = rec->round;
  SPRY_CHECK(t == g->rounds, "run file %s: round %u arrives after %u written rounds (rounds must come in order)",
             g->path, t, g->rounds);
  int root = g->rank == 0, first = rec->first_local, n = rec->n_local, L = g->L;
  size_t d = g->d;
  series *s = g->s;
  const spry_plan *plan = rec->plan;

  int64_t tt = t;
  write_row(g, &s[S_ROUND_AXIS], t, 0, 0, &tt);
  metrics_row mr = {.train_loss = rec->train_loss, .evaluated = rec->evaluated, .eval_loss = rec->eval_loss,
                    .eval_acc = rec->eval_acc, .local_acc = rec->local_acc, .bytes_up = rec->bytes_up,
                    .bytes_down = rec->bytes_down, .sq_error = rec->sq_error, .cosine = rec->cosine, .z2 = rec->z2,
                    .batch_z2 = rec->batch_z2, .objective = rec->objective, .grad_sq = rec->grad_sq,
                    .pool_objective = rec->pool_objective, .pool_grad_sq = rec->pool_grad_sq, .secant = rec->secant,
                    .personal_acc = rec->personal_acc, .personal_loss = rec->personal_loss};
  write_row(g, &s[S_METRICS], t, 0, 0, &mr);
  resources_row rr = {.seconds = rec->seconds, .peak_bytes = rec->peak_bytes};
  write_row(g, &s[S_RESOURCES], t, 0, 0, &rr);
  write_row(g, &s[S_BLOCK_COUNT], t, 0, 0, plan->block_count);
  if (s[S_AGGREGATE].present) write_row(g, &s[S_AGGREGATE], t, 0, 0, root ? rec->aggregate : NULL);
  if (s[S_TRUE_GLOBAL].present) {
    SPRY_CHECK(!root || rec->true_gradient, "run file %s: round %u has no oracle data (log.gradients = oracle)",
               g->path, t);
    write_row(g, &s[S_TRUE_GLOBAL], t, 0, 0, root ? rec->true_gradient : NULL);
    write_row(g, &s[S_BATCH_GLOBAL], t, 0, 0, root ? rec->batch_gradient : NULL);
    write_row(g, &s[S_CLASS_GRADS], t, 0, 0, root ? rec->class_gradients : NULL);
    write_row(g, &s[S_BIAS_SQ], t, 0, 0, root ? rec->bias_sq : NULL);
    write_row(g, &s[S_BATCH_BIAS_SQ], t, 0, 0, root ? rec->batch_bias_sq : NULL);
    write_row(g, &s[S_CLASS_VAR], t, 0, 0, root ? rec->class_variance : NULL);
  }

  /* per-slot rows: this rank's slots [first, first + n) from rec->local */
  slot_row *info = grow(g, sizeof(slot_row) * (size_t)(n > 0 ? n : 1));
  for (int j = 0; j < n; j++) {
    const spry_slot_record *r = &rec->local[j];
    info[j] = (slot_row){.slot = first + j, .client = r->client, .n_blocks = spry_plan_slot_nblocks(plan, first + j),
                         .n_steps = r->n_steps, .K = r->K, .n_examples = r->n_examples,
                         .weight = cfg->fl.weighting == SPRY_WEIGHT_UNIFORM ? 1.0 : (double)r->n_examples,
                         .loss = r->loss, .test_correct = r->test_correct, .test_count = r->test_count,
                         .test_loss = r->test_loss, .bytes_up = r->bytes_up, .bytes_down = r->bytes_down,
                         .personal_correct = r->personal_correct, .personal_count = r->personal_count,
                         .personal_loss = r->personal_loss};
  }
  write_row(g, &s[S_INFO], t, first, n, info);
  int32_t *ranks = grow(g, sizeof(int32_t) * (size_t)(n > 0 ? n : 1));
  for (int j = 0; j < n; j++) ranks[j] = rec->local[j].rank;
  write_row(g, &s[S_RANK], t, first, n, ranks);
  write_row(g, &s[S_ASSIGNED], t, first, n, plan->assigned + (size_t)first * L);

  int S = g->S, K = g->K, B = g->B;
  if (s[S_SCALARS].present) {
    float *sc = grow(g, sizeof(float) * (size_t)(n > 0 ? n : 1) * S * K);
    for (int j = 0; j < n; j++) {
      const spry_slot_record *r = &rec->local[j];
      SPRY_CHECK(r->n_steps <= S && r->K <= K, "run file %s: slot %d has %d steps x %d scalars, the file holds %d x %d",
                 g->path, first + j, r->n_steps, r->K, S, K);
      for (int st = 0; st < S; st++)
        for (int k = 0; k < K; k++)
          sc[((size_t)j * S + st) * K + k] =
              st < r->n_steps && k < r->K && r->scalars ? r->scalars[(size_t)st * r->K + k] : NAN;
    }
    write_row(g, &s[S_SCALARS], t, first, n, sc);
  }
  if (s[S_STEP_K].present) {
    int32_t *sk = grow(g, sizeof(int32_t) * (size_t)(n > 0 ? n : 1) * S);
    for (int j = 0; j < n; j++)
      for (int st = 0; st < S; st++) sk[(size_t)j * S + st] = st < rec->local[j].n_steps ? rec->local[j].step_K[st] : 0;
    write_row(g, &s[S_STEP_K], t, first, n, sk);
    uint32_t *ki = grow(g, sizeof(uint32_t) * (size_t)(n > 0 ? n : 1) * S * K);
    for (int j = 0; j < n; j++) {
      const spry_slot_record *r = &rec->local[j];
      for (int st = 0; st < S; st++)
        for (int k = 0; k < K; k++)
          ki[((size_t)j * S + st) * K + k] =
              st < r->n_steps && k < r->K && r->k_index ? r->k_index[(size_t)st * r->K + k] : UINT32_MAX;
    }
    write_row(g, &s[S_K_INDEX], t, first, n, ki);
  }
  if (s[S_SAMPLES].present) {
    int32_t *si = grow(g, sizeof(int32_t) * (size_t)(n > 0 ? n : 1) * S * B);
    for (int j = 0; j < n; j++) {
      const spry_slot_record *r = &rec->local[j];
      for (size_t e = 0; e < (size_t)S * B; e++)
        si[(size_t)j * S * B + e] = e < (size_t)r->n_steps * B && r->sample_idx ? r->sample_idx[e] : -1;
    }
    write_row(g, &s[S_SAMPLES], t, first, n, si);
  }
  if (s[S_ESTIMATE].present) {
    float *e = grow(g, sizeof(float) * (size_t)(n > 0 ? n : 1) * d);
    for (int j = 0; j < n; j++) {
      SPRY_CHECK(rec->local[j].estimate, "run file %s: slot %d has no dense estimate", g->path, first + j);
      memcpy(e + (size_t)j * d, rec->local[j].estimate, sizeof(float) * d);
    }
    write_row(g, &s[S_ESTIMATE], t, first, n, e);
  }
  if (s[S_BATCH_GRAD].present) {
    const size_t L8 = (size_t)L;
    float *e = grow(g, sizeof(float) * (size_t)(n > 0 ? n : 1) * d);
    for (int j = 0; j < n; j++) {
      SPRY_CHECK(rec->local[j].batch_grad && rec->local[j].local_grad && rec->local[j].residual_sq,
                 "run file %s: slot %d has no oracle data", g->path, first + j);
      memcpy(e + (size_t)j * d, rec->local[j].batch_grad, sizeof(float) * d);
    }
    write_row(g, &s[S_BATCH_GRAD], t, first, n, e);
    for (int j = 0; j < n; j++) memcpy(e + (size_t)j * d, rec->local[j].local_grad, sizeof(float) * d);
    write_row(g, &s[S_LOCAL_GRAD], t, first, n, e);
    double *v = grow(g, sizeof(double) * (size_t)(n > 0 ? n : 1) * L8);
    for (int j = 0; j < n; j++) memcpy(v + (size_t)j * L8, rec->local[j].minibatch_var, sizeof(double) * L8);
    write_row(g, &s[S_MB_VAR], t, first, n, v);
    for (int j = 0; j < n; j++) memcpy(v + (size_t)j * L8, rec->local[j].residual_sq, sizeof(double) * L8);
    write_row(g, &s[S_RESIDUAL], t, first, n, v);
  }
  if (t == 0) { /* w_0's held-out metrics (rec carries them on every rank) */
    spry_h5_write_attr_double(g->file, "initial_eval_loss", rec->initial_eval_loss);
    spry_h5_write_attr_double(g->file, "initial_eval_acc", rec->initial_eval_acc);
  }
  if (g->wts.present) { /* w_t for t = 0, n, 2n, ..., and the weights after the last round */
    int every = cfg->log.weights_every;
    uint32_t rows[2];
    int nr = 0;
    if (t % (uint32_t)every == 0) rows[nr++] = t;
    if ((int)t + 1 == cfg->run.rounds) rows[nr++] = t + 1;
    for (int k = 0; k < nr; k++) {
      int64_t tr = rows[k];
      write_row(g, &g->wts_round, g->wrows, 0, 0, &tr);
      write_row(g, &g->wts, g->wrows, 0, 0, root ? (rows[k] == t ? rec->w_start : rec->w) : NULL);
      g->wrows++;
    }
  }

  /* the round is complete: publish it, then flush */
  g->rounds = t + 1;
  double rs = rec->seconds;
  SPRY_CHECK_MPI(MPI_Bcast(&rs, 1, MPI_DOUBLE, 0, g->comm));
  g->round_seconds += rs;
  int64_t done = g->rounds;
  SPRY_CHECK_H5(H5Awrite(g->done_attr, H5T_NATIVE_INT64, &done));
  SPRY_CHECK_H5(H5Fflush(g->file, H5F_SCOPE_GLOBAL));
  g->seconds += spry_now() - t0;
}

spry_fed_observer spry_runlog_observer(spry_runlog *log) {
  spry_fed_observer o = {.ctx = log, .round = write_round};
  return o;
}

double spry_runlog_seconds(const spry_runlog *log) { return log->seconds; }

void spry_runlog_close(spry_runlog **pg, int status, const float *w_final) {
  spry_runlog *g = *pg;
  if (!g) return;
  const char *what = status == SPRY_RUN_OK ? "complete" : status == SPRY_RUN_STOPPED ? "stopped" : "nonfinite";
  if (status == SPRY_RUN_OK) {
    hsize_t ddims[1] = {g->d};
    hid_t grp = SPRY_CHECK_H5(H5Gopen2(g->file, "model", H5P_DEFAULT));
    hid_t wf = static_dataset(g, grp, "w_final", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 1, ddims, w_final, (int[]){AX_PARAM});
    uint64_t h = g->rank == 0 ? spry_fnv1a(w_final, sizeof(float) * g->d, 0) : 0; /* rank 0's weights are written */
    SPRY_CHECK_MPI(MPI_Bcast(&h, 1, MPI_UINT64_T, 0, g->comm));
    hid_t hsp = SPRY_CHECK_H5(H5Screate(H5S_SCALAR));
    hid_t ha = SPRY_CHECK_H5(H5Acreate2(wf, "fnv1a64", H5T_STD_U64LE, hsp, H5P_DEFAULT, H5P_DEFAULT));
    SPRY_CHECK_H5(H5Awrite(ha, H5T_NATIVE_UINT64, &h)); /* checked by spry info */
    H5Aclose(ha), H5Sclose(hsp), H5Dclose(wf);
    H5Gclose(grp);
  }
  attr_text(g->file, "status", what);
  /* seconds are summed over this process's lifetime; a resumed run adds to what the file had */
  double prev_round = 0, prev_log = 0, sec[2] = {g->round_seconds, g->seconds};
  SPRY_CHECK_MPI(MPI_Bcast(sec, 2, MPI_DOUBLE, 0, g->comm));
  hid_t a;
  if (H5Aexists(g->file, "round_seconds_total") > 0 && (a = H5Aopen(g->file, "round_seconds_total", H5P_DEFAULT)) >= 0) {
    H5Aread(a, H5T_NATIVE_DOUBLE, &prev_round);
    H5Aclose(a);
  }
  if (H5Aexists(g->file, "log_seconds_total") > 0 && (a = H5Aopen(g->file, "log_seconds_total", H5P_DEFAULT)) >= 0) {
    H5Aread(a, H5T_NATIVE_DOUBLE, &prev_log);
    H5Aclose(a);
  }
  spry_h5_write_attr_double(g->file, "round_seconds_total", prev_round + sec[0]);
  spry_h5_write_attr_double(g->file, "log_seconds_total", prev_log + sec[1]);
  SPRY_CHECK_H5(H5Fflush(g->file, H5F_SCOPE_GLOBAL));
  close_file(g);
  spry_free(&g->buf);
  spry_free(pg);
}
