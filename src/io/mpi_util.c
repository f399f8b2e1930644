#include "spry/mpi_util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

void spry_mpi_check_at(int rc, const char *call, const char *file, int line) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "error code %d", rc);
  spry_fatal_at(file, line, "MPI call failed: %s: %s", call, msg);
}

static void mpi_abort(int code) {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, code);
  exit(code);
}

void spry_mpi_preinit(void) {
  /* Open MPI 4.1's own MPI-IO layer (ompio) prints "error in (p)write(v): No space left on device" but returns
   * MPI_SUCCESS with 0 bytes written: the data is lost in silence, HDF5's ranks diverge and the job hangs in
   * a collective (seen with a full filesystem at P = 2). ROMIO returns MPI_ERR_IO with errno set, which
   * file_error() below turns into a message and an abort. The user's own choice (OMPI_MCA_io) is kept. */
  setenv("OMPI_MCA_io", "romio321", 0);
}

/* Why a write on `path` may have failed, from errno and the free space of its filesystem. */
static void io_cause(const char *path, int err, char *out, size_t len) {
  char dir[4096];
  snprintf(dir, sizeof dir, "%s", path ? path : ".");
  char *slash = strrchr(dir, '/');
  if (slash == dir) dir[1] = 0;
  else if (slash) *slash = 0;
  else snprintf(dir, sizeof dir, ".");
  struct statvfs sv;
  int full = path && statvfs(dir, &sv) == 0 && sv.f_bavail == 0;
  if (err == ENOSPC || (full && err == 0)) snprintf(out, len, "%s (the filesystem holding %s is full)", strerror(ENOSPC), dir);
  else if (err != 0) snprintf(out, len, "%s%s", strerror(err), full ? " (and its filesystem is full)" : "");
  else snprintf(out, len, "cause not reported by the system");
}

/* Error handler of every MPI file (set on MPI_FILE_NULL, so files opened later inherit it). A failed read or
 * write on one rank would otherwise return into HDF5, whose error path skips collectives the other ranks are
 * in: the job hangs. Here the failing rank prints the file and the cause and aborts the whole job at once.
 * Errors of MPI_File_open itself (handle MPI_FILE_NULL) return to the caller, which reports them: opening is
 * collective and every rank sees the same outcome. */
static void file_error(MPI_File *fh, int *code, ...) {
  int err = errno;
  if (*fh == MPI_FILE_NULL) return;
  char mpimsg[MPI_MAX_ERROR_STRING] = "", cause[4300];
  int len = 0;
  MPI_Error_string(*code, mpimsg, &len);
  int cls = 0;
  MPI_Error_class(*code, &cls);
  if (cls == MPI_ERR_NO_SPACE || cls == MPI_ERR_QUOTA) err = err ? err : ENOSPC;
  const char *path = spry_io_file();
  io_cause(path, err, cause, sizeof cause);
  spry_fatal("%s: I/O error: %s [MPI: %s]; the job stops on every rank", path ? path : "(an MPI file)", cause,
             mpimsg);
}

void spry_mpi_install_abort(void) {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  spry_set_rank(rank);
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MPI_Errhandler eh;
  if (MPI_File_create_errhandler(file_error, &eh) == MPI_SUCCESS) MPI_File_set_errhandler(MPI_FILE_NULL, eh);
  spry_set_abort_hook(mpi_abort);
}
