"""Run by test_training.py under torchrun: trains on one shard and saves this rank's parameters."""

import sys

import torch
from safetensors.torch import save_file

from training_data import CLASS_NAMES, FEATURE_MODEL_ARGS, SeparableFeatures
from zsar.train import StageConfig, Trainer, TrainConfig

out_dir, batch_size = sys.argv[1], int(sys.argv[2])
config = TrainConfig(model="rest_tiny", model_args=FEATURE_MODEL_ARGS,
                     stages={"joint": StageConfig(2, "sgd", 0.05, 0.0, momentum=0.0)}, batch_size=batch_size,
                     seed=3, out_dir=out_dir, progress=False, log_every=1000, device="cpu")
trainer = Trainer(config, SeparableFeatures(32), CLASS_NAMES)
trainer.fit()
rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
save_file({k: v.contiguous() for k, v in trainer.model.state_dict().items()}, f"{out_dir}/params_rank{rank}.safetensors")
