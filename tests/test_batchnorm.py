"""Batch-norm recalibration (stabkit.batchnorm): exact statistics, the model untouched, clear errors."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from stabkit.batchnorm import batchnorm_layers, has_batchnorm, recalibrate_batchnorm
from stabkit.stability import shuffle_channels


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 5, 3, padding=1), nn.BatchNorm2d(5), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3))


def test_first_layer_statistics_are_those_of_its_input():
    net = _net()
    x = torch.randn(37, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 + 0.5
    new = recalibrate_batchnorm(net, x, batch_size=10)  # uneven last batch on purpose
    with torch.no_grad():
        h = net[0](x).double()
    mean = h.mean(dim=(0, 2, 3))
    var = h.permute(1, 0, 2, 3).reshape(4, -1).var(dim=1, unbiased=True)
    torch.testing.assert_close(new[1].running_mean.double(), mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(new[1].running_var.double(), var, rtol=1e-5, atol=1e-6)


def test_second_layer_sees_its_input_as_in_training():
    net = _net()
    x = torch.randn(40, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    new = recalibrate_batchnorm(net, x, batch_size=20)
    # In training mode the second conv's input is the first layer normalised with each batch's own statistics.
    net.train()
    with torch.no_grad():
        h = torch.cat([net[3](net[2](net[1](net[0](b)))) for b in x.split(20)]).double()
    torch.testing.assert_close(new[4].running_mean.double(), h.mean(dim=(0, 2, 3)), rtol=1e-5, atol=1e-6)


def test_model_is_not_modified_and_copy_is_in_eval_mode():
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    new = recalibrate_batchnorm(net, torch.randn(16, 3, 8, 8), batch_size=8)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not new.training
    assert int(new[1].num_batches_tracked) == int(net[1].num_batches_tracked)
    assert not torch.equal(new[1].running_mean, net[1].running_mean)
    assert new[1].momentum == net[1].momentum


def test_recalibration_repairs_a_shuffled_network_scale():
    """A mode-2 shuffle permutes output channels: the old running statistics no longer match; recalibrated
    ones normalise each channel of the first batch-norm layer to mean 0 and variance 1 again."""
    net = _net()
    x = torch.randn(64, 3, 8, 8, generator=torch.Generator().manual_seed(3)) + 1.0
    calibrated = recalibrate_batchnorm(net, x)
    shuffled = shuffle_channels(calibrated, 2, torch.Generator().manual_seed(0))
    fixed = recalibrate_batchnorm(shuffled, x)
    with torch.no_grad():
        out_fixed = fixed[1](fixed[0](x)).double()
    torch.testing.assert_close(out_fixed.mean(dim=(0, 2, 3)), torch.zeros(4, dtype=torch.float64), atol=1e-4,
                               rtol=0)
    assert has_batchnorm(net) and [n for n, _ in batchnorm_layers(net)] == ["1", "4"]


def test_network_without_batchnorm_is_copied_unchanged():
    net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU())
    new = recalibrate_batchnorm(net, torch.randn(4, 3, 8, 8))
    assert not has_batchnorm(net)
    assert torch.equal(new[0].weight, net[0].weight) and new is not net


@pytest.mark.parametrize("kwargs, match", [
    (dict(images=torch.randn(1, 3, 8, 8)), "images must be a tensor"),
    (dict(images=[1, 2]), "images must be a tensor"),
    (dict(images=torch.randn(4, 3, 8, 8), batch_size=1), "batch_size"),
])
def test_bad_input_names_the_parameter(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        recalibrate_batchnorm(_net(), **kwargs)
    with pytest.raises(TypeError, match="model must be"):
        recalibrate_batchnorm("net", torch.randn(4, 3, 8, 8))
