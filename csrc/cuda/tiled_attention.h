// Tiled CUDA kernels of the kinds where every valid token sees every valid token (Bottleneck);
// masked_attention_{fwd,bwd}_cuda hand those kinds over after checking the arguments.
#pragma once

#include "zsar/masked_attention.h"

namespace zsar {

void tiled_attention_fwd_cuda(const MaskedAttentionForward& args);
void tiled_attention_bwd_cuda(const MaskedAttentionBackward& args);

}  // namespace zsar
