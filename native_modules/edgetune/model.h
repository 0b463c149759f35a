/*
 * The .etm model file on the device: parsing, validation, arena planning and
 * the layer chain (docs/etm-format.md is the contract). The forward pass over it is
 * et_train_forward (train.h, forward.c), with nothing trained for plain inference.
 *
 * Plain C99, no MicroPython headers and no allocation: the model keeps
 * pointers into the caller's buffer (weights are read in place), records are
 * decoded on demand into small structs, and the caller provides the arena.
 * Validate once with et_model_init(); afterwards everything trusts the buffer
 * (TFLM's Prepare/Eval split).
 */
#ifndef EDGETUNE_MODEL_H
#define EDGETUNE_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/et_types.h"

#define ET_FORMAT_VERSION 1
#define ET_HEADER_SIZE 64
#define ET_TENSOR_REC 32
#define ET_LAYER_REC 48
#define ET_MAX_TENSORS 1024
#define ET_MAX_LAYERS 256
#define ET_NONE 0xFFFF
/* Largest activation tensor accepted, in elements (keeps every size and index
 * computation far from overflow on 32-bit targets). */
#define ET_MAX_ACT_ELEMS (1UL << 26)
/* Largest output-tensor scale accepted (2^32): keeps the float32 loss finite. */
#define ET_MAX_OUTPUT_SCALE 4294967296.0f

enum { ET_DT_INT8 = 1, ET_DT_INT32 = 2 };
enum { ET_KIND_ACT = 0, ET_KIND_CONST = 1 };
enum {
    ET_OP_CONV_2D = 1,
    ET_OP_DEPTHWISE_CONV_2D = 2,
    ET_OP_FULLY_CONNECTED = 3,
    ET_OP_MAX_POOL_2D = 4,
    ET_OP_AVERAGE_POOL_2D = 5,
    ET_OP_MEAN = 6,
};
enum { ET_ACT_NONE = 0, ET_ACT_RELU = 1, ET_ACT_RELU6 = 2 };

/* One tensor record, decoded. Pointers point into the model buffer. */
typedef struct {
    uint8_t dtype;          /* ET_DT_* */
    uint8_t kind;           /* ET_KIND_* */
    uint8_t quant;          /* 0 per-tensor, 1 per-channel */
    uint8_t axis;           /* quantized axis (per-channel only) */
    uint16_t shape[4];      /* NHWC (weights OHWI) */
    int32_t zero_point;
    float scale;            /* per-tensor scale (metadata; inference never uses it) */
    const float *scales;    /* shape[axis] per-channel scales, or NULL */
    const void *data;       /* constants: int8_t or int32_t data, else NULL */
    uint32_t data_len;
} et_tensor_t;

/* One layer record, decoded. multipliers/shifts point into the model buffer. */
typedef struct {
    uint8_t op;             /* ET_OP_* */
    uint8_t activation;     /* ET_ACT_* (informational; the clamp is act_min/act_max) */
    uint16_t input;         /* tensor indices */
    uint16_t output;
    uint16_t weight;        /* ET_NONE if absent */
    uint16_t bias;          /* ET_NONE if absent */
    uint8_t stride_h, stride_w, filter_h, filter_w;
    int16_t pad_h, pad_w;
    uint16_t depth_multiplier;
    uint16_t n_mult;
    int32_t input_offset, output_offset, act_min, act_max;
    const int32_t *multipliers; /* n_mult values, or NULL */
    const int32_t *shifts;      /* n_mult values, or NULL */
    int32_t p0;                 /* op parameter; 0 for every v1 op (MEAN: reserved, must be 0) */
} et_layer_t;

/* A validated model: header fields plus pointers into the caller's buffer. */
typedef struct {
    const uint8_t *buf;
    size_t len;
    uint16_t n_tensors, n_layers;
    uint16_t input, output;  /* tensor indices of the model input/output */
    uint32_t tensor_off, layer_off;
    uint32_t meta_off, meta_len;
    uint32_t scheme_off, scheme_len;
    size_t arena_size;       /* inference arena in bytes (et_model_arena_size) */
} et_model_t;

/*
 * Parse and validate an .etm buffer (every check of docs/etm-format.md,
 * "Validation"). buf must stay alive and unchanged while m is used, and must be
 * 4-byte aligned. On success fills *m and returns NULL; on failure a message, never
 * NULL (et_err.h: `err` filled with details, or without a buffer the static format).
 */
const char *et_model_init(et_model_t *m, const uint8_t *buf, size_t len, char *err, size_t err_len);

/* Decode tensor / layer record i (i < n_tensors / n_layers; no checks). */
void et_model_tensor(const et_model_t *m, unsigned i, et_tensor_t *t);
void et_model_layer(const et_model_t *m, unsigned i, et_layer_t *l);

/* Number of elements of a tensor (product of its shape). */
size_t et_tensor_elems(const et_tensor_t *t);

/* Tensor index of chain position i: 0 = model input, i = output of layer i-1. */
unsigned et_model_chain_tensor(const et_model_t *m, unsigned i);

/*
 * Inference arena size in bytes. With a4(i) = align4(elements of chain tensor i):
 * max over i < n_layers of a4(i) + a4(i + 1). Chain tensor i lives at offset 0
 * when i is even and at arena_size - a4(i) when i is odd.
 */
size_t et_model_arena_size(const et_model_t *m);

/* Arena offset of chain tensor i (see et_model_arena_size). */
size_t et_model_chain_offset(const et_model_t *m, unsigned i);

/* Elements of the model input / output tensor. */
size_t et_model_input_size(const et_model_t *m);
size_t et_model_output_size(const et_model_t *m);

/* CRC-32 as zlib.crc32 (reflected polynomial 0xEDB88320), starting from crc. */
uint32_t et_crc32(uint32_t crc, const uint8_t *p, size_t n);

#endif /* EDGETUNE_MODEL_H */
