"""The training objective: one module whose forward computes every weighted loss of a step.

Putting the whole step inside one ``nn.Module`` lets ``DistributedDataParallel`` wrap it, so the
margin head, the mask branch and the generator are synchronised like the encoder.

Two passes of a restored face through the recognizer exist, and differ on purpose:

- ``identity`` (joint generator stage) uses a *frozen* copy of the recognizer (parameters
  detached, BatchNorm statistics of a throw-away copy): it trains the generator to produce faces
  the current recognizer identifies, without letting the recognizer move towards the restorations;
- ``id_preserving`` and ``margin_restored`` (refinement stage) use the recognizer itself: the
  restored face refines the recognition network (MEER's abstract), and gradients reach both the
  recognizer and the generator.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from meerbench.models.meer import Encoded, MeerNet
from meerbench.train import losses as L
from meerbench.train.config import GENERATOR_TERMS, TrainConfig
from meerbench.train.data import Batch


class Objective(nn.Module):
    """Network + margin head; ``forward`` returns (weighted total, {term: unweighted value})."""

    def __init__(self, cfg: TrainConfig, net: MeerNet, classes: int) -> None:
        super().__init__()
        self.net = net
        self.head = L.MarginHead(cfg.arch.embedding_dim, classes, cfg.margin.kind, cfg.margin.s,
                                 cfg.margin.m, cfg.margin.sample_rate)
        self.images = cfg.data.images
        self.none_family = cfg.arch.families.index("none")
        self.occluded_weight = cfg.losses.occluded_weight
        self.ssim_window = cfg.losses.ssim_window

    def forward(self, batch: Batch, weights: dict[str, float],
                disc: nn.Module | None = None, perceptual: nn.Module | None = None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor | None]:
        """Losses of one micro-batch; also the restored composite (for the discriminator)."""
        w = {k: v for k, v in weights.items() if v > 0}
        parts = [batch.masked if kind == "masked" else batch.unmasked for kind in self.images]
        n = batch.label.shape[0]
        enc = self.net.encode(torch.cat(parts))
        labels = batch.label.repeat(len(parts))
        terms: dict[str, torch.Tensor] = {"margin": self.head(enc.embedding, labels)}
        if "map" in w:
            coverage = torch.cat([batch.maps if kind == "masked" else torch.zeros_like(batch.maps)
                                  for kind in self.images])
            terms["map"] = L.mask_loss(enc.mask_logits, coverage)
        if "family" in w:
            none = torch.full_like(batch.family, self.none_family)
            targets = torch.cat([batch.family if kind == "masked" else none
                                 for kind in self.images])
            terms["family"] = nn.functional.cross_entropy(enc.family_logits.float(), targets)
        if "decorrelation" in w:
            terms["decorrelation"] = L.decorrelation(enc.pooled_identity, enc.pooled_mask)
        composite = None
        if GENERATOR_TERMS & set(w):
            composite = self._restoration_terms(batch, enc, n, w, terms, disc, perceptual)
        total = sum(w[k] * v for k, v in terms.items())
        return total, {k: v.detach() for k, v in terms.items()}, composite

    def _restoration_terms(self, batch: Batch, enc: Encoded, n: int, w: dict[str, float],
                           terms: dict[str, torch.Tensor], disc: nn.Module | None,
                           perceptual: nn.Module | None) -> torch.Tensor:
        i = self.images.index("masked")
        sl = slice(i * n, (i + 1) * n)
        masked_enc = Encoded(
            embedding=enc.embedding[sl], skips=[s[sl] for s in enc.skips],
            identity=enc.identity[sl], mask_logits=enc.mask_logits[sl],
        )
        generated = self.net.generate(masked_enc)
        # the mask is detached: restoration losses do not move the mask branch
        mask = nn.functional.interpolate(torch.sigmoid(masked_enc.mask_logits.detach()),
                                         size=generated.shape[-2:], mode="bilinear",
                                         align_corners=False)
        composite = mask * generated + (1 - mask) * batch.masked
        if "unmasked" in self.images:
            j = self.images.index("unmasked")
            target = enc.embedding[j * n:(j + 1) * n].detach()
        else:
            target = _frozen(self.net, batch.unmasked).detach()
        if "l1" in w:
            terms["l1"] = L.weighted_l1(generated, batch.unmasked, batch.maps, self.occluded_weight)
        if "ssim" in w:
            terms["ssim"] = L.ssim_loss(generated, batch.unmasked, self.ssim_window)
        if "perceptual" in w and perceptual is not None:
            terms["perceptual"] = perceptual(generated, batch.unmasked)
        if "identity" in w:
            terms["identity"] = L.cosine_distance(_frozen(self.net, composite), target)
        if "adversarial" in w and disc is not None:
            terms["adversarial"] = L.hinge_g(_frozen(disc, composite))
        if {"id_preserving", "margin_restored"} & set(w):
            restored = self.net(composite)
            if "id_preserving" in w:
                terms["id_preserving"] = L.cosine_distance(restored, target)
            if "margin_restored" in w:
                terms["margin_restored"] = self.head(restored, batch.label)
        return composite.detach()

    def generator_parameters(self) -> list[nn.Parameter]:
        return list(self.net.generator.parameters()) if self.net.generator is not None else []


def _frozen(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` with detached parameters and throw-away BatchNorm statistics: gradients
    reach ``x`` only, and the module's state is untouched."""
    params = {k: v.detach() for k, v in module.named_parameters()}
    buffers = {k: v.clone() for k, v in module.named_buffers()}
    return functional_call(module, {**params, **buffers}, (x,))
