#include "spry/h5util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void spry_h5_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

typedef struct {
  char *out;
  size_t len;
  int found; /* 2: an "error message = '...'" from a system call; 1: some description */
} cause_walk;

static herr_t cause_step(unsigned n, const H5E_error2_t *e, void *data) {
  (void)n;
  cause_walk *c = data;
  const char *desc = e->desc ? e->desc : "";
  const char *m = strstr(desc, "error message = '");
  if (m && c->found < 2) {
    m += strlen("error message = '");
    snprintf(c->out, c->len, "%.*s", (int)strcspn(m, "'"), m);
    c->found = 2;
  } else if (!c->found && desc[0]) { /* the innermost entry comes first: the most specific */
    snprintf(c->out, c->len, "%s (in %s)", desc, e->func_name ? e->func_name : "HDF5");
    c->found = 1;
  }
  return 0;
}

static void cause_of(hid_t estack, char *out, size_t len) {
  cause_walk c = {out, len, 0};
  out[0] = 0;
  H5Ewalk2(estack, H5E_WALK_UPWARD, cause_step, &c);
  if (!c.found) snprintf(out, len, "%s", errno ? strerror(errno) : "no cause recorded by HDF5");
}

void spry_h5_error_cause(char *out, size_t len) {
  if (len == 0) return;
  cause_of(H5E_DEFAULT, out, len);
}

/* While a collective file is open, any HDF5 API call that fails ends the job on the spot, naming the file and
 * the cause: the failing rank returns while the others are still inside a collective, so a returned error
 * cannot be agreed on afterwards. */
static herr_t collective_error(hid_t estack, void *data) {
  (void)data;
  char cause[1024];
  cause_of(estack, cause, sizeof cause);
  const char *f = spry_io_file();
  spry_fatal("%s: HDF5 error during a collective step: %s; the job stops on every rank", f ? f : "(run file)", cause);
}

void spry_h5_collective_begin(const char *path) {
  spry_set_io_file(path);
  if (!getenv("SPRY_H5_ERRORS")) H5Eset_auto2(H5E_DEFAULT, collective_error, NULL);
}

void spry_h5_collective_end(void) {
  spry_set_io_file(NULL);
  if (!getenv("SPRY_H5_ERRORS")) spry_h5_quiet();
}

int spry_h5_probe(const char *path, char *err, size_t errlen) {
  if (access(path, F_OK) != 0) {
    snprintf(err, errlen, "%s: no such file", path);
    return 0;
  }
  if (access(path, R_OK) != 0) {
    snprintf(err, errlen, "%s: not readable (%s)", path, strerror(errno));
    return 0;
  }
  spry_h5_quiet();
  htri_t is = H5Fis_hdf5(path);
  if (is <= 0) {
    snprintf(err, errlen, "%s: not an HDF5 file (or truncated/corrupt)", path);
    return 0;
  }
  return 1;
}

int spry_h5_dims(hid_t loc, const char *name, hsize_t dims[4]) {
  if (H5Lexists(loc, name, H5P_DEFAULT) <= 0) return -1;
  hid_t ds = H5Dopen2(loc, name, H5P_DEFAULT);
  if (ds < 0) return -1;
  hid_t sp = H5Dget_space(ds);
  int nd = H5Sget_simple_extent_ndims(sp);
  if (nd > 4 || nd < 0) nd = -1;
  else H5Sget_simple_extent_dims(sp, dims, NULL);
  H5Sclose(sp);
  H5Dclose(ds);
  return nd;
}

int spry_h5_read(hid_t loc, const char *name, hid_t memtype, void *buf, size_t n) {
  hsize_t dims[4];
  int nd = spry_h5_dims(loc, name, dims);
  if (nd < 0) return -1;
  size_t count = 1;
  for (int i = 0; i < nd; i++) count *= (size_t)dims[i];
  if (count != n) return -1;
  hid_t ds = H5Dopen2(loc, name, H5P_DEFAULT);
  herr_t rc = H5Dread(ds, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
  H5Dclose(ds);
  return rc < 0 ? -1 : 0;
}

int spry_h5_attr_int(hid_t loc, const char *name, int64_t *out) {
  if (H5Aexists(loc, name) <= 0) return -1;
  hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
  herr_t rc = H5Aread(a, H5T_NATIVE_INT64, out);
  H5Aclose(a);
  return rc < 0 ? -1 : 0;
}

int spry_h5_attr_str(hid_t loc, const char *name, char *out, size_t len) {
  if (len == 0 || H5Aexists(loc, name) <= 0) return -1;
  hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
  hid_t ft = H5Aget_type(a);
  int rc = -1;
  if (H5Tget_class(ft) == H5T_STRING) {
    if (H5Tis_variable_str(ft) > 0) {
      char *s = NULL;
      hid_t mt = H5Tcopy(H5T_C_S1);
      H5Tset_size(mt, H5T_VARIABLE);
      H5Tset_cset(mt, H5Tget_cset(ft)); /* HDF5 does not convert between ASCII and UTF-8 */
      if (H5Aread(a, mt, &s) >= 0 && s) {
        snprintf(out, len, "%s", s);
        H5free_memory(s);
        rc = 0;
      }
      H5Tclose(mt);
    } else {
      size_t sz = H5Tget_size(ft);
      char tmp[4096];
      if (sz < sizeof tmp) {
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, sz + 1);
        H5Tset_cset(mt, H5Tget_cset(ft));
        if (H5Aread(a, mt, tmp) >= 0) {
          tmp[sz] = 0;
          snprintf(out, len, "%s", tmp);
          rc = 0;
        }
        H5Tclose(mt);
      }
    }
  }
  H5Tclose(ft);
  H5Aclose(a);
  return rc;
}

static void write_attr(hid_t loc, const char *name, hid_t type, const void *v) {
  if (H5Aexists(loc, name) > 0) SPRY_CHECK_H5(H5Adelete(loc, name));
  hid_t sp = SPRY_CHECK_H5(H5Screate(H5S_SCALAR));
  hid_t a = SPRY_CHECK_H5(H5Acreate2(loc, name, type, sp, H5P_DEFAULT, H5P_DEFAULT));
  SPRY_CHECK_H5(H5Awrite(a, type, v));
  H5Aclose(a);
  H5Sclose(sp);
}

void spry_h5_write_attr_int(hid_t loc, const char *name, int64_t v) { write_attr(loc, name, H5T_NATIVE_INT64, &v); }
void spry_h5_write_attr_double(hid_t loc, const char *name, double v) {
  write_attr(loc, name, H5T_NATIVE_DOUBLE, &v);
}
void spry_h5_write_attr_str(hid_t loc, const char *name, const char *s) {
  hid_t t = SPRY_CHECK_H5(H5Tcopy(H5T_C_S1));
  SPRY_CHECK_H5(H5Tset_size(t, strlen(s) > 0 ? strlen(s) : 1));
  SPRY_CHECK_H5(H5Tset_cset(t, H5T_CSET_UTF8));
  write_attr(loc, name, t, strlen(s) > 0 ? s : " ");
  H5Tclose(t);
}
