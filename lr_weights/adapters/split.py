"""The DiT kind's adapter: lr_weights' LoRA module plus what upstream lora_flux adds to it.

- split_qkv: a fused Linear a family's split rule names (FLUX: qkv in double blocks, qkv+mlp in
  single blocks' linear1) gets one rank-`dim` LoRA per part, as diffusers splits those layers. The
  part sizes come from the layer's shape (upstream hard-codes FLUX.1's 3072/12288, so it breaks on
  any other width). Parameters are `lora_down.<i>.weight` / `lora_up.<i>.weight`; the network
  saves them merged (see dit_network.py).
- GGPO (ggpo_beta + ggpo_sigma): the weight/grad-norm caches and the weight perturbation of the
  forward in training, drawn exactly where upstream draws them (creation: one randperm per module
  for the norm estimate; forward: one randn of the base weight's shape once both norms are known).

Everything else (fused Linear forward, dropouts, scale on the rank side) is LoRAModule's.
"""

from __future__ import annotations

import logging
import math
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from lr_weights.archs.dit import SplitRule
from lr_weights.adapters.fused import split_lora_linear
from lr_weights.adapters.lora import LoRAModule

logger = logging.getLogger(__name__)


def split_dims(rule: Optional[SplitRule], lora_name: str, layer: nn.Module) -> Optional[Tuple[int, ...]]:
    """The output parts split_qkv cuts a fused Linear into, by `rule` and the layer's own shape;
    None for a layer no rule names or that is not a Linear.

    "equal" (FLUX double blocks' `*_attn_qkv`, out = 3 x hidden): equal parts. "qkv+rest" (single
    blocks' `linear1`, in = hidden, out = 3 x hidden + mlp): q, k, v and the MLP input. "q+kv"
    (Lumina 2's grouped-query `attention_qkv`, in = hidden = q, out = q + 2 x kv): q, k, v.
    """
    if rule is None or type(layer).__name__ != "Linear":
        return None
    out_features, in_features = layer.out_features, layer.in_features
    if rule.form == "equal":
        if out_features % rule.parts:
            raise ValueError(f"split_qkv: {lora_name} has {out_features} outputs, not {rule.parts} equal parts")
        return (out_features // rule.parts,) * rule.parts
    if rule.form == "qkv+rest":
        rest = out_features - 3 * in_features
        if rest <= 0:
            raise ValueError(f"split_qkv: {lora_name} ({in_features} -> {out_features}) is not q, k, v ({in_features} each) plus an MLP input")
        return (in_features,) * 3 + (rest,)
    if rule.form == "q+kv":
        kv = out_features - in_features
        if kv <= 0 or kv % 2:
            raise ValueError(f"split_qkv: {lora_name} ({in_features} -> {out_features}) is not q ({in_features}) plus equal k and v")
        return (in_features, kv // 2, kv // 2)
    raise ValueError(f"split_qkv: unknown split form {rule.form!r} for {lora_name}")


class SplitLoRAModule(LoRAModule):
    """LoRAModule with upstream lora_flux's split_qkv and GGPO (the DiT kind's adapter)."""

    def __init__(
        self,
        lora_name: str,
        base: nn.Module,
        dim: int,
        alpha: Optional[float],
        multiplier: float = 1.0,
        dropout: Optional[float] = None,
        rank_dropout: Optional[float] = None,
        module_dropout: Optional[float] = None,
        *,
        split_dims: Optional[Sequence[int]] = None,
        ggpo_beta: Optional[float] = None,
        ggpo_sigma: Optional[float] = None,
    ):
        # Read by _make_factors, which LoRAModule.__init__ calls.
        self._split_dims = None if split_dims is None else tuple(int(d) for d in split_dims)
        super().__init__(lora_name, base, dim, alpha, multiplier, dropout, rank_dropout, module_dropout)
        self.split_dims = self._split_dims
        if alpha is None or (not isinstance(alpha, torch.Tensor) and alpha == 0):
            # Upstream stores the rank itself, an integer tensor, and saves it so: keep the file's bytes.
            self.alpha = torch.tensor(dim, device="cpu")
        self.ggpo_beta = ggpo_beta
        self.ggpo_sigma = ggpo_sigma
        self.combined_weight_norms: Optional[torch.Tensor] = None
        self.grad_norms: Optional[torch.Tensor] = None
        self.weight_norms: Optional[torch.Tensor] = None
        if self.ggpo:
            self.perturbation_norm_factor = 1.0 / math.sqrt(base.weight.shape[0])
            self.base_weight_shape = tuple(base.weight.shape)
            self._estimate_base_norm(base.weight)

    def _make_factors(self, base: nn.Module, dim: int, fa: bool) -> None:
        if self._split_dims is None:
            super()._make_factors(base, dim, fa)
            return
        if sum(self._split_dims) != base.out_features:
            raise ValueError(f"split dims {self._split_dims} do not add up to the {base.out_features} outputs of the layer")
        # Upstream's order: every down Linear, then every up Linear, then their inits.
        self.lora_down = nn.ModuleList([nn.Linear(base.in_features, dim, bias=False) for _ in self._split_dims])
        self.lora_up = nn.ModuleList([nn.Linear(dim, part, bias=False) for part in self._split_dims])
        for down in self.lora_down:
            nn.init.kaiming_uniform_(down.weight, a=math.sqrt(5))
        for up in self.lora_up:
            nn.init.zeros_(up.weight)

    @property
    def ggpo(self) -> bool:
        return self.ggpo_beta is not None and self.ggpo_sigma is not None

    def factor_pairs(self) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """(down weight, up weight) per part: one pair, or one per split part (rows of ΔW in order)."""
        if self.split_dims is None:
            return super().factor_pairs()
        return [(down.weight, up.weight) for down, up in zip(self.lora_down, self.lora_up)]

    def delta_weight(self, multiplier: Optional[float] = None) -> torch.Tensor:
        multiplier = self.multiplier if multiplier is None else multiplier
        return torch.cat([up.float() @ down.float() for down, up in self.factor_pairs()], dim=0) * (multiplier * self.scale)

    # ---- forward ------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.split_dims is None and not self._perturbs():
            return super().forward(x)
        out = self._base_forward(x)
        if not self.enabled:
            return out
        if self.module_dropout is not None and self.training:
            if torch.rand(1) < self.module_dropout:
                return out
        scale = self.multiplier * self.scale
        if self.split_dims is not None and x.dim() in (2, 3) and not (self.training and (self.dropout is not None or self.rank_dropout is not None)):
            downs = [down.weight for down in self.lora_down]
            ups = [up.weight for up in self.lora_up]
            return split_lora_linear(out, x, downs, ups, self.split_dims, scale)
        if self.split_dims is None:  # GGPO's perturbed training forward
            h = self.lora_down(x)
            if self.dropout is not None and self.training:
                h = nn.functional.dropout(h, p=self.dropout)
            if self.rank_dropout is not None and self.training:
                h, scale = self.drop_ranks(h, scale)
            return out + self.lora_up(h) * scale + self._perturbation(x)
        hs = [down(x) for down in self.lora_down]
        if self.dropout is not None and self.training:
            hs = [nn.functional.dropout(h, p=self.dropout) for h in hs]
        if self.rank_dropout is not None and self.training:
            dropped = [self.drop_ranks(h, scale) for h in hs]
            hs = [h for h, _ in dropped]
            scale = dropped[0][1]
        # Scale on the rank side (PERF.md): the same result up to rounding, no full-width multiply.
        return out + torch.cat([up(h * scale) for up, h in zip(self.lora_up, hs)], dim=-1)

    def _perturbs(self) -> bool:
        return self.training and self.ggpo and self.combined_weight_norms is not None and self.grad_norms is not None

    def _perturbation(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            size = self.ggpo_sigma * torch.sqrt(self.combined_weight_norms**2) + self.ggpo_beta * (self.grad_norms**2)
            factor = (size * self.perturbation_norm_factor).to(self.lora_up.weight.device)
            noise = torch.randn(self.base_weight_shape, dtype=self.lora_up.weight.dtype, device=self.lora_up.weight.device)
            noise.mul_(factor)
            return x @ noise.T

    # ---- GGPO norm caches -------------------------------------------------------------------------

    @torch.no_grad()
    def _estimate_base_norm(self, weight: torch.Tensor) -> None:
        """Mean row norm of the base weight from up to 1000 random rows (one randperm, as upstream)."""
        rows = weight.shape[0]
        picked = torch.randperm(rows)[: min(1000, rows)]
        device = next(self.parameters()).device
        norms = torch.norm(weight.to(torch.float32)[picked].to(device), dim=1, keepdim=True)
        self.base_weight_norm_estimate = norms.mean()
        self.base_weight_norm_std = norms.std()

    @torch.no_grad()
    def update_norms(self) -> None:
        """Row norms of ΔW and of base + ΔW (estimated), in training with GGPO only.

        Upstream computes `up @ down` and calls a non-in-place `mul(scale)` whose result it drops,
        so its norms are of the unscaled product; we keep that, since GGPO's sigma was tuned on it.
        """
        if not self.ggpo or not self.training:
            return
        product = torch.cat([up @ down for down, up in self.factor_pairs()], dim=0)
        self.weight_norms = torch.norm(product, dim=1, keepdim=True)
        self.combined_weight_norms = torch.sqrt(self.base_weight_norm_estimate**2 + torch.sum(product**2, dim=1, keepdim=True))

    @torch.no_grad()
    def update_grad_norms(self) -> None:
        if not self.training:
            logger.debug("skipping update_grad_norms for %s (not training)", self.lora_name)
            return
        pairs = self.factor_pairs()
        if any(down.grad is None or up.grad is None for down, up in pairs):
            return
        # Under autocast as upstream (on a CPU that means bfloat16 products). A conv module's
        # factors (SD3's x_embedder with emb_dims) are matrices once flattened past the first
        # dimension, as ΔW is; a Linear's already are (flatten(1) is then the tensor itself).
        with torch.autocast(pairs[0][0].device.type):
            approx = torch.cat(
                [self.scale * (up.flatten(1) @ down.grad.flatten(1) + up.grad.flatten(1) @ down.flatten(1)) for down, up in pairs], dim=0
            )
            self.grad_norms = torch.norm(approx, dim=1, keepdim=True)
