#include "protocols.h"

/* Each protocol folder adds its descriptor here as it lands. */
const struct proto_ops *const protocols_table[] = {
        NULL,
};
const size_t protocols_count = 0;
