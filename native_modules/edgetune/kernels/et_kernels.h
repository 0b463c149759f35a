/*
 * Public declarations of the edgetune int8 forward kernels. Each kernel lives
 * in its own file, named by op and data type (et_<op>_s8.c), and implements
 * the TFLite Micro reference integer kernel arithmetic bit for bit.
 *
 * None of the kernels allocates memory or needs a scratch buffer; the caller
 * validates shapes and parameters once (model.c) and the kernels trust them.
 *
 * The _rows_ variants serve weight-trained layers (train.c): output channel c
 * reads its weight row from `ram` (row map[c]) when map[c] >= 0, else from the
 * filter, so trained channels are computed once, in the same 4-channel passes.
 */
#ifndef EDGETUNE_ET_KERNELS_H
#define EDGETUNE_ET_KERNELS_H

#include "et_types.h"

et_status_t et_conv_s8(const et_conv_params_t *params, const et_per_channel_quant_t *quant,
    const et_dims_t *input_dims, const int8_t *input,
    const et_dims_t *filter_dims, const int8_t *filter,
    const int32_t *bias,
    const et_dims_t *output_dims, int8_t *output);

et_status_t et_conv_rows_s8(const et_conv_params_t *params, const et_per_channel_quant_t *quant,
    const et_dims_t *input_dims, const int8_t *input,
    const et_dims_t *filter_dims, const int8_t *filter, const int16_t *map, const int8_t *ram,
    const int32_t *bias,
    const et_dims_t *output_dims, int8_t *output);

et_status_t et_depthwise_conv_s8(const et_conv_params_t *params, const et_per_channel_quant_t *quant,
    const et_dims_t *input_dims, const int8_t *input,
    const et_dims_t *filter_dims, const int8_t *filter,
    const int32_t *bias,
    const et_dims_t *output_dims, int8_t *output);

et_status_t et_fully_connected_s8(const et_fc_params_t *params, const et_per_channel_quant_t *quant,
    int32_t batches, int32_t accum_depth, const int8_t *input,
    int32_t output_depth, const int8_t *filter,
    const int32_t *bias, int8_t *output);

et_status_t et_fully_connected_rows_s8(const et_fc_params_t *params, const et_per_channel_quant_t *quant,
    int32_t batches, int32_t accum_depth, const int8_t *input,
    int32_t output_depth, const int8_t *filter, const int16_t *map, const int8_t *ram,
    const int32_t *bias, int8_t *output);

et_status_t et_max_pool_s8(const et_pool_params_t *params,
    const et_dims_t *input_dims, const int8_t *input,
    const et_dims_t *output_dims, int8_t *output);

et_status_t et_avg_pool_s8(const et_pool_params_t *params,
    const et_dims_t *input_dims, const int8_t *input,
    const et_dims_t *output_dims, int8_t *output);

et_status_t et_mean_s8(const et_mean_params_t *params,
    const et_dims_t *input_dims, const int8_t *input,
    int8_t *output);

#endif /* EDGETUNE_ET_KERNELS_H */
