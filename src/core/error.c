#include "spry/core.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int g_rank = -1;
static spry_abort_fn g_abort_hook = NULL;

void spry_set_rank(int rank) { g_rank = rank; }
int spry_get_rank(void) { return g_rank; }
void spry_set_abort_hook(spry_abort_fn fn) { g_abort_hook = fn; }

static char g_io_file[4096];
void spry_set_io_file(const char *path) { snprintf(g_io_file, sizeof g_io_file, "%s", path ? path : ""); }
const char *spry_io_file(void) { return g_io_file[0] ? g_io_file : NULL; }

_Noreturn void spry_fatal_at(const char *file, int line, const char *fmt, ...) {
  /* Show the path from src/ or include/ onwards: short, and the same on every machine. */
  const char *shown = file;
  const char *cut = strstr(file, "src/");
  if (!cut) cut = strstr(file, "include/");
  if (!cut) cut = strstr(file, "tests/");
  if (cut) shown = cut;
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (g_rank >= 0)
    fprintf(stderr, "[rank %d] %s:%d: %s\n", g_rank, shown, line, msg);
  else
    fprintf(stderr, "%s:%d: %s\n", shown, line, msg);
  fflush(stderr);
  fflush(stdout);
  if (g_abort_hook) g_abort_hook(1);
  exit(1);
}

int spry_same_file(const char *a, const char *b) {
  struct stat sa, sb;
  if (!a || !b || !a[0] || !b[0] || stat(a, &sa) != 0 || stat(b, &sb) != 0) return 0;
  return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

static const char *const derived_suffix[] = {"", ".ckpt", ".tmp", ".ckpt.tmp", ".part", ".part.tmp", ".ckpt.part",
                                             ".ckpt.part.tmp"};

int spry_output_clash(const char *output, const char *const *inputs, int n_inputs) {
  char p[4200];
  for (size_t k = 0; k < sizeof derived_suffix / sizeof derived_suffix[0]; k++) {
    snprintf(p, sizeof p, "%s%s", output, derived_suffix[k]);
    for (int i = 0; i < n_inputs; i++)
      if (spry_same_file(p, inputs[i])) return i;
  }
  return -1;
}
