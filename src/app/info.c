/* spry info RUN.h5: a readable summary of a run file (docs/runfile.md), and where the run would resume. */
#include <hdf5.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "spry/checkpoint.h"
#include "spry/core.h"
#include "spry/h5util.h"
#include "spry/runlog.h"

int spry_info_main(const char *path);

typedef struct {
  double train_loss;
  int64_t evaluated;
  double eval_loss, eval_acc, local_acc;
  uint64_t bytes_up, bytes_down;
  double sq_error, cosine, z2;
  /* version 2 (NaN when the file's compound lacks them: version 1, or not computed) */
  double batch_z2, objective, grad_sq, personal_acc;
} info_metrics;

typedef struct {
  double seconds;
  uint64_t peak_bytes;
} info_resources;

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Rows [0, n) of a compound dataset read into mtype; -1 if absent or shorter. */
static int read_rows(hid_t f, const char *name, hid_t mtype, void *buf, hsize_t n) {
  if (H5Lexists(f, "rounds", H5P_DEFAULT) <= 0 || H5Lexists(f, name, H5P_DEFAULT) <= 0) return -1;
  hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
  if (ds < 0) return -1;
  hid_t fsp = H5Dget_space(ds);
  hsize_t dims[1] = {0};
  H5Sget_simple_extent_dims(fsp, dims, NULL);
  int rc = -1;
  if (dims[0] >= n) {
    hsize_t start[1] = {0}, cnt[1] = {n};
    H5Sselect_hyperslab(fsp, H5S_SELECT_SET, start, NULL, cnt, NULL);
    hid_t msp = H5Screate_simple(1, cnt, NULL);
    rc = n == 0 || H5Dread(ds, mtype, msp, fsp, H5P_DEFAULT, buf) >= 0 ? 0 : -1;
    H5Sclose(msp);
  }
  H5Sclose(fsp);
  H5Dclose(ds);
  return rc;
}

/* Insert field `name` into the memory compound mt only when the file's compound ftype has it (a version-1 file
 * lacks the version-2 fields: they keep the NaN the buffer was filled with). */
static void insert_if(hid_t mt, hid_t ftype, const char *name, size_t off, hid_t type) {
  if (ftype >= 0 && H5Tget_member_index(ftype, name) >= 0) H5Tinsert(mt, name, off, type);
}

/* sum_i x_i^2 in double, in index order, of row t of the 2-D float dataset `name` (n columns); NaN if absent. */
static double row_sq(hid_t f, const char *name, hsize_t t, hsize_t n, float *buf) {
  hsize_t dims[4];
  if (H5Lexists(f, "rounds", H5P_DEFAULT) <= 0 || spry_h5_dims(f, name, dims) != 2 || dims[0] <= t || dims[1] != n)
    return NAN;
  hid_t ds = H5Dopen2(f, name, H5P_DEFAULT), fsp = H5Dget_space(ds);
  hsize_t start[2] = {t, 0}, cnt[2] = {1, n};
  H5Sselect_hyperslab(fsp, H5S_SELECT_SET, start, NULL, cnt, NULL);
  hid_t msp = H5Screate_simple(2, cnt, NULL);
  double s = NAN;
  if (H5Dread(ds, H5T_NATIVE_FLOAT, msp, fsp, H5P_DEFAULT, buf) >= 0) {
    s = 0;
    for (hsize_t i = 0; i < n; i++) s += (double)buf[i] * buf[i];
  }
  H5Sclose(msp);
  H5Sclose(fsp);
  H5Dclose(ds);
  return s;
}

/* Mean over rounds t < R of sum_l bias[t][l] / g2[t] (bias: the R x L dataset `bias_name`; g2[t] from the metrics
 * when grad_sq != NULL, else ||row t of grad_name||^2); NaN when absent. */
static double mean_bias_ratio(hid_t f, const char *bias_name, const char *grad_name, const info_metrics *mr,
                              hsize_t R, hsize_t L, hsize_t d) {
  hsize_t dims[4];
  if (R == 0 || L == 0 || H5Lexists(f, "rounds", H5P_DEFAULT) <= 0 || spry_h5_dims(f, bias_name, dims) != 2 ||
      dims[0] < R || dims[1] != L)
    return NAN;
  double *b = spry_alloc("info", sizeof(double) * dims[0] * L);
  float *row = grad_name ? spry_alloc_floats("info", d) : NULL;
  double mean = NAN;
  if (spry_h5_read(f, bias_name, H5T_NATIVE_DOUBLE, b, (size_t)(dims[0] * L)) == 0) {
    double acc = 0;
    for (hsize_t t = 0; t < R; t++) {
      double s = 0;
      for (hsize_t l = 0; l < L; l++) s += b[t * L + l];
      acc += s / (grad_name ? row_sq(f, grad_name, t, d, row) : mr[t].grad_sq);
    }
    mean = acc / (double)R;
  }
  spry_free(&b);
  spry_free(&row);
  return mean;
}

static void print_bytes(const char *label, double b) {
  const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int i = 0;
  while (b >= 1024 && i < 4) b /= 1024, i++;
  printf("%s%.2f %s", label, b, u[i]);
}

/* The partition: mode and how far each client's realised train label mix is from its Dirichlet draw (total
 * variation, computed from /partition/label_counts and /partition/proportions, so v1 files show it too). */
static void print_partition(hid_t f, int64_t N, int64_t C) {
  if (N <= 0 || C <= 0 || H5Lexists(f, "partition", H5P_DEFAULT) <= 0) return;
  int32_t *counts = spry_alloc("info", sizeof(int32_t) * (size_t)(N * C));
  double *pi = spry_alloc("info", sizeof(double) * (size_t)(N * C));
  if (spry_h5_read(f, "/partition/label_counts", H5T_NATIVE_INT32, counts, (size_t)(N * C)) == 0 &&
      spry_h5_read(f, "/partition/proportions", H5T_NATIVE_DOUBLE, pi, (size_t)(N * C)) == 0) {
    double sum = 0, worst = 0;
    int64_t worst_m = 0;
    for (int64_t m = 0; m < N; m++) {
      int64_t n = 0;
      for (int64_t c = 0; c < C; c++) n += counts[m * C + c];
      double tv = 0;
      for (int64_t c = 0; c < C; c++) tv += fabs((n > 0 ? (double)counts[m * C + c] / n : 0.0) - pi[m * C + c]);
      tv *= 0.5;
      sum += tv;
      if (tv > worst) worst = tv, worst_m = m;
    }
    char mode[32] = "pool";
    int64_t per = 0;
    hid_t g = H5Gopen2(f, "partition", H5P_DEFAULT);
    if (g >= 0) {
      if (H5Aexists(g, "partition") > 0) spry_h5_attr_str(g, "partition", mode, sizeof mode);
      if (H5Aexists(g, "examples_per_client") > 0) spry_h5_attr_int(g, "examples_per_client", &per);
      H5Gclose(g);
    }
    printf("partition    %s", mode);
    if (per > 0) printf(" (fl.examples_per_client = %lld)", (long long)per);
    printf("; realised vs drawn train label mix, total variation: mean %.4f, max %.4f (client %lld) over %lld "
           "clients\n",
           sum / (double)N, worst, (long long)worst_m, (long long)N);
  }
  spry_free(&counts);
  spry_free(&pi);
}

/* A watchdog for damaged files. HDF5 1.10 validates little of what it parses: some corruptions of a run file's
 * metadata (e.g. a global-heap collection behind a variable-length string attribute, issue 12's fuzz case "run file
 * 18") send H5Aread into a loop that never returns, and no check before the read can rule every such structure
 * out. So every file is read under an alarm: if it has not been summarised within SPRY_READ_TIMEOUT seconds
 * (default 20; reading even a 1,000-round file takes well under a second), the file is reported as damaged and
 * spry exits 2 instead of hanging. The handler only writes and _exits (async-signal-safe). */
static char watch_msg[4600];
static size_t watch_len;

static void on_read_timeout(int sig) {
  (void)sig;
  ssize_t ignored = write(STDERR_FILENO, watch_msg, watch_len);
  (void)ignored;
  _exit(2);
}

static int info_one(const char *path);

int spry_info_main(const char *path) {
  const char *env = getenv("SPRY_READ_TIMEOUT");
  long seconds = env && *env ? strtol(env, NULL, 10) : 20;
  if (seconds <= 0) seconds = 20;
  snprintf(watch_msg, sizeof watch_msg,
           "spry info: %s: damaged run file: reading its metadata did not finish within %ld s (HDF5 cannot parse a "
           "corrupt structure; raise SPRY_READ_TIMEOUT if the file is sound but on a very slow filesystem)\n",
           path, seconds);
  watch_len = strlen(watch_msg);
  struct sigaction sa, old;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_read_timeout;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGALRM, &sa, &old);
  alarm((unsigned)seconds);
  int rc = info_one(path);
  alarm(0);
  sigaction(SIGALRM, &old, NULL);
  return rc;
}

static int info_one(const char *path) {
  char err[4400];
  if (!spry_h5_probe(path, err, sizeof err)) {
    fprintf(stderr, "spry info: %s\n", err);
    return 2;
  }
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) {
    fprintf(stderr, "spry info: %s: cannot open (corrupt or truncated HDF5 file)\n", path);
    return 2;
  }
  char format[64] = "", ver[64] = "", commit[128] = "", created[64] = "", hash[64] = "", status[32] = "",
       grads[32] = "";
  int64_t version = 0, world = 0, done = 0, planned = 0, d = 0, L = 0, N = 0, M = 0, C = 0, K = 0;
  spry_h5_attr_str(f, "format", format, sizeof format);
  if (strcmp(format, SPRY_RUNFILE_FORMAT) != 0) {
    fprintf(stderr, "spry info: %s: not a spry run file (root attribute format = '%s', expected '%s')\n", path,
            format, SPRY_RUNFILE_FORMAT);
    H5Fclose(f);
    return 2;
  }
  spry_h5_attr_int(f, "format_version", &version);
  spry_h5_attr_str(f, "spry_version", ver, sizeof ver);
  spry_h5_attr_str(f, "git_commit", commit, sizeof commit);
  spry_h5_attr_str(f, "created", created, sizeof created);
  spry_h5_attr_str(f, "config_hash", hash, sizeof hash);
  spry_h5_attr_str(f, "status", status, sizeof status);
  spry_h5_attr_str(f, "log_gradients", grads, sizeof grads);
  spry_h5_attr_int(f, "world_size", &world);
  spry_h5_attr_int(f, "rounds_done", &done);
  spry_h5_attr_int(f, "rounds_planned", &planned);
  spry_h5_attr_int(f, "d", &d);
  spry_h5_attr_int(f, "n_blocks", &L);
  spry_h5_attr_int(f, "n_clients", &N);
  spry_h5_attr_int(f, "clients_per_round", &M);
  spry_h5_attr_int(f, "n_class", &C);
  spry_h5_attr_int(f, "K", &K);
  /* a damaged file says so instead of printing blanks and zeros */
  const char *bad = NULL;
  char why[256] = "";
  hsize_t mdims[4] = {0, 0, 0, 0};
  if (strcmp(status, "running") != 0 && strcmp(status, "complete") != 0 && strcmp(status, "stopped") != 0 &&
      strcmp(status, "nonfinite") != 0)
    bad = "status", snprintf(why, sizeof why, "'%s' (expected running, complete, stopped or nonfinite)", status);
  else if (planned < 1 || planned > 100000000)
    bad = "rounds_planned", snprintf(why, sizeof why, "%lld (expected 1 .. 10^8)", (long long)planned);
  else if (done < 0 || done > planned)
    bad = "rounds_done", snprintf(why, sizeof why, "%lld (expected 0 .. rounds_planned = %lld)", (long long)done,
                                  (long long)planned);
  else if (d < 1 || L < 1 || L > 100000 || N < 1 || M < 1 || M > N || C < 1 || K < 0)
    bad = "d, n_blocks, n_clients, clients_per_round, n_class or K",
    snprintf(why, sizeof why, "%lld, %lld, %lld, %lld, %lld, %lld", (long long)d, (long long)L, (long long)N,
             (long long)M, (long long)C, (long long)K);
  else if (spry_h5_dims(f, "/rounds/metrics", mdims) != 1 || mdims[0] < (hsize_t)done)
    bad = "/rounds/metrics", snprintf(why, sizeof why, "missing or shorter than rounds_done = %lld rows", (long long)done);
  if (bad) {
    fprintf(stderr, "spry info: %s: damaged or incomplete run file: %s is %s\n", path, bad, why);
    H5Fclose(f);
    return 2;
  }
  printf("run file     %s\n", path);
  printf("format       %s v%lld, written by spry %s (git %s), created %s on %lld rank(s)\n", format,
         (long long)version, ver, commit, created, (long long)world);
  printf("status       %s%s; %lld of %lld rounds done\n", status,
         strcmp(status, "running") == 0 ? " (still being written, or the writer was killed)" : "", (long long)done,
         (long long)planned);
  printf("sizes        d = %lld trainable weights in L = %lld blocks; N = %lld clients, M = %lld per round, C = %lld "
         "classes, K = %lld; log.gradients = %s\n",
         (long long)d, (long long)L, (long long)N, (long long)M, (long long)C, (long long)K, grads);
  int64_t *bsize = spry_alloc("info", sizeof(int64_t) * (size_t)(L > 0 ? L : 1));
  if (L > 0 && spry_h5_read(f, "/model/block_size", H5T_NATIVE_INT64, bsize, (size_t)L) == 0) {
    printf("blocks d_l   ");
    for (int l = 0; l < L; l++) printf("%s%lld", l ? ", " : "", (long long)bsize[l]);
    printf("\n");
  }
  spry_free(&bsize);
  print_partition(f, N, C);

  /* the configuration: the keys that are not at their defaults */
  int personal_epochs = 0;
  char *config = spry_alloc("info", 65536);
  if (spry_h5_attr_str(f, "config", config, 65536) == 0) {
    printf("config       hash %s; keys not at their defaults:\n", hash);
    char section[64] = "";
    for (char *line = strtok(config, "\n"); line; line = strtok(NULL, "\n")) {
      if (line[0] == '[') {
        snprintf(section, sizeof section, "%.*s", (int)strcspn(line + 1, "]"), line + 1);
        continue;
      }
      if (line[0] == '#' || line[0] == ';' || !strchr(line, '=')) continue;
      char *origin = strrchr(line, ';');
      if (origin && strstr(origin, "default")) continue;
      if (origin) *origin++ = 0;
      char *eq = strchr(line, '='), *key = line, *val = eq + 1;
      *eq = 0;
      while (*val == ' ') val++;
      for (char *e = eq; e > key && (e[-1] == ' ');) *--e = 0;
      for (char *e = val + strlen(val); e > val && e[-1] == ' ';) *--e = 0;
      while (origin && *origin == ' ') origin++;
      if (strcmp(section, "eval") == 0 && strcmp(key, "personalize_epochs") == 0) personal_epochs = atoi(val);
      printf("             %s.%s = %s%s%s%s\n", section, key, val, origin ? "  (" : "", origin ? origin : "",
             origin ? ")" : "");
    }
  }
  spry_free(&config);

  /* per-round metrics and resources over the finished rounds */
  hsize_t R = (hsize_t)(done > 0 ? done : 0);
  info_metrics *mr = spry_alloc("info", sizeof(info_metrics) * (R > 0 ? R : 1));
  info_resources *rr = spry_alloc("info", sizeof(info_resources) * (R > 0 ? R : 1));
  hid_t mt = H5Tcreate(H5T_COMPOUND, sizeof(info_metrics));
  H5Tinsert(mt, "train_loss", HOFFSET(info_metrics, train_loss), H5T_NATIVE_DOUBLE);
  H5Tinsert(mt, "evaluated", HOFFSET(info_metrics, evaluated), H5T_NATIVE_INT64);
  H5Tinsert(mt, "eval_loss", HOFFSET(info_metrics, eval_loss), H5T_NATIVE_DOUBLE);
  H5Tinsert(mt, "eval_acc", HOFFSET(info_metrics, eval_acc), H5T_NATIVE_DOUBLE);
  H5Tinsert(mt, "local_acc", HOFFSET(info_metrics, local_acc), H5T_NATIVE_DOUBLE);
  H5Tinsert(mt, "bytes_up", HOFFSET(info_metrics, bytes_up), H5T_NATIVE_UINT64);
  H5Tinsert(mt, "bytes_down", HOFFSET(info_metrics, bytes_down), H5T_NATIVE_UINT64);
  H5Tinsert(mt, "sq_error", HOFFSET(info_metrics, sq_error), H5T_NATIVE_DOUBLE);
  H5Tinsert(mt, "cosine", HOFFSET(info_metrics, cosine), H5T_NATIVE_DOUBLE);
  H5Tinsert(mt, "z2", HOFFSET(info_metrics, z2), H5T_NATIVE_DOUBLE);
  for (hsize_t t = 0; t < (R > 0 ? R : 1); t++)
    mr[t].batch_z2 = mr[t].objective = mr[t].grad_sq = mr[t].personal_acc = NAN;
  hid_t ftype = -1;
  if (H5Lexists(f, "rounds", H5P_DEFAULT) > 0 && H5Lexists(f, "/rounds/metrics", H5P_DEFAULT) > 0) {
    hid_t mds = H5Dopen2(f, "/rounds/metrics", H5P_DEFAULT);
    ftype = mds >= 0 ? H5Dget_type(mds) : -1;
    if (mds >= 0) H5Dclose(mds);
  }
  insert_if(mt, ftype, "batch_z2", HOFFSET(info_metrics, batch_z2), H5T_NATIVE_DOUBLE);
  insert_if(mt, ftype, "objective", HOFFSET(info_metrics, objective), H5T_NATIVE_DOUBLE);
  insert_if(mt, ftype, "grad_sq", HOFFSET(info_metrics, grad_sq), H5T_NATIVE_DOUBLE);
  insert_if(mt, ftype, "personal_acc", HOFFSET(info_metrics, personal_acc), H5T_NATIVE_DOUBLE);
  if (ftype >= 0) H5Tclose(ftype);
  hid_t rt = H5Tcreate(H5T_COMPOUND, sizeof(info_resources));
  H5Tinsert(rt, "seconds", HOFFSET(info_resources, seconds), H5T_NATIVE_DOUBLE);
  H5Tinsert(rt, "peak_bytes", HOFFSET(info_resources, peak_bytes), H5T_NATIVE_UINT64);
  int rc = 0;
  if (read_rows(f, "/rounds/metrics", mt, mr, R) != 0 || read_rows(f, "/rounds/resources", rt, rr, R) != 0) {
    fprintf(stderr, "spry info: %s: /rounds/metrics or /rounds/resources is missing or has fewer than rounds_done = "
                    "%lld rows\n", path, (long long)done);
    rc = 2;
  } else if (R > 0) {
    const info_metrics *last = &mr[R - 1];
    double il = NAN, ia = NAN;
    hid_t a0;
    if (H5Aexists(f, "initial_eval_loss") > 0 && (a0 = H5Aopen(f, "initial_eval_loss", H5P_DEFAULT)) >= 0)
      H5Aread(a0, H5T_NATIVE_DOUBLE, &il), H5Aclose(a0);
    if (H5Aexists(f, "initial_eval_acc") > 0 && (a0 = H5Aopen(f, "initial_eval_acc", H5P_DEFAULT)) >= 0)
      H5Aread(a0, H5T_NATIVE_DOUBLE, &ia), H5Aclose(a0);
    if (!isnan(il)) printf("initial      w_0, before round 1: held-out loss %.6f, accuracy %.2f%%\n", il, 100 * ia);
    printf("final        round %llu: train loss %.6f", (unsigned long long)R, last->train_loss);
    for (hsize_t t = R; t-- > 0;)
      if (mr[t].evaluated) {
        printf("; held-out loss %.6f, accuracy %.2f%% (round %llu)", mr[t].eval_loss, 100 * mr[t].eval_acc,
               (unsigned long long)t + 1);
        if (!isnan(mr[t].local_acc)) printf("; clients' local accuracy %.2f%%", 100 * mr[t].local_acc);
        if (!isnan(mr[t].local_acc) || !isnan(mr[t].personal_acc)) printf(" (global model)");
        if (!isnan(mr[t].personal_acc))
          printf("; personalised local accuracy %.2f%% (after %d local epochs)", 100 * mr[t].personal_acc,
                 personal_epochs);
        break;
      }
    printf("\n");
    if (!isnan(last->z2)) {
      printf("estimator    last round:");
      if (!isnan(last->sq_error))
        printf(" ||g_hat - g||^2 = %.6g, cos(g_hat, g) = %.4f,", last->sq_error, last->cosine);
      printf(" Z^2 = %.6g\n", last->z2);
    }
    if (version >= 2 && !isnan(last->grad_sq)) { /* the oracle's Theorem 1 and 2 quantities (docs/runfile.md) */
      double zf = 0, zb = 0;
      for (hsize_t t = 0; t < R; t++) zf += mr[t].z2, zb += mr[t].batch_z2;
      double rf = mean_bias_ratio(f, "/rounds/bias_sq", NULL, mr, R, (hsize_t)L, (hsize_t)d);
      double rb = mean_bias_ratio(f, "/rounds/batch_bias_sq", "/rounds/batch_gradient", mr, R, (hsize_t)L, (hsize_t)d);
      printf("oracle       mean over %llu rounds of sum_l bias_sq / ||g||^2: %.6g (full local gradients), %.6g "
             "(batch-path gradients); mean Z^2: %.6g (full local), %.6g (batch-path)\n",
             (unsigned long long)R, rf, rb, zf / (double)R, zb / (double)R);
      printf("objective    t = 0: f(w_0) = %.6g, ||grad f(w_0)||^2 = %.6g; at w_t of the last round t = %llu: f = %.6g, "
             "||grad f||^2 = %.6g\n", mr[0].objective, mr[0].grad_sq, (unsigned long long)R - 1,
             last->objective, last->grad_sq);
    } else if (version < 2 && !isnan(last->z2)) { /* version 1: only the batch-path oracle existed */
      double rb = mean_bias_ratio(f, "/rounds/bias_sq", "/rounds/true_gradient", mr, R, (hsize_t)L, (hsize_t)d);
      printf("oracle       mean over %llu rounds of sum_l bias_sq / ||g||^2: %.6g (version 1: batch-path gradients "
             "only)\n", (unsigned long long)R, rb);
    }
    double *sec = spry_alloc("info", sizeof(double) * R), total = 0;
    uint64_t peak = 0, up = 0, down = 0;
    for (hsize_t t = 0; t < R; t++) {
      sec[t] = rr[t].seconds;
      total += sec[t];
      if (rr[t].peak_bytes > peak) peak = rr[t].peak_bytes;
      up += mr[t].bytes_up;
      down += mr[t].bytes_down;
    }
    qsort(sec, R, sizeof(double), cmp_double);
    double log_total = 0, round_total = 0;
    hid_t a;
    if (H5Aexists(f, "log_seconds_total") > 0 && (a = H5Aopen(f, "log_seconds_total", H5P_DEFAULT)) >= 0)
      H5Aread(a, H5T_NATIVE_DOUBLE, &log_total), H5Aclose(a);
    if (H5Aexists(f, "round_seconds_total") > 0 && (a = H5Aopen(f, "round_seconds_total", H5P_DEFAULT)) >= 0)
      H5Aread(a, H5T_NATIVE_DOUBLE, &round_total), H5Aclose(a);
    printf("time         %.3f s/round (median), %.1f s in all", sec[R / 2], total);
    if (round_total > 0) printf("; writing this file: %.3f s (%.2f%% of round time)", log_total, 100 * log_total / round_total);
    printf("\n");
    print_bytes("memory       peak per client step (max over rounds and ranks) ", (double)peak);
    printf("\n");
    print_bytes("bytes        up ", (double)up);
    print_bytes(", down ", (double)down);
    print_bytes(" in all; per round up ", (double)up / R);
    print_bytes(", down ", (double)down / R);
    printf("\n");
    spry_free(&sec);
  }
  H5Tclose(mt);
  H5Tclose(rt);
  spry_free(&mr);
  spry_free(&rr);
  /* the final weights against their checksum (run files since the checksum existed) */
  hsize_t wd[4];
  if (strcmp(status, "complete") == 0 && spry_h5_dims(f, "/model/w_final", wd) == 1) {
    uint64_t want = 0;
    hid_t ds = H5Dopen2(f, "/model/w_final", H5P_DEFAULT);
    hid_t a = ds >= 0 && H5Aexists(ds, "fnv1a64") > 0 ? H5Aopen(ds, "fnv1a64", H5P_DEFAULT) : -1;
    int have = a >= 0 && H5Aget_storage_size(a) == sizeof want && H5Aread(a, H5T_NATIVE_UINT64, &want) >= 0;
    if (a >= 0) H5Aclose(a);
    if (ds >= 0) H5Dclose(ds);
    if (wd[0] != (hsize_t)d) {
      fprintf(stderr, "spry info: %s: /model/w_final holds %llu weights, d = %lld\n", path, (unsigned long long)wd[0],
              (long long)d);
      rc = 2;
    } else if (!have) {
      printf("w_final      %lld weights, no checksum (a run file written before it existed)\n", (long long)d);
    } else {
      float *w = spry_alloc_floats("info", (size_t)d);
      uint64_t got = spry_h5_read(f, "/model/w_final", H5T_NATIVE_FLOAT, w, (size_t)d) == 0
                         ? spry_fnv1a(w, sizeof(float) * (size_t)d, 0) : ~want;
      spry_free(&w);
      if (got == want) {
        printf("w_final      %lld weights, checksum %016" PRIx64 " verified\n", (long long)d, want);
      } else {
        fprintf(stderr, "spry info: %s: /model/w_final is corrupt: checksum %016" PRIx64 ", stored %016" PRIx64 "\n",
                path, got, want);
        rc = 2;
      }
    }
  }
  /* the stored weights (log.weights_every) */
  hsize_t wrd[4];
  if (H5Lexists(f, "weights", H5P_DEFAULT) > 0 && spry_h5_dims(f, "/weights/round", wrd) == 1) {
    int64_t *wr = spry_alloc("info", sizeof(int64_t) * (wrd[0] > 0 ? wrd[0] : 1));
    if (spry_h5_read(f, "/weights/round", H5T_NATIVE_INT64, wr, (size_t)wrd[0]) == 0) {
      printf("weights      /weights/w: %llu rows (w_t at the start of round t) at t =", (unsigned long long)wrd[0]);
      for (hsize_t i = 0; i < wrd[0]; i++) {
        if (wrd[0] > 12 && i == 6) {
          printf(" ...,");
          i = wrd[0] - 6;
        }
        printf(" %lld%s", (long long)wr[i], i + 1 < wrd[0] ? "," : "");
      }
      printf("\n");
    }
    spry_free(&wr);
  }
  char resume[8192] = "";
  if (spry_h5_attr_str(f, "resume_log", resume, sizeof resume) == 0 && resume[0] && resume[0] != ' ')
    printf("resumed      %s\n", resume);
  H5Fclose(f);

  /* where it would resume */
  char ckpath[4200];
  spry_checkpoint_path(path, ckpath, sizeof ckpath);
  spry_checkpoint ck;
  if (spry_checkpoint_read(ckpath, &ck, err, sizeof err) == 0) {
    if (ck.rounds_done >= (uint64_t)planned)
      printf("checkpoint   %s: %u rounds done, all of the %lld planned (spry run --resume with a larger run.rounds "
             "extends the run)\n", ckpath, ck.rounds_done, (long long)planned);
    else
      printf("checkpoint   %s: %u rounds done; spry run --resume continues at round %u of %lld\n", ckpath,
             ck.rounds_done, ck.rounds_done + 1, (long long)planned);
    spry_checkpoint_release(&ck);
  } else {
    printf("checkpoint   none usable (%s)\n", err);
  }
  return rc;
}
