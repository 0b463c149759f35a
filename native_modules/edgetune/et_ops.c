/*
 * The op table (et_ops.h): one entry per .etm op code.
 */
#include <stddef.h>

#include "et_ops.h"

static const et_op_t ops[ET_OP_COUNT] = {
    { "?", 0, NULL, NULL }, /* never reaches a walker: et_model_init refuses unknown codes */
    [ET_OP_CONV_2D] = { "CONV_2D", ET_OPK_WEIGHTS | ET_OPK_WINDOW, et_forward_weights, et_input_grad_weights },
    [ET_OP_DEPTHWISE_CONV_2D] = { "DEPTHWISE_CONV_2D", ET_OPK_WEIGHTS | ET_OPK_WINDOW, et_forward_weights,
        et_input_grad_weights },
    [ET_OP_FULLY_CONNECTED] = { "FULLY_CONNECTED", ET_OPK_WEIGHTS, et_forward_weights, et_input_grad_weights },
    [ET_OP_MAX_POOL_2D] = { "MAX_POOL_2D", ET_OPK_WINDOW | ET_OPK_POOL, et_forward_pool, et_input_grad_pool },
    [ET_OP_AVERAGE_POOL_2D] = { "AVERAGE_POOL_2D", ET_OPK_WINDOW | ET_OPK_POOL, et_forward_pool,
        et_input_grad_pool },
    [ET_OP_MEAN] = { "MEAN", 0, et_forward_mean, et_input_grad_mean },
};

const et_op_t *et_op(unsigned op) {
    return &ops[op < ET_OP_COUNT ? op : 0];
}
