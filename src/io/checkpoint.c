/* Checkpoints: atomic serial HDF5 files of the server state; see include/spry/checkpoint.h. */
#include "spry/checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "spry/core.h"
#include "spry/h5util.h"

void spry_checkpoint_path(const char *runfile, char *out, size_t len) { snprintf(out, len, "%s.ckpt", runfile); }

/* ---- writing ------------------------------------------------------------------------------------------ */

typedef struct {
  hid_t file;
  const char *path;
  char *err;
  size_t errlen;
  int failed;
} writer;

static void wfail(writer *w, const char *what) {
  int e = errno;
  if (!w->failed) {
    char cause[1024];
    spry_h5_error_cause(cause, sizeof cause); /* the system's reason when HDF5 recorded one */
    if (strcmp(cause, "no cause recorded by HDF5") == 0 || strstr(cause, "(in ") != NULL)
      if (e) snprintf(cause, sizeof cause, "%s", strerror(e));
    snprintf(w->err, w->errlen, "%s: cannot write the checkpoint (%s): %s; the previous checkpoint, if any, is "
             "unchanged", w->path, what, cause);
  }
  w->failed = 1;
}

/* ---- the whole-file digest ------------------------------------------------------------------------------
 * The first SPRY_CHECKPOINT_USERBLOCK bytes of the file are an HDF5 user block (ignored by HDF5) holding
 *   "spry-checkpoint-digest 1\nfnv1a64 <16 hex>\nbytes <file size>\n" and zeros,
 * the FNV-1a 64 of every byte after the block. A reader checks it before HDF5 parses anything: a flipped bit or a
 * cut anywhere (attributes such as rounds_done included) is reported instead of being loaded or crashing HDF5. */

static int digest_stream(FILE *fp, uint64_t *h, uint64_t *n) {
  static unsigned char buf[1 << 16];
  *h = 0, *n = 0;
  size_t got;
  if (fseek(fp, SPRY_CHECKPOINT_USERBLOCK, SEEK_SET) != 0) return -1;
  while ((got = fread(buf, 1, sizeof buf, fp)) > 0) {
    *h = spry_fnv1a(buf, got, *h);
    *n += got;
  }
  return ferror(fp) ? -1 : 0;
}

static int seal_file(const char *path) {
  FILE *fp = fopen(path, "r+b");
  if (!fp) return -1;
  uint64_t h, n;
  int rc = digest_stream(fp, &h, &n);
  char head[SPRY_CHECKPOINT_USERBLOCK];
  memset(head, 0, sizeof head);
  snprintf(head, sizeof head, "spry-checkpoint-digest 1\nfnv1a64 %016" PRIx64 "\nbytes %" PRIu64 "\n", h,
           n + SPRY_CHECKPOINT_USERBLOCK);
  if (rc == 0 && (fseek(fp, 0, SEEK_SET) != 0 || fwrite(head, 1, sizeof head, fp) != sizeof head)) rc = -1;
  if (fclose(fp) != 0) rc = -1;
  return rc;
}

/* 0 if the file's digest matches its bytes; -1 with the reason in err. */
static int check_digest(const char *path, char *err, size_t errlen) {
  FILE *fp = fopen(path, "rb");
  if (!fp) {
    snprintf(err, errlen, "%s: cannot open the checkpoint (%s)", path, strerror(errno));
    return -1;
  }
  char head[SPRY_CHECKPOINT_USERBLOCK + 1];
  size_t got = fread(head, 1, SPRY_CHECKPOINT_USERBLOCK, fp);
  head[got] = 0;
  int rc = -1;
  unsigned long long want = 0, size = 0;
  uint64_t h, n;
  if (got >= 4 && memcmp(head, "\x89HDF", 4) == 0) {
    snprintf(err, errlen, "%s: not a spry checkpoint of format version %d: an HDF5 file without the whole-file "
             "checksum (a foreign file, or a version 1 checkpoint of an older spry): it cannot be verified, so it is "
             "not used; start the run again without --resume, or finish it with the spry that wrote it", path,
             SPRY_CHECKPOINT_VERSION);
  } else if (got < SPRY_CHECKPOINT_USERBLOCK || strncmp(head, "spry-checkpoint-digest 1\n", 25) != 0 ||
             sscanf(head + 25, "fnv1a64 %16llx\nbytes %llu\n", &want, &size) != 2) {
    snprintf(err, errlen, "%s: not a spry checkpoint, or its header is damaged (no digest block in the first %d "
             "bytes)", path, SPRY_CHECKPOINT_USERBLOCK);
  } else if (digest_stream(fp, &h, &n) != 0) {
    snprintf(err, errlen, "%s: cannot read the checkpoint (%s)", path, strerror(errno));
  } else if (n + SPRY_CHECKPOINT_USERBLOCK != size) {
    snprintf(err, errlen, "%s: corrupt checkpoint: %llu bytes, its header says %llu (truncated or extended)", path,
             (unsigned long long)(n + SPRY_CHECKPOINT_USERBLOCK), size);
  } else if (h != want) {
    snprintf(err, errlen, "%s: corrupt checkpoint: its bytes have checksum %016" PRIx64 ", its header says %016llx "
             "(changed or damaged after it was written)", path, h, want);
  } else {
    rc = 0;
  }
  fclose(fp);
  return rc;
}

static void put_attr(writer *w, const char *name, hid_t type, const void *v) {
  if (w->failed) return;
  hid_t sp = H5Screate(H5S_SCALAR);
  hid_t a = sp < 0 ? -1 : H5Acreate2(w->file, name, type, sp, H5P_DEFAULT, H5P_DEFAULT);
  if (a < 0 || H5Awrite(a, type, v) < 0) wfail(w, name);
  if (a >= 0) H5Aclose(a);
  if (sp >= 0) H5Sclose(sp);
}

static void put_str(writer *w, const char *name, const char *s) {
  if (w->failed) return;
  hid_t t = H5Tcopy(H5T_C_S1); /* variable length: the configuration text is several kB */
  H5Tset_size(t, H5T_VARIABLE);
  H5Tset_cset(t, H5T_CSET_UTF8);
  put_attr(w, name, t, &s);
  H5Tclose(t);
}

/* A float array of n values with its checksum attribute "fnv1a64". */
static void put_floats(writer *w, const char *name, const float *x, size_t n) {
  if (w->failed || !x) return;
  hsize_t dims[1] = {n};
  hid_t sp = H5Screate_simple(1, dims, NULL);
  hid_t ds = sp < 0 ? -1 : H5Dcreate2(w->file, name, H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  if (ds < 0 || H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x) < 0) {
    wfail(w, name);
  } else {
    uint64_t h = spry_fnv1a(x, sizeof(float) * n, 0);
    hid_t asp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(ds, "fnv1a64", H5T_STD_U64LE, asp, H5P_DEFAULT, H5P_DEFAULT);
    if (a < 0 || H5Awrite(a, H5T_NATIVE_UINT64, &h) < 0) wfail(w, name);
    if (a >= 0) H5Aclose(a);
    H5Sclose(asp);
  }
  if (ds >= 0) H5Dclose(ds);
  if (sp >= 0) H5Sclose(sp);
}

static int fsync_path(const char *path, int dir) {
  int fd = open(path, dir ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (fd < 0) return -1;
  int rc = fsync(fd);
  close(fd);
  return rc;
}

int spry_checkpoint_write(const char *path, const spry_checkpoint *c, char *err, size_t errlen) {
  char tmp[4096];
  if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp) {
    snprintf(err, errlen, "%s: checkpoint path too long", path);
    return -1;
  }
  spry_h5_quiet();
  writer w = {.path = path, .err = err, .errlen = errlen};
  hid_t fcpl = H5Pcreate(H5P_FILE_CREATE);
  H5Pset_userblock(fcpl, SPRY_CHECKPOINT_USERBLOCK); /* the whole-file digest goes there (seal_file) */
  w.file = H5Fcreate(tmp, H5F_ACC_TRUNC, fcpl, H5P_DEFAULT);
  H5Pclose(fcpl);
  if (w.file < 0) {
    snprintf(err, errlen, "%s: cannot create the checkpoint's temporary file %s (%s)", path, tmp, strerror(errno));
    return -1;
  }
  int64_t version = SPRY_CHECKPOINT_VERSION, rounds = c->rounds_done, d = (int64_t)c->d, status = c->status;
  put_str(&w, "format", SPRY_CHECKPOINT_FORMAT);
  put_attr(&w, "format_version", H5T_NATIVE_INT64, &version);
  put_str(&w, "spry_version", SPRY_VERSION);
  put_attr(&w, "rounds_done", H5T_NATIVE_INT64, &rounds);
  put_attr(&w, "d", H5T_NATIVE_INT64, &d);
  char hex[32];
  snprintf(hex, sizeof hex, "%016" PRIx64, c->config_hash);
  put_str(&w, "config_hash", hex);
  put_str(&w, "config", c->config_text ? c->config_text : "");
  put_attr(&w, "server_step", H5T_NATIVE_UINT64, &c->server_step);
  put_attr(&w, "metrics_hash", H5T_NATIVE_UINT64, &c->metrics_hash);
  put_attr(&w, "final_acc", H5T_NATIVE_DOUBLE, &c->final_acc);
  put_attr(&w, "final_loss", H5T_NATIVE_DOUBLE, &c->final_loss);
  put_attr(&w, "initial_acc", H5T_NATIVE_DOUBLE, &c->initial_acc);
  put_attr(&w, "initial_loss", H5T_NATIVE_DOUBLE, &c->initial_loss);
  put_attr(&w, "verified_rebuilds", H5T_NATIVE_INT64, &c->verified_rebuilds);
  put_attr(&w, "status", H5T_NATIVE_INT64, &status);
  put_floats(&w, "w", c->w, c->d);
  put_floats(&w, "server_m", c->server_m, c->d);
  put_floats(&w, "server_v", c->server_v, c->d);
  put_floats(&w, "g_prev", c->g_prev, c->d);
  put_floats(&w, "oracle_w_prev", c->oracle_w_prev, c->d);
  put_floats(&w, "oracle_pool_grad_prev", c->oracle_pool_grad_prev, c->d);
  if (H5Fclose(w.file) < 0) wfail(&w, "closing the file");
  if (!w.failed && seal_file(tmp) != 0) wfail(&w, "writing its digest");
  if (!w.failed && fsync_path(tmp, 0) != 0) wfail(&w, "fsync");
  if (!w.failed && rename(tmp, path) != 0) {
    snprintf(err, errlen, "%s: cannot rename %s over it (%s)", path, tmp, strerror(errno));
    w.failed = 1;
  }
  if (w.failed) {
    unlink(tmp);
    return -1;
  }
  /* the rename itself must reach the disk before we call the checkpoint done */
  char dir[4096];
  snprintf(dir, sizeof dir, "%s", path);
  char *slash = strrchr(dir, '/');
  if (slash == dir) dir[1] = 0;
  else if (slash) *slash = 0;
  else snprintf(dir, sizeof dir, ".");
  fsync_path(dir, 1);
  return 0;
}

/* ---- reading ------------------------------------------------------------------------------------------ */

static int get_attr(hid_t f, const char *name, hid_t memtype, void *v) {
  if (H5Aexists(f, name) <= 0) return -1;
  hid_t a = H5Aopen(f, name, H5P_DEFAULT);
  if (a < 0) return -1;
  herr_t rc = H5Aread(a, memtype, v);
  H5Aclose(a);
  return rc < 0 ? -1 : 0;
}

/* Read float array `name` (d values) into a new buffer; checks its checksum. Returns 0, 1 (absent), or -1. */
static int get_floats(hid_t f, const char *path, const char *name, size_t d, float **out, char *err, size_t errlen) {
  *out = NULL;
  if (H5Lexists(f, name, H5P_DEFAULT) <= 0) return 1;
  hsize_t dims[4];
  if (spry_h5_dims(f, name, dims) != 1 || dims[0] != d) {
    snprintf(err, errlen, "%s: corrupt checkpoint: dataset %s should hold d = %zu floats", path, name, d);
    return -1;
  }
  float *x = spry_alloc_floats("checkpoint", d > 0 ? d : 1);
  hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
  uint64_t stored = 0;
  int ok = ds >= 0 && H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x) >= 0 &&
           get_attr(ds, "fnv1a64", H5T_NATIVE_UINT64, &stored) == 0;
  if (ds >= 0) H5Dclose(ds);
  if (!ok) {
    snprintf(err, errlen, "%s: corrupt or truncated checkpoint: cannot read dataset %s", path, name);
    spry_free(&x);
    return -1;
  }
  uint64_t h = spry_fnv1a(x, sizeof(float) * d, 0);
  if (h != stored) {
    snprintf(err, errlen, "%s: corrupt checkpoint: checksum of %s is %016" PRIx64 ", stored %016" PRIx64, path, name,
             h, stored);
    spry_free(&x);
    return -1;
  }
  *out = x;
  return 0;
}

void spry_checkpoint_release(spry_checkpoint *c) {
  spry_free(&c->config_text);
  spry_free(&c->w);
  spry_free(&c->server_m);
  spry_free(&c->server_v);
  spry_free(&c->g_prev);
  spry_free(&c->oracle_w_prev);
  spry_free(&c->oracle_pool_grad_prev);
}

int spry_checkpoint_read(const char *path, spry_checkpoint *c, char *err, size_t errlen) {
  memset(c, 0, sizeof *c);
  if (!spry_h5_probe(path, err, errlen)) return -1;
  if (check_digest(path, err, errlen) != 0) return -1; /* before HDF5 parses any of it */
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) {
    snprintf(err, errlen, "%s: cannot open the checkpoint (corrupt or truncated HDF5 file)", path);
    return -1;
  }
  int rc = -1;
  char format[64] = "", hex[64] = "";
  int64_t version = 0, rounds = -1, d = -1, status = 0;
  if (spry_h5_attr_str(f, "format", format, sizeof format) != 0 || strcmp(format, SPRY_CHECKPOINT_FORMAT) != 0) {
    snprintf(err, errlen, "%s: not a spry checkpoint (root attribute format = '%s', expected '%s')", path, format,
             SPRY_CHECKPOINT_FORMAT);
    goto done;
  }
  if (get_attr(f, "format_version", H5T_NATIVE_INT64, &version) != 0 || version != SPRY_CHECKPOINT_VERSION) {
    snprintf(err, errlen, "%s: checkpoint format version %lld, this spry reads version %d", path, (long long)version,
             SPRY_CHECKPOINT_VERSION);
    goto done;
  }
  const char *missing = NULL;
  if (get_attr(f, "rounds_done", H5T_NATIVE_INT64, &rounds) != 0 || rounds < 0) missing = "rounds_done";
  else if (get_attr(f, "d", H5T_NATIVE_INT64, &d) != 0 || d <= 0) missing = "d";
  else if (spry_h5_attr_str(f, "config_hash", hex, sizeof hex) != 0) missing = "config_hash";
  else if (get_attr(f, "server_step", H5T_NATIVE_UINT64, &c->server_step) != 0) missing = "server_step";
  else if (get_attr(f, "metrics_hash", H5T_NATIVE_UINT64, &c->metrics_hash) != 0) missing = "metrics_hash";
  else if (get_attr(f, "final_acc", H5T_NATIVE_DOUBLE, &c->final_acc) != 0) missing = "final_acc";
  else if (get_attr(f, "final_loss", H5T_NATIVE_DOUBLE, &c->final_loss) != 0) missing = "final_loss";
  else if (get_attr(f, "initial_acc", H5T_NATIVE_DOUBLE, &c->initial_acc) != 0) missing = "initial_acc";
  else if (get_attr(f, "initial_loss", H5T_NATIVE_DOUBLE, &c->initial_loss) != 0) missing = "initial_loss";
  else if (get_attr(f, "verified_rebuilds", H5T_NATIVE_INT64, &c->verified_rebuilds) != 0) missing = "verified_rebuilds";
  else if (get_attr(f, "status", H5T_NATIVE_INT64, &status) != 0) missing = "status";
  if (missing) {
    snprintf(err, errlen, "%s: corrupt checkpoint: root attribute %s is missing or invalid", path, missing);
    goto done;
  }
  c->rounds_done = (uint32_t)rounds;
  c->d = (size_t)d;
  c->status = (int32_t)status;
  c->config_hash = strtoull(hex, NULL, 16);
  c->config_text = spry_alloc("checkpoint", 65536);
  if (spry_h5_attr_str(f, "config", c->config_text, 65536) != 0) {
    snprintf(err, errlen, "%s: corrupt checkpoint: root attribute config is missing", path);
    goto done;
  }
  int g;
  if (get_floats(f, path, "w", c->d, &c->w, err, errlen) != 0) {
    if (!c->w && H5Lexists(f, "w", H5P_DEFAULT) <= 0)
      snprintf(err, errlen, "%s: corrupt checkpoint: dataset w is missing", path);
    goto done;
  }
  if ((g = get_floats(f, path, "server_m", c->d, &c->server_m, err, errlen)) < 0) goto done;
  if ((g = get_floats(f, path, "server_v", c->d, &c->server_v, err, errlen)) < 0) goto done;
  if ((g = get_floats(f, path, "g_prev", c->d, &c->g_prev, err, errlen)) < 0) goto done;
  if ((g = get_floats(f, path, "oracle_w_prev", c->d, &c->oracle_w_prev, err, errlen)) < 0) goto done;
  if ((g = get_floats(f, path, "oracle_pool_grad_prev", c->d, &c->oracle_pool_grad_prev, err, errlen)) < 0) goto done;
  if (!c->server_m != !c->server_v) {
    snprintf(err, errlen, "%s: corrupt checkpoint: server_m and server_v must both be present or both absent", path);
    goto done;
  }
  rc = 0;
done:
  H5Fclose(f);
  if (rc != 0) spry_checkpoint_release(c);
  return rc;
}
