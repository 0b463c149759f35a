/*
 * On-device training of an .etm model (docs/training.md is the normative
 * arithmetic; §6 the arena layout, §7 the trained-weights file).
 *
 * Plain C99, no MicroPython headers, no allocation: the caller provides the
 * per-layer table (one et_train_layer_t per model layer) and the arena
 * (et_train_t.arena_size bytes, 4-byte aligned).
 *
 * Files: train.c (plan, init), forward.c (the forward walker), backward.c (backward pass,
 * update, mini-batch), train_state.c (the trained-weights file).
 *
 * Life cycle: fill the scheme (scheme.h) into layers[i].s, et_train_plan()
 * (validation + layout), allocate the arena, et_train_init() (copies the
 * trainable parameters from the model, selects channels, zeroes residuals and
 * momentum; also used by reset), then et_train_step() / et_train_forward().
 */
#ifndef EDGETUNE_TRAIN_H
#define EDGETUNE_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "scheme.h"

#define ET_STATE_MAGIC "EDTW"
#define ET_STATE_VERSION 2 /* 2: the params region ends with the classifier-quantization item */
#define ET_STATE_HEADER 32

/* Per-layer plan: the scheme entry and arena offsets (0 = absent unless noted). */
typedef struct {
    et_scheme_layer_t s;
    uint16_t c_out;         /* output channels (weight layers) */
    uint32_t per_channel;   /* weights per output channel (weight layers) */
    float s_wmax;           /* max weight scale (weight layers at or above `first`) */
    uint32_t saved_in;      /* saved input copy, if has_saved_in (weight-trained layers) */
    uint32_t argmax;        /* MAX_POOL_2D above `first`: arg-max indices, argmax_bits per output */
    uint32_t mask;          /* output mask (layers >= first) */
    uint32_t bias;          /* bias copy (int32 x c_out) */
    uint32_t map;           /* channel map (int16 x c_out) */
    uint32_t wcopy;         /* weight copy (n_sel x per_channel int8) */
    uint32_t resid;         /* residuals (int16: c_out bias ones, then n_sel x per_channel) */
    uint32_t mom;           /* momentum (float32, same order), if momentum is on */
    uint32_t acc;           /* batch accumulator (float32, same order), if batch is on */
    uint8_t has_saved_in;
    uint8_t has_argmax;
    uint8_t argmax_bits;    /* ceil(log2(KH*KW)), 0 for a 1x1 window */
} et_train_layer_t;

typedef struct {
    const et_model_t *m;
    et_train_layer_t *layers;   /* m->n_layers entries */
    uint8_t *arena;
    int first;                  /* first trained layer, -1: nothing trains */
    float momentum;             /* beta, 0 = off */
    size_t arena_size;          /* whole training arena (= inference arena if nothing trains) */
    size_t work_size;           /* region 1 */
    size_t grad_pp;             /* bytes of the backward int16 gradient ping-pong (§6.1) */
    size_t params_off, params_size;
    size_t loss_off;
    size_t peak;                /* highest arena offset written so far (rounded up to 4) */
    uint32_t n_trainable;       /* trainable parameter count */
    size_t batch_off;           /* batch accumulator region (after params), 0 = no batch */
    int accumulate;             /* inside et_train_batch: 4d/4e add to the accumulators */
    int refit_layer;            /* the classifier a refit writes (docs/training.md §9), -1: none */
    size_t qscale_off;          /* its params item: float32 s_w, s_b, int32 mult, shift (C_out each) */
} et_train_t;

/* The classifier-quantization item (§6.3) of a plan with refit_layer >= 0. */
static inline float *et_train_q_sw(const et_train_t *t) {
    return (float *)(void *)(t->arena + t->qscale_off);
}
static inline float *et_train_q_sb(const et_train_t *t) {
    return et_train_q_sw(t) + t->layers[t->refit_layer].c_out;
}
static inline int32_t *et_train_q_mult(const et_train_t *t) {
    return (int32_t *)(void *)(et_train_q_sw(t) + 2 * t->layers[t->refit_layer].c_out);
}
static inline int32_t *et_train_q_shift(const et_train_t *t) {
    return et_train_q_mult(t) + t->layers[t->refit_layer].c_out;
}

/* After the classifier's scales changed (refit, load): its s_wmax from the params item. */
void et_train_qscale_changed(et_train_t *t);

/* Back to the flashed classifier (bias, weights, scales, multipliers; residuals, momentum 0). */
void et_train_classifier_flashed(et_train_t *t);

/*
 * Validate the scheme in layers[i].s against the model (scales, accumulator
 * bounds of docs/training.md §4b) and lay out the arena. Returns NULL or a
 * message, never NULL on failure (et_err.h). Nothing else is touched.
 */
const char *et_train_plan(et_train_t *t, const et_model_t *m, et_train_layer_t *layers, float momentum,
    char *err, size_t err_len);

/*
 * After et_train_plan: add the batch accumulator region (docs/training.md §6: float32 per
 * trainable parameter, after params, before loss) so et_train_batch can be used.
 */
void et_train_plan_batch(et_train_t *t);

/* Copy the trainable parameters from the model, select channels, zero residuals and momentum. */
void et_train_init(et_train_t *t, uint8_t *arena);

/*
 * Forward pass with the trained parameters; returns the output in the arena. save != 0 also
 * keeps the masks and input copies the backward pass needs (train); predict/evaluate pass 0.
 */
const int8_t *et_train_forward(et_train_t *t, const int8_t *input, int save);

/*
 * One training step on one sample (label < output size, lr finite: checked by
 * the caller). qas != 0: QAS step, else plain int8 SGD. Returns the loss.
 */
float et_train_step(et_train_t *t, const int8_t *input, int32_t label, float lr, int qas);

/*
 * One mini-batch step on k >= 1 samples (inputs: k x input size bytes; labels, lr checked
 * by the caller; needs et_train_plan_batch). Returns the mean loss (docs/training.md §5).
 */
float et_train_batch(et_train_t *t, const int8_t *inputs, const int32_t *labels, int32_t k, float lr, int qas);

/* CRC-32 of the scheme encoded as the .etm scheme section (docs/training.md §1). */
uint32_t et_train_scheme_crc(const et_train_t *t);

/* Size of the trained-weights file, and its 32-byte header (the params region follows verbatim). */
size_t et_train_state_size(const et_train_t *t);
void et_train_state_header(const et_train_t *t, uint8_t *hdr);

/* flags bit1: a sensor-frame trailer of ET_STATE_FRAME_BYTES follows the params region
 * (docs/training.md §7; written and checked by the binding, covered by the size and CRC). */
#define ET_STATE_FLAG_FRAME 2u
#define ET_STATE_FRAME_BYTES 44u

/* The header of a file with `tail` (tail_len bytes, 0 or ET_STATE_FRAME_BYTES, flag bit1)
 * after the params region. */
void et_train_state_header_tail(const et_train_t *t, uint8_t *hdr, const uint8_t *tail, size_t tail_len);

/* Check a trained-weights file fully; NULL if it can be loaded, else a message (never NULL on
 * failure, also without an error buffer: et_err.h). */
const char *et_train_state_check(const et_train_t *t, const uint8_t *buf, size_t len, char *err, size_t err_len);

/* Load a file that passed et_train_state_check. */
void et_train_state_load(et_train_t *t, const uint8_t *buf);

#endif /* EDGETUNE_TRAIN_H */
