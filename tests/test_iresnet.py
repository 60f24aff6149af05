"""IResNet and MobileFaceNet: state-dict layout of insightface arcface_torch, sizes, options."""

from __future__ import annotations

import pytest
import torch

from meerbench.models.iresnet import iresnet
from meerbench.models.mobilefacenet import mobilefacenet

# Keys and shapes of arcface_torch's iresnet50 (recognition/arcface_torch/backbones/iresnet.py).
R50_KEYS = {
    "conv1.weight": (64, 3, 3, 3),
    "bn1.running_var": (64,),
    "prelu.weight": (64,),
    "layer1.0.bn1.weight": (64,),
    "layer1.0.conv1.weight": (64, 64, 3, 3),
    "layer1.0.bn2.bias": (64,),
    "layer1.0.prelu.weight": (64,),
    "layer1.0.conv2.weight": (64, 64, 3, 3),
    "layer1.0.bn3.running_mean": (64,),
    "layer1.0.downsample.0.weight": (64, 64, 1, 1),
    "layer1.0.downsample.1.num_batches_tracked": (),
    "layer2.0.downsample.0.weight": (128, 64, 1, 1),
    "layer3.13.conv2.weight": (256, 256, 3, 3),
    "layer4.2.bn3.weight": (512,),
    "bn2.weight": (512,),
    "fc.weight": (512, 512 * 7 * 7),
    "fc.bias": (512,),
    "features.weight": (512,),
    "features.running_var": (512,),
}

# Keys and shapes of arcface_torch's get_mbf (backbones/mobilefacenet.py).
MBF_KEYS = {
    "layers.0.layers.0.weight": (128, 3, 3, 3),
    "layers.0.layers.2.weight": (128,),
    "layers.1.layers.0.weight": (128, 2, 3, 3),
    "layers.2.layers.1.layers.0.weight": (128, 1, 3, 3),
    "layers.3.layers.0.layers.0.layers.0.weight": (128, 128, 1, 1),
    "layers.4.layers.2.layers.0.weight": (256, 256, 1, 1),
    "layers.7.layers.1.layers.2.layers.1.running_var": (256,),
    "conv_sep.layers.0.weight": (512, 256, 1, 1),
    "features.layers.0.layers.0.weight": (512, 1, 7, 7),
    "features.layers.2.weight": (512, 512),
    "features.layers.3.bias": (512,),
}


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_iresnet50_state_dict_matches_arcface_torch():
    with torch.device("meta"):
        state = iresnet(50).state_dict()
    for key, shape in R50_KEYS.items():
        assert tuple(state[key].shape) == shape, key
    assert "layer3.14.bn1.weight" not in state and "dropout.p" not in state
    assert len(state) == 475


@pytest.mark.parametrize("depth, params, keys", [
    (18, 24_025_600, 187), (34, 34_139_328, 331), (50, 43_590_848, 475),
    (100, 65_156_160, 925), (200, 118_833_920, 1807),
])
def test_iresnet_sizes(depth, params, keys):
    with torch.device("meta"):
        net = iresnet(depth)
    assert n_params(net) == params
    assert len(net.state_dict()) == keys


def test_iresnet50_forward_gives_512d():
    net = iresnet(50).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, 112, 112))
    assert out.shape == (2, 512)


@pytest.mark.parametrize("size", [56, 64])
def test_narrow_small_iresnet18(size):
    net = iresnet(18, width=0.5, input_size=size, embedding_dim=128)
    assert net.conv1.out_channels == 32 and net.bn2.num_features == 256
    assert net.fc.in_features == 256 * 4 * 4  # 56 and 64 both end at 4x4
    assert net.eval()(torch.randn(2, 3, size, size)).shape == (2, 128)


def test_iresnet_rejects_unknown_depth():
    with pytest.raises(ValueError, match="depth"):
        iresnet(42)


def test_mobilefacenet_matches_arcface_torch_mbf():
    net = mobilefacenet()
    state = net.state_dict()
    for key, shape in MBF_KEYS.items():
        assert tuple(state[key].shape) == shape, key
    assert len(state) == 333 and n_params(net) == 2_059_520
    assert net.eval()(torch.randn(2, 3, 112, 112)).shape == (2, 512)
    with torch.device("meta"):
        large = mobilefacenet(large=True)
    assert len(large.state_dict()) == 606 and n_params(large) == 6_314_880
