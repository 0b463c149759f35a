/*
 * What the training files (train.c, forward.c, backward.c, train_state.c) share: the chain's
 * tensor sizes, the arena high-water mark, and the scale checks and look-ups of
 * docs/training.md §4. Internal to the engine (not part of train.h's API).
 */
#ifndef EDGETUNE_TRAIN_UTIL_H
#define EDGETUNE_TRAIN_UTIL_H

#include "train.h"
#include "et_util.h"

/* Elements of chain tensor i (0 = model input, i = output of layer i-1). */
static inline size_t et_train_chain_elems(const et_model_t *m, unsigned i) {
    et_tensor_t t;
    et_model_tensor(m, et_model_chain_tensor(m, i), &t);
    return et_tensor_elems(&t);
}

/* Record that the arena was written up to byte `end` (counted in 4-byte slots, the
 * granularity of the layout, so a full plan reports exactly its size). */
static inline void et_train_touch(et_train_t *t, size_t end) {
    end = et_align4(end);
    if (end > t->peak) {
        t->peak = end;
    }
}

/* A positive finite float32. */
static inline int et_finite_pos(float v) {
    return v > 0.0f && v <= 3.4028235e38f;
}

/* Scale of channel c of a per-channel or per-tensor quantized tensor. */
static inline float et_scale_of(const et_tensor_t *t, unsigned c) {
    return t->scales ? t->scales[c] : t->scale;
}

#endif /* EDGETUNE_TRAIN_UTIL_H */
