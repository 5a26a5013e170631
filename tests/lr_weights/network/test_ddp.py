"""Several GPUs, as sd-scripts runs them: two processes (gloo on the CPU), the network wrapped in
DistributedDataParallel as `accelerator.prepare(network)` does, gradients averaged by hand after
backward as train_network.py's `all_reduce_network` does (the network has no forward of its own, so
DDP's hooks never fire). With block LRs, pruning by the threshold and LoRA+, both ranks must end with
the same parameters, the same optimizer group layout and the same saved file.

No GPU is lent to this project's CI, so accelerate on real GPUs (NCCL) is not exercised here.
"""

import json
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from lr_weights import lora
from lr_weights.files.io import load_lora_file, read_metadata
from lr_weights.models.tiny import build_tiny_sd

WORLD = 2
STEPS = 2
ARGS = {
    "conv_dim": "2",
    "conv_alpha": "1",
    "down_lr_weight": "sine",
    "mid_lr_weight": "0.5",
    "up_lr_weight": "cosine+.1",
    # sine's second value (0.14, IN01) is below it: IN01 is pruned.
    "block_lr_zero_threshold": "0.2",
    "loraplus_lr_ratio": "4",
    "rank_dropout": "0.1",
}


def _batch(text_encoder, seed):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(2, 4, 16, 16, generator=g)
    tokens = torch.randint(0, text_encoder.cfg.vocab, (2, text_encoder.cfg.max_length), generator=g)
    return latents, torch.tensor([10, 700]), tokens


def _train_rank(rank, folder):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=WORLD)
    try:
        text_encoder, unet = build_tiny_sd(seed=0)  # both ranks load the same base model
        text_encoder.requires_grad_(False)
        unet.requires_grad_(False)
        torch.manual_seed(100 + rank)  # but draw different adapter inits: DDP must broadcast rank 0's
        network = lora.create_network(1.0, 4, 1.0, None, text_encoder, unet, **ARGS)
        network.apply_to(text_encoder, unet, True, True)
        before = torch.cat([p.detach().flatten() for p in network.parameters()])

        wrapped = DistributedDataParallel(network)
        network = wrapped.module  # accelerator.unwrap_model(network)
        network.prepare_grad_etc(text_encoder, unet)
        params, descriptions = network.prepare_optimizer_params(5e-4, 1e-3, 1e-3, with_descriptions=True)
        optimizer = torch.optim.AdamW(params)
        network.on_epoch_start(text_encoder, unet)
        for step in range(STEPS):
            latents, timesteps, tokens = _batch(text_encoder, seed=WORLD * step + rank)  # each rank its own data
            loss = unet(latents, timesteps, text_encoder(tokens)).pow(2).mean()
            loss.backward()
            for param in wrapped.parameters():  # train_network.py: all_reduce_network
                if param.grad is not None:
                    dist.all_reduce(param.grad)
                    param.grad /= WORLD
            torch.nn.utils.clip_grad_norm_(list(network.get_trainable_params()), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            network.apply_max_norm_regularization(1.0, "cpu")

        layout = [
            {"description": d, "lr": g["lr"], "shapes": [list(p.shape) for p in g["params"]], "names": [_name(network, p) for p in g["params"]]}
            for d, g in zip(descriptions, params)
        ]
        with open(os.path.join(folder, f"layout{rank}.json"), "w", encoding="utf-8") as handle:  # test output, not package code
            json.dump({"layout": layout, "init": before.tolist()[:64]}, handle)
        network.save_weights(os.path.join(folder, f"rank{rank}.safetensors"), torch.float16, {"ss_network_module": "lr_weights.lora"})
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _name(network, param):
    return next(name for name, p in network.named_parameters() if p is param)


@pytest.mark.slow
def test_two_ranks_train_to_identical_networks_and_files(tmp_path):
    mp.spawn(_train_rank, args=(str(tmp_path),), nprocs=WORLD, join=True)

    layouts = [json.loads((tmp_path / f"layout{r}.json").read_text(encoding="utf-8")) for r in range(WORLD)]
    assert layouts[0]["init"] != layouts[1]["init"], "the ranks should start from different inits"
    assert layouts[0]["layout"] == layouts[1]["layout"]
    descriptions = [g["description"] for g in layouts[0]["layout"]]
    assert "unet_block1" not in descriptions and "unet_block2" in descriptions  # IN01 pruned
    assert "unet_block4 plus" in descriptions and "textencoder plus" in descriptions  # LoRA+

    files = [load_lora_file(str(tmp_path / f"rank{r}.safetensors")) for r in range(WORLD)]
    assert files[0].keys() == files[1].keys()
    assert all(torch.equal(files[0][k], files[1][k]) for k in files[0])
    assert not any("down_blocks_0_attentions_0_" in k or "down_blocks_0_resnets_0_" in k for k in files[0])
    assert all(v.abs().sum() > 0 for k, v in files[0].items() if k.endswith("lora_up.weight"))
    # safetensors writes metadata in hash-map order, so the bytes may differ; the content may not.
    assert read_metadata(tmp_path / "rank0.safetensors") == read_metadata(tmp_path / "rank1.safetensors")
