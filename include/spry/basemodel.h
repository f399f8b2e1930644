/* spry/basemodel.h -- the frozen backbone's weights: random initialisation, or a base-model file.
 *
 * A spry base-model file is HDF5: root attributes format = "spry-model", format_version = 1, n_layer, n_head,
 * n_embd, n_ctx, vocab_size, causal; one float32 dataset per backbone tensor under /params, named and shaped as
 * Hugging Face GPT-2 ("wte.weight" (V,C), "h.0.attn.c_attn.weight" (C,3C), ...; Conv1D layout). `spry pretrain`
 * writes it; finetuning reads the backbone from it (the LoRA adapters and the head start fresh).
 */
#ifndef SPRY_BASEMODEL_H
#define SPRY_BASEMODEL_H

#include <stdint.h>

#include "spry/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* base = "random": GPT-2-style random backbone from seed; a path ending in ".safetensors": a Hugging Face GPT-2
 * checkpoint, read by spry_st_load_gpt2 (spry/safetensors.h); otherwise the path of a base-model file whose
 * architecture must match the model's (n_layer, n_head, n_embd, vocab_size; n_ctx at least the model's). Any
 * mismatch, missing tensor or unreadable file is a fatal error naming the file and both values. A base-model file
 * must carry the root attribute params_fnv1a64 (FNV-1a 64 over the architecture attributes and every /params
 * tensor: name, dims, float32 values, in name order), checked before use: a file without it is refused with the
 * command that adds it (spry base-checksum FILE), a file whose checksum differs is refused as corrupt. */
void spry_base_load(spry_model *m, const char *base, uint32_t seed);

/* Write the backbone (every frozen tensor) of m to path atomically (path.tmp, then rename). extra_attrs_ini is
 * stored as the root attribute "config" when non-NULL. */
void spry_base_save(spry_model *m, const char *path, const char *extra_attrs_ini);

/* `spry base-checksum FILE`: add params_fnv1a64 to a base-model file written before the checksum existed (the
 * weights are not changed), or verify it when present. Returns the exit status (0, or 2 with a message). */
int spry_base_checksum_main(const char *path);

#ifdef __cplusplus
}
#endif
#endif
