#include "spry/core.h"

#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

/* A small fixed table: the engine uses a handful of labels (one per buffer family). */
#define SPRY_MAX_LABELS 64

typedef struct {
  char label[48];
  size_t current, peak;
} label_slot;

static label_slot g_labels[SPRY_MAX_LABELS];
static int g_nlabels = 0;
static size_t g_current = 0, g_peak = 0;

/* Each block carries a 64-byte header before the aligned payload: size and label index. */
typedef struct {
  size_t bytes;
  int label;
  char pad[64 - sizeof(size_t) - sizeof(int)];
} block_header;
_Static_assert(sizeof(block_header) == 64, "header must keep 64-byte alignment");

static int label_index(const char *label) {
  for (int i = 0; i < g_nlabels; i++)
    if (strncmp(g_labels[i].label, label, sizeof g_labels[i].label - 1) == 0) return i;
  SPRY_CHECK(g_nlabels < SPRY_MAX_LABELS, "too many allocation labels (max %d) when adding '%s'",
             SPRY_MAX_LABELS, label);
  label_slot *s = &g_labels[g_nlabels];
  strncpy(s->label, label, sizeof s->label - 1);
  s->current = s->peak = 0;
  return g_nlabels++;
}

static char g_hint[1024];
void spry_alloc_set_hint(const char *hint) { snprintf(g_hint, sizeof g_hint, "%s", hint ? hint : ""); }

static size_t physical_bytes(void) {
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? (size_t)pages * (size_t)page : SIZE_MAX;
}

void *spry_alloc_at(const char *file, int line, const char *label, size_t bytes) {
  /* checked before allocating: a request beyond the machine's memory would otherwise be granted lazily and end in
   * the kernel's OOM killer, with no message */
  size_t phys = physical_bytes();
  if (bytes > SIZE_MAX / 2 || g_current + bytes > phys)
    spry_fatal_at(file, line, "out of memory: '%s' needs %.2f GB (%zu bytes) with %.2f GB held already, more than "
                  "this machine's %.2f GB%s%s", label, bytes / 1e9, bytes, g_current / 1e9, phys / 1e9,
                  g_hint[0] ? "; the sizes follow " : "", g_hint);
  size_t total = sizeof(block_header) + ((bytes + 63u) & ~(size_t)63u);
  block_header *h = aligned_alloc(64, total);
  if (!h)
    spry_fatal_at(file, line, "out of memory: %zu bytes for '%s' (%zu bytes held by spry already)%s%s", bytes,
                  label, g_current, g_hint[0] ? "; the sizes follow " : "", g_hint);
  memset(h, 0, total);
  h->bytes = bytes;
  h->label = label_index(label);
  label_slot *s = &g_labels[h->label];
  s->current += bytes;
  if (s->current > s->peak) s->peak = s->current;
  g_current += bytes;
  if (g_current > g_peak) g_peak = g_current;
  return (char *)h + sizeof(block_header);
}

void spry_free(void *pp) {
  void **p = (void **)pp;
  if (!p || !*p) return;
  block_header *h = (block_header *)((char *)*p - sizeof(block_header));
  g_labels[h->label].current -= h->bytes;
  g_current -= h->bytes;
  free(h);
  *p = NULL;
}

size_t spry_mem_current(void) { return g_current; }
size_t spry_mem_peak(void) { return g_peak; }

void spry_mem_reset_peak(void) {
  g_peak = g_current;
  for (int i = 0; i < g_nlabels; i++) g_labels[i].peak = g_labels[i].current;
}

int spry_mem_labels(spry_mem_label *out, int cap) {
  for (int i = 0; i < g_nlabels && i < cap; i++) {
    out[i].label = g_labels[i].label;
    out[i].current = g_labels[i].current;
    out[i].peak = g_labels[i].peak;
  }
  return g_nlabels;
}

static const label_slot *find_label(const char *label) {
  for (int i = 0; i < g_nlabels; i++)
    if (strcmp(g_labels[i].label, label) == 0) return &g_labels[i];
  return NULL;
}
size_t spry_mem_label_current(const char *label) {
  const label_slot *s = find_label(label);
  return s ? s->current : 0;
}
size_t spry_mem_label_peak(const char *label) {
  const label_slot *s = find_label(label);
  return s ? s->peak : 0;
}

double spry_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

uint64_t spry_fnv1a(const void *data, size_t n, uint64_t h) {
  if (h == 0) h = 14695981039346656037ull;
  const unsigned char *p = data;
  for (size_t i = 0; i < n; i++) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}
