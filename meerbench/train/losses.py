"""Loss functions and training-only modules: margin heads, mask, decoupling, image and GAN losses.

All losses are computed in float32 (inputs are cast), whatever the autocast precision.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from meerbench.errors import ModelError


class MarginHead(nn.Module):
    """Normalised classifier with an additive angular (ArcFace) or cosine (CosFace) margin.

    ArcFace uses insightface's rule for theta + m > pi: past ``cos(pi - m)`` the target logit is
    ``cos(theta) - m sin(m)`` instead of ``cos(theta + m)``, which keeps it monotonic.

    ``sample_rate`` < 1 is Partial FC's sampled softmax (An et al., 2021) for very many classes:
    in training, each call's softmax runs over the batch's own classes plus random others, up to
    ``sample_rate`` of all classes (drawn from the global torch RNG, saved in checkpoints). The
    centres are not sharded across GPUs: each rank holds them all (360k x 512 fp32 is 0.7 GB).
    """

    def __init__(self, dim: int, classes: int, kind: str, s: float, m: float,
                 sample_rate: float = 1.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(classes, dim))
        nn.init.normal_(self.weight, std=0.01)
        self.kind, self.s, self.m, self.sample_rate = kind, s, m, sample_rate

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        if self.training and self.sample_rate < 1:
            keep = sampled_classes(labels, len(weight), self.sample_rate)
            weight, labels = weight[keep], torch.searchsorted(keep, labels)
        cos = F.linear(F.normalize(embeddings.float()), F.normalize(weight.float()))
        cos = cos.clamp(-1 + 1e-7, 1 - 1e-7)
        target = cos.gather(1, labels[:, None])
        if self.kind == "arcface":
            sin = (1 - target * target).sqrt()
            shifted = target * math.cos(self.m) - sin * math.sin(self.m)
            shifted = torch.where(target > math.cos(math.pi - self.m), shifted,
                                  target - math.sin(math.pi - self.m) * self.m)
        else:
            shifted = target - self.m
        logits = cos.scatter(1, labels[:, None], shifted) * self.s
        return F.cross_entropy(logits, labels)


def sampled_classes(labels: torch.Tensor, classes: int, rate: float) -> torch.Tensor:
    """Sorted class indices: every class in ``labels`` and random others, ``rate`` x classes
    in all (at least the batch's own)."""
    score = torch.rand(classes, device=labels.device)
    score[labels] = 2.0  # positives first
    count = max(int(rate * classes), int(labels.unique().numel()))
    return torch.topk(score, count, sorted=False).indices.sort().values


def mask_loss(logits: torch.Tensor, coverage: torch.Tensor) -> torch.Tensor:
    """BCE + Dice of occluder-map logits against the renderer's map (area-downsampled)."""
    target = F.interpolate(coverage.float(), size=logits.shape[-2:], mode="area")
    logits = logits.float()
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    dice = 1 - (2 * (prob * t).sum(1) + 1) / (prob.sum(1) + t.sum(1) + 1)
    return bce + dice.mean()


def decorrelation(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Mean squared batch cross-correlation of two (N, C) feature sets (0 when independent)."""
    a, b = a.float(), b.float()
    za = (a - a.mean(0)) / (a.std(0) + eps)
    zb = (b - b.mean(0)) / (b.std(0) + eps)
    corr = za.T @ zb / (a.shape[0] - 1)
    return corr.square().mean()


def weighted_l1(generated: torch.Tensor, target: torch.Tensor, coverage: torch.Tensor,
                occluded_weight: float) -> torch.Tensor:
    """Full-image L1 plus ``occluded_weight`` x the L1 averaged over the occluded pixels only."""
    diff = (generated.float() - target.float()).abs()
    inside = (diff * coverage).sum() / (coverage.sum() * diff.shape[1] + 1e-6)
    return diff.mean() + occluded_weight * inside


def _gaussian(window: int, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(window, dtype=torch.float32) - (window - 1) / 2
    g = torch.exp(-x * x / (2 * sigma * sigma))
    return g / g.sum()


def ssim_loss(a: torch.Tensor, b: torch.Tensor, window: int = 7) -> torch.Tensor:
    """1 - mean SSIM (Gaussian window, sigma 1.5) of images in [-1, 1], per channel.

    Always float32, also inside autocast: in bf16, blur(a*a) - blur(a)^2 cancels to negative
    variances and the ratio blew up to inf in a real run.
    """
    with torch.autocast(a.device.type, enabled=False):
        a = (a.float() + 1) / 2
        b = (b.float() + 1) / 2
        c = a.shape[1]
        g = _gaussian(window).to(a.device)
        kernel = (g[:, None] * g[None, :]).expand(c, 1, window, window).contiguous()

        def blur(x: torch.Tensor) -> torch.Tensor:
            return F.conv2d(x, kernel, groups=c)

        mu_a, mu_b = blur(a), blur(b)
        var_a = blur(a * a) - mu_a * mu_a
        var_b = blur(b * b) - mu_b * mu_b
        cov = blur(a * b) - mu_a * mu_b
        c1, c2 = 0.01 ** 2, 0.03 ** 2
        ssim = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
            (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2))
        return 1 - ssim.mean()


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean 1 - cos between rows of ``a`` and ``b``."""
    return (1 - F.cosine_similarity(a.float(), b.float(), dim=1)).mean()


class PatchDiscriminator(nn.Module):
    """A small PatchGAN: three stride-2 4x4 convs (instance norm) and a 1-channel patch map."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, width * 2, 4, 2, 1), nn.InstanceNorm2d(width * 2, affine=True),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width * 2, width * 4, 4, 2, 1), nn.InstanceNorm2d(width * 4, affine=True),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width * 4, 1, 3, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def hinge_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return F.relu(1 - real.float()).mean() + F.relu(1 + fake.float()).mean()


def hinge_g(fake: torch.Tensor) -> torch.Tensor:
    return -fake.float().mean()


class Perceptual(nn.Module):
    """L1 between VGG-16 relu3_3 features, from a local torchvision VGG-16 state dict.

    Nothing is downloaded: the file must exist (e.g. torchvision's ``vgg16-397923af.pth``).
    Only the ``features.0`` .. ``features.15`` entries are read.
    """

    def __init__(self, weights: str | Path) -> None:
        super().__init__()
        from torchvision.models import vgg16

        path = Path(weights).expanduser()
        if not path.is_file():
            raise ModelError(f"VGG-16 weights for the perceptual loss not found at {path}; set "
                             "losses.perceptual_weights to a local file or weight it 0.")
        layers = vgg16(weights=None).features[:16]
        from meerbench.models.weights import safe_torch_load

        state = safe_torch_load(path, "cpu", "set losses.perceptual_weights to torchvision's "
                                             "VGG-16 state dict, or weight the loss 0.")
        layers.load_state_dict({k[len("features."):]: v for k, v in state.items()
                                if k.startswith("features.") and
                                int(k.split(".")[1]) < 16}, strict=True)
        self.layers = layers.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        def feats(x: torch.Tensor) -> torch.Tensor:
            return self.layers(((x.float() + 1) / 2 - self.mean) / self.std)

        return (feats(a) - feats(b)).abs().mean()
