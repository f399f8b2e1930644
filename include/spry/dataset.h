/* spry/dataset.h -- labelled token datasets held in memory: the synthetic task and (later) HDF5 files.
 *
 * A dataset is n examples of right-padded token ids: tokens (n, max_len), lengths (n) in [1, max_len],
 * labels (n) in [0, n_class), and a split flag per example (0 = train pool, 1 = held-out test). The federation
 * partitions the train pool among clients; the held-out examples evaluate the global model.
 * Padding positions hold token 0 (a valid id, ignored by the model through the lengths).
 */
#ifndef SPRY_DATASET_H
#define SPRY_DATASET_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  int n, max_len, n_class, vocab_size;
  int32_t *tokens;  /* (n, max_len) */
  int32_t *lengths; /* (n) */
  int32_t *labels;  /* (n) */
  uint8_t *is_test; /* (n) */
  char **class_names; /* n_class strings */
  char source[256];   /* "synthetic(...)" or the file path */
} spry_dataset;

/* The built-in synthetic classification task: class c owns a set of keyword tokens; an example of class c has a
 * length uniform in [max_len/2, max_len] and each position is, with probability 1/3, a keyword of c (at least one
 * keyword per example), otherwise a noise token shared by all classes. Labels are balanced (example i has class
 * i mod n_class before shuffling). test_fraction of the examples are held out. Deterministic in seed.
 * Random streams (purpose SPRY_RNG_DATASET, which nothing else uses): example i from (seed, DATASET, client 1,
 * step i); the held-out shuffle from (seed, DATASET, client 2). Needs vocab_size >= 4 * n_class. */
spry_dataset *spry_dataset_synthetic(int n, int n_class, int vocab_size, int max_len, double test_fraction,
                                     uint32_t seed);
void spry_dataset_free(spry_dataset **ds);

/* Load a labelled dataset built by data/build_datasets.py (layout in docs/datasets.md): tokens (int32,
 * concatenated), offsets (int64, n+1), lengths (int32), labels (int32), split (uint8: 0 train, 1 test),
 * class_names, attributes kind = "labelled", n_class, vocab_size. Every example must fit in max_len tokens.
 * Any problem (missing, truncated or foreign file, inconsistent arrays, labels out of range, examples longer
 * than max_len) is a fatal error naming the file and what was expected. */
spry_dataset *spry_dataset_load(const char *path, int max_len);

/* Indices of the train pool / the held-out set; *count receives their number. Caller frees with spry_free. */
int32_t *spry_dataset_split_indices(const spry_dataset *ds, int test, int *count);

/* Gather examples idx[0..B) into a batch: tokens (B, T) with T = the longest selected length (<= max_len),
 * lengths, labels. Returns T. Output buffers hold at least B*max_len / B / B values. */
int spry_dataset_gather(const spry_dataset *ds, const int32_t *idx, int B, int32_t *tokens, int32_t *lengths,
                        int32_t *labels);

#ifdef __cplusplus
}
#endif
#endif
