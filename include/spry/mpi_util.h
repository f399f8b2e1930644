/* spry/mpi_util.h -- checked MPI calls and the MPI-aware abort.
 *
 * SPRY_CHECK_MPI(call) runs an MPI call and, if it fails, prints "[rank R] file:line: MPI call failed: <MPI's
 * error string>" and ends the whole job through spry_fatal (which calls MPI_Abort once
 * spry_mpi_install_abort() has run), so no rank waits forever in a collective.
 */
#ifndef SPRY_MPI_UTIL_H
#define SPRY_MPI_UTIL_H

#include <mpi.h>

#include "spry/core.h"

#ifdef __cplusplus
extern "C" {
#endif

void spry_mpi_check_at(int rc, const char *call, const char *file, int line);
#define SPRY_CHECK_MPI(call) spry_mpi_check_at((call), #call, __FILE__, __LINE__)

/* After MPI_Init: errors return codes (MPI_ERRORS_RETURN on MPI_COMM_WORLD, so SPRY_CHECK_MPI reports them),
 * spry_fatal aborts the job with MPI_Abort, and messages carry this rank's number. */
void spry_mpi_install_abort(void);
/* It also installs an error handler on every MPI file: a failed read or write on any rank prints
 *   [rank R] ...: FILE: I/O error: No space left on device (the filesystem holding DIR is full) [MPI: ...]
 * (FILE: spry_io_file()) and aborts the job there, instead of returning into HDF5 where the ranks would diverge.
 *
 * Before MPI_Init: select an MPI-IO layer that reports write errors (ROMIO on Open MPI; ompio 4.1 drops them,
 * see mpi_util.c), unless the user chose one with OMPI_MCA_io. */
void spry_mpi_preinit(void);

#ifdef __cplusplus
}
#endif
#endif
