/*
 * The op table (et_ops.h): one entry per .etm op code.
 */
#include "et_ops.h"

static const et_op_t ops[ET_OP_COUNT] = {
    { "?", 0 },
    [ET_OP_CONV_2D] = { "CONV_2D", ET_OPK_WEIGHTS | ET_OPK_WINDOW },
    [ET_OP_DEPTHWISE_CONV_2D] = { "DEPTHWISE_CONV_2D", ET_OPK_WEIGHTS | ET_OPK_WINDOW },
    [ET_OP_FULLY_CONNECTED] = { "FULLY_CONNECTED", ET_OPK_WEIGHTS },
    [ET_OP_MAX_POOL_2D] = { "MAX_POOL_2D", ET_OPK_WINDOW | ET_OPK_POOL },
    [ET_OP_AVERAGE_POOL_2D] = { "AVERAGE_POOL_2D", ET_OPK_WINDOW | ET_OPK_POOL },
    [ET_OP_MEAN] = { "MEAN", 0 },
};

const et_op_t *et_op(unsigned op) {
    return &ops[op < ET_OP_COUNT ? op : 0];
}
