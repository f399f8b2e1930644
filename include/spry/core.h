/* spry/core.h -- errors, labelled allocation with peak accounting, small numeric helpers.
 *
 * Errors. Every failure that cannot be handled locally goes through spry_fatal(): it prints
 *   [rank R] file:line: what failed and why
 * to stderr and ends the whole job (MPI_Abort when MPI is initialised and the world has more than one rank,
 * exit otherwise), so no rank is ever left waiting in a collective. The rank is whatever spry_set_rank() was
 * last given (-1 = not under MPI yet). core knows nothing about MPI itself: the app registers an abort hook.
 *
 * Allocation. spry_alloc(label, bytes) returns 64-byte aligned, zeroed memory and accounts it under `label`
 * (current and peak bytes per label, plus a process-wide current/peak). The engine allocates one buffer per
 * family (parameters, trainable, activations, tangents, gradients, optimizer state, scratch), so the labels
 * are few and the report reads as a memory budget. spry_free(&p) releases and nulls the pointer.
 * The accounting is process-local and not thread-safe: allocate from the main thread only.
 */
#ifndef SPRY_CORE_H
#define SPRY_CORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SPRY_VERSION "0.1.0"

/* ---- errors ---------------------------------------------------------------------------------------- */

/* Print "[rank R] file:line: message" and end the job. Never returns. */
_Noreturn void spry_fatal_at(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define spry_fatal(...) spry_fatal_at(__FILE__, __LINE__, __VA_ARGS__)

/* Check a condition that must hold; on failure report the message and end the job. */
#define SPRY_CHECK(cond, ...)                                                                              \
  do {                                                                                                     \
    if (!(cond)) spry_fatal_at(__FILE__, __LINE__, __VA_ARGS__);                                           \
  } while (0)

/* Rank shown in messages (-1 until set). */
void spry_set_rank(int rank);
int spry_get_rank(void);

/* The file a collective I/O step is working on (NULL: none). The MPI-IO and HDF5 error handlers (mpi_util.h,
 * h5util.h) name it in their message, so an I/O failure on any rank says which file failed. */
void spry_set_io_file(const char *path);
const char *spry_io_file(void);

/* 1 if a and b name the same existing file (same device and inode, so through symlinks and hard links too). */
int spry_same_file(const char *a, const char *b);
/* Index of the input that `output`, or a file spry derives from it (OUTPUT.ckpt, .tmp, .part, ...), resolves to;
 * -1 if none. Outputs are refused when they clash, whatever the flags: an input is never overwritten. */
int spry_output_clash(const char *output, const char *const *inputs, int n_inputs);

/* Hook called by spry_fatal after printing (e.g. MPI_Abort). It must not return; if it does, exit(1). */
typedef void (*spry_abort_fn)(int exit_code);
void spry_set_abort_hook(spry_abort_fn fn);

/* ---- labelled allocation --------------------------------------------------------------------------- */

void *spry_alloc_at(const char *file, int line, const char *label, size_t bytes);
#define spry_alloc(label, bytes) spry_alloc_at(__FILE__, __LINE__, (label), (bytes))
/* Typed helper: n floats. */
#define spry_alloc_floats(label, n) ((float *)spry_alloc((label), sizeof(float) * (size_t)(n)))
/* A request larger than the machine's physical memory (with what spry holds) fails at once, before allocating,
 * with "out of memory: 'LABEL' needs X GB (N bytes) ...; the sizes follow HINT": the hint (set by the app from
 * the configuration, e.g. "model.n_embd = 4096, data.batch_size = 64, ...") names the keys to lower. */
void spry_alloc_set_hint(const char *hint);
/* Release memory from spry_alloc (NULL allowed) and set *p = NULL. */
void spry_free(void *pp);

typedef struct {
  const char *label;
  size_t current, peak; /* bytes */
} spry_mem_label;

size_t spry_mem_current(void);
size_t spry_mem_peak(void);
/* Peak since the last reset: spry_mem_reset_peak() sets every peak (total and per label) to its current. */
void spry_mem_reset_peak(void);
/* Copy up to `cap` label records; returns the number of labels. */
int spry_mem_labels(spry_mem_label *out, int cap);
/* Bytes currently held / peak under one label (0 if unknown). */
size_t spry_mem_label_current(const char *label);
size_t spry_mem_label_peak(const char *label);

/* Round n up to a multiple of 16 floats (64 bytes): slices carved from one allocation stay aligned. */
static inline size_t spry_align_floats(size_t n) { return (n + 15u) & ~(size_t)15u; }

/* FNV-1a 64-bit hash of n bytes, continuing from h (start with h = 0: the offset basis is used then). */
uint64_t spry_fnv1a(const void *data, size_t n, uint64_t h);

/* Monotonic wall clock in seconds. */
double spry_now(void);

#ifdef __cplusplus
}
#endif
#endif
