"""Tests of stabkit.nets (METHODS.md section 5 and the 1-D CNN of section 4)."""
import math

import pytest
import torch
from torch import nn
from torch.fx import symbolic_trace

from stabkit import nets

IMAGE_NETS = [n for n in nets.NAMES if n != "CNN1D"]
EXPECTED = (["VGG11", "VGG11bn", "VGG13", "VGG13bn", "VGG16", "VGG16bn", "VGG19", "VGG19bn",
             "ResNet18", "ResNet34", "ResNet50", "AlexNet", "LeNet", "EfficientNetB0",
             "DenseNetL2", "DenseNetL4", "DenseNetL6", "CNN1D"])


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_names_are_the_papers():
    assert sorted(nets.NAMES) == sorted(EXPECTED)


@pytest.mark.parametrize("name", IMAGE_NETS)
def test_image_net_shapes_and_trace(name):
    torch.manual_seed(0)
    m = nets.build(name, width_factor=0.25).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        y = m(x)
    assert y.shape == (2, 10)
    assert torch.isfinite(y).all()
    assert m.input_shape == (3, 32, 32) and m.name == name
    gm = symbolic_trace(m)
    with torch.no_grad():
        torch.testing.assert_close(gm(x), y)
    # 1-channel 28x28 scale-detection input, one output unit for the hinge loss
    m1 = nets.build(name, in_channels=1, num_classes=1, width_factor=0.25, input_size=28).eval()
    x1 = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        y1 = m1(x1)
    assert y1.shape == (3, 1)
    with torch.no_grad():
        torch.testing.assert_close(symbolic_trace(m1)(x1), y1)


def test_cnn1d_shapes_trace_and_function():
    torch.manual_seed(0)
    m = nets.build("CNN1D", in_channels=1, num_classes=1, width=16)  # paper: F=2, s=2, 7 layers, L=128
    x = torch.randn(4, 1, 128)
    y = m(x)
    assert y.shape == (4, 1) and m.input_shape == (1, 128)
    torch.testing.assert_close(symbolic_trace(m)(x), y)
    assert sum(isinstance(k, nn.Conv1d) for k in m.modules()) == 7
    # the specified function, written out: circular pad, conv / sqrt(fan_in), sqrt(F) relu, GAP, W / H
    m = nets.build("CNN1D", in_channels=1, num_classes=1, filter_size=3, stride=1, depth=3, H=5, L=16)
    x = torch.randn(4, 1, 16)
    h = x
    convs = [k for k in m.modules() if isinstance(k, nn.Conv1d)]
    for conv in convs:
        hp = torch.nn.functional.pad(h, (1, 1), mode="circular")
        h = math.sqrt(3) * torch.relu(torch.nn.functional.conv1d(hp, conv.weight) / math.sqrt(conv.in_channels * 3))
    expected = h.mean(-1) @ m.readout.weight.T / 5
    torch.testing.assert_close(m(x), expected)
    # N(0, 1) weights
    big = nets.build("CNN1D", width=200, depth=2)
    w = big.features.conv2.weight
    assert abs(w.std().item() - 1) < 0.02 and abs(w.mean().item()) < 0.02


def test_unknown_name_lists_names():
    with pytest.raises(ValueError) as e:
        nets.build("VGG12")
    for n in nets.NAMES:
        assert n in str(e.value)
    with pytest.raises(ValueError, match="NAMES"):
        nets.complexity("ResNet19")


def test_bad_options_are_clear():
    with pytest.raises(ValueError, match="unknown option.*inputsize"):
        nets.build("VGG11", inputsize=28)
    with pytest.raises(ValueError, match="width_factor"):
        nets.build("VGG11", width_factor=0)
    with pytest.raises(ValueError, match="input_size"):
        nets.build("VGG11", input_size=64)
    with pytest.raises(ValueError, match="num_classes"):
        nets.build("LeNet", num_classes=0)


def test_names_are_case_insensitive():
    assert nets.build("vgg11BN", width_factor=0.125).name == "VGG11bn"


@pytest.mark.parametrize("name", nets.NAMES)
def test_width_factor_changes_parameters(name):
    small = nets.build(name, width_factor=0.25)
    larger = nets.build(name, width_factor=0.5)
    assert _params(small) < _params(larger)


def test_architecture_details():
    # batch norm only in the bn variants
    assert any(isinstance(k, nn.BatchNorm2d) for k in nets.build("VGG13bn", width_factor=0.25).modules())
    assert not any(isinstance(k, nn.BatchNorm2d) for k in nets.build("VGG13", width_factor=0.25).modules())
    # conv counts of the VGG tables: 8, 10, 13, 16 (+ one linear)
    for depth, n_conv in ((11, 8), (13, 10), (16, 13), (19, 16)):
        m = nets.build(f"VGG{depth}", width_factor=0.125)
        assert sum(isinstance(k, nn.Conv2d) for k in m.modules()) == n_conv
        assert sum(isinstance(k, nn.Linear) for k in m.modules()) == 1
    # LeNet: 16*5*5 at 32x32, 16*4*4 at 28x28 (unpadded); VGG/AlexNet zero-pad 28 -> 32
    assert nets.build("LeNet").classifier.fc1.in_features == 400
    assert nets.build("LeNet", in_channels=1, input_size=28).classifier.fc1.in_features == 256
    vgg28 = nets.build("VGG11", in_channels=1, input_size=28, width_factor=0.25)
    assert isinstance(vgg28.features.pad, nn.ZeroPad2d)
    assert nets.build("AlexNet").classifier.fc1.in_features == 1024
    # ResNet50 uses bottlenecks with expansion 4: final width 2048
    assert nets.build("ResNet50").linear.in_features == 2048
    # FCN hidden layers: 1/3/5 of width 64 + a bias-free readout
    for n_layers in (2, 4, 6):
        m = nets.build(f"DenseNetL{n_layers}")
        lins = [k for k in m.modules() if isinstance(k, nn.Linear)]
        assert len(lins) == n_layers
        assert [k.out_features for k in lins[:-1]] == [64] * (n_layers - 1)
        assert lins[-1].bias is None and all(k.bias is not None for k in lins[:-1])


def test_fcn_init_and_scaling():
    torch.manual_seed(0)
    m = nets.build("DenseNetL4")
    lins = [k for k in m.modules() if isinstance(k, nn.Linear)]
    w = torch.cat([k.weight.flatten() for k in lins])
    assert abs(w.std().item() - 1) < 0.01 and abs(w.mean().item()) < 0.01
    b = torch.cat([k.bias for k in lins[:-1]])
    assert abs(b.std().item() - 1) < 0.25
    x = torch.randn(5, 3, 32, 32)
    h = x.flatten(1)
    for k in lins[:-1]:
        h = torch.relu(h @ k.weight.T / math.sqrt(k.in_features) + k.bias)
    expected = h @ lins[-1].weight.T / lins[-1].in_features
    torch.testing.assert_close(m(x), expected, rtol=1e-4, atol=1e-5)


def test_complexity_hand_count():
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1, groups=4),
                          nn.Flatten(), nn.Linear(4 * 5 * 5, 3))
    c = nets.complexity(model, in_channels=2, input_size=5)
    # conv: 25 positions * 4 outputs * (2 * 9); depthwise: 25 * 4 * (1 * 9); linear: 100 * 3
    assert c == {"params": (4 * 2 * 9 + 4) + (4 * 9 + 4) + (100 * 3 + 3),
                 "macs": 25 * 4 * 18 + 25 * 4 * 9 + 300}
    # LeNet at 32x32: conv1 6*28*28*75, conv2 16*10*10*150, FCs 400*120 + 120*84 + 84*10
    assert nets.complexity("LeNet")["macs"] == 6 * 784 * 75 + 16 * 100 * 150 + 400 * 120 + 120 * 84 + 84 * 10


def test_model_table():
    t = nets.model_table()
    assert list(t["name"]) == list(nets.NAMES)
    assert (t["params"] > 0).all() and (t["macs"] > 0).all()
    row = t.set_index("name")
    # well-known parameter counts of the CIFAR variants
    assert row.loc["ResNet18", "params"] == 11_173_962
    assert row.loc["VGG16bn", "params"] == 14_728_266
    assert row.loc["LeNet", "params"] == 62_006
    assert row.loc["VGG11", "macs"] == row.loc["VGG11bn", "macs"]
