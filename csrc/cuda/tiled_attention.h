// Tiled CUDA kernels of the kinds where every valid token sees every valid token (Bottleneck);
// attention_{forward,backward}_cuda hand those kinds over after checking the arguments.
#pragma once

#include "zsar/attention.h"

namespace zsar {

void tiled_attention_fwd_cuda(const AttentionForward& args);
void tiled_attention_bwd_cuda(const AttentionBackward& args);

}  // namespace zsar
