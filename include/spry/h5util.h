/* spry/h5util.h -- checked HDF5 calls and small readers used by the dataset, model and run-file modules.
 *
 * SPRY_CHECK_H5(call) fails (spry_fatal, which aborts the whole MPI job) when an HDF5 call returns a negative
 * value, naming the call. HDF5's own error stack printing is turned off by spry_h5_quiet(); spry's messages name
 * the file and the object instead. Readers that validate user files return -1 with a message instead of dying,
 * so the caller can name the file and say what was expected.
 */
#ifndef SPRY_H5UTIL_H
#define SPRY_H5UTIL_H

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

#include "spry/core.h"

#ifdef __cplusplus
extern "C" {
#endif

static inline int64_t spry_h5_check_at(int64_t rc, const char *call, const char *file, int line) {
  if (rc < 0) spry_fatal_at(file, line, "HDF5 call failed: %s", call);
  return rc;
}
#define SPRY_CHECK_H5(call) spry_h5_check_at((int64_t)(call), #call, __FILE__, __LINE__)

/* Silence HDF5's automatic error-stack printing (spry reports errors itself). */
void spry_h5_quiet(void);

/* The cause of the last failed HDF5 call on this thread: the system's message when HDF5 recorded one (e.g.
 * "No space left on device" from a write), else HDF5's innermost description. */
void spry_h5_error_cause(char *out, size_t len);

/* Collective mode, for a file every rank has open (the run file): from begin to end, an HDF5 call that fails on
 * any rank prints "[rank R] ...: PATH: HDF5 error during a collective step: CAUSE" and aborts the job at once
 * (an error returned on one rank while the others wait in a collective would hang the job). begin also names
 * PATH for the MPI-IO error handler (mpi_util.h). end restores the quiet mode. */
void spry_h5_collective_begin(const char *path);
void spry_h5_collective_end(void);

/* 1 if `path` is an existing readable HDF5 file, 0 otherwise (message in err: missing, unreadable, not HDF5). */
int spry_h5_probe(const char *path, char *err, size_t errlen);

/* Rank and dims (up to 4) of dataset `name` in loc; -1 if absent. */
int spry_h5_dims(hid_t loc, const char *name, hsize_t dims[4]);
/* Read a whole dataset converting to the given memory type; -1 if absent or the element count differs from n. */
int spry_h5_read(hid_t loc, const char *name, hid_t memtype, void *buf, size_t n);
/* Integer / string attribute of loc; -1 if absent. */
int spry_h5_attr_int(hid_t loc, const char *name, int64_t *out);
int spry_h5_attr_str(hid_t loc, const char *name, char *out, size_t len);
/* Write a scalar attribute (int64 / double / string). */
void spry_h5_write_attr_int(hid_t loc, const char *name, int64_t v);
void spry_h5_write_attr_double(hid_t loc, const char *name, double v);
void spry_h5_write_attr_str(hid_t loc, const char *name, const char *s);

#ifdef __cplusplus
}
#endif
#endif
