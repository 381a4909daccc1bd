"""Tests of stabkit.nets (book/methods.md, "Networks"; the 1-D CNN of the appendix)."""
import math
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.fx import symbolic_trace

from stabkit import nets

PAPER = (["VGG11", "VGG11bn", "VGG13", "VGG13bn", "VGG16", "VGG16bn", "VGG19", "VGG19bn",
          "ResNet18", "ResNet34", "ResNet50", "AlexNet", "LeNet", "EfficientNetB0",
          "DenseNetL2", "DenseNetL4", "DenseNetL6", "CNN1D"])
LOWRES = ["LowRes-ResNet18", "LowRes-ResNet34", "LowRes-ResNet50", "LowRes-EfficientNetB0"]
IMAGE_NETS = [n for n in nets.list_models() if nets.model_info(n)["kind"] != "cnn1d"]


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_names_are_the_papers_plus_lowres():
    assert nets.list_models() == PAPER + LOWRES  # registry order: families, then the derived LowRes-* nets
    assert nets.list_models(kind="cnn1d") == ["CNN1D"]
    assert nets.list_models(kind="fcn") == ["DenseNetL2", "DenseNetL4", "DenseNetL6"]
    assert nets.list_models(family="ResNet") == ["ResNet18", "ResNet34", "ResNet50"] + LOWRES[:3]
    assert not hasattr(nets, "NAMES")  # list_models() is the one API


def test_registry_complete_on_import():
    """LowRes-* nets build right after ``import stabkit.nets`` (they used to need stabkit.probes first)."""
    code = ("import sys, stabkit.nets as n; m = n.build('LowRes-ResNet18', width_factor=0.125); "
            "assert type(m).__name__ == 'AtResolution', m; "
            "assert not any(k in sys.modules for k in ('stabkit.probes', 'stabkit.robustness', 'stabkit.runs'))")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_model_info_is_metadata_not_module_attributes():
    info = nets.model_info("vgg11BN")
    assert info["name"] == "VGG11bn" and info["family"] == "VGG" and info["kind"] == "cnn"
    assert info["batch_norm"] and info["max_input_size"] == 32 and not info["any_input_size"]
    assert info["options"] == {"input_size": 32} and info["default_input"] == (32, 32)
    assert nets.model_info("ResNet50")["any_input_size"] and nets.model_info("VGG13")["batch_norm"] is False
    assert nets.model_info("DenseNetL4")["kind"] == "fcn"
    assert nets.model_info("CNN1D")["default_input"] == (128,) and nets.model_info("CNN1D")["kind"] == "cnn1d"
    low = nets.model_info("LowRes-EfficientNetB0")
    assert low["base"] == "EfficientNetB0" and low["family"] == "EfficientNet" and low["options"]["source_size"] == 16
    info["options"]["input_size"] = 99  # a copy: the registry is not changed
    assert nets.model_info("VGG11bn")["options"] == {"input_size": 32}
    m = nets.build("LeNet", width_factor=0.5)
    assert not hasattr(m, "name") and not hasattr(m, "input_shape")  # nothing patched onto the module
    with pytest.raises(ValueError, match="list_models"):
        nets.model_info("VGG12")


def test_the_kind_fcn_agrees_with_the_torch_free_protocol_rule():
    """Training defaults (Adam for FCNs) are chosen from the name while a sweep loads without torch; the
    registry refuses a registration that would disagree with that rule."""
    from stabkit.protocol import is_fully_connected
    for name in nets.list_models():
        assert is_fully_connected(name) == (nets.model_info(name)["kind"] == "fcn"), name
    with pytest.raises(ValueError, match="kind 'fcn' of network 'MyMLP' disagrees"):
        nets.register("MyMLP", kind="fcn")
    with pytest.raises(ValueError, match="kind 'cnn' of network 'DenseNetL9' disagrees"):
        nets.register("DenseNetL9")
    assert "MyMLP" not in nets.list_models() and "DenseNetL9" not in nets.list_models()


@pytest.mark.parametrize("name", IMAGE_NETS)
def test_image_net_shapes_and_trace(name):
    torch.manual_seed(0)
    m = nets.build(name, width_factor=0.25).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        y = m(x)
    assert y.shape == (2, 10)
    assert torch.isfinite(y).all()
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
    assert y.shape == (4, 1) and m.length == 128
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
    for n in nets.list_models():
        assert n in str(e.value)
    with pytest.raises(ValueError, match="list_models"):
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


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_non_finite_width_factor_is_refused(bad):
    with pytest.raises(ValueError, match="width_factor"):  # used to fail inside a builder (OverflowError)
        nets.build("CNN1D", width_factor=bad)
    with pytest.raises(ValueError, match="width_factor"):
        nets.build("VGG11", width_factor=bad)
    with pytest.raises(TypeError, match="width_factor"):
        nets.build("VGG11", width_factor="2")


def test_numpy_integers_are_accepted():
    np = pytest.importorskip("numpy")
    m = nets.build("LeNet", in_channels=np.int64(1), num_classes=np.int32(1), input_size=np.int64(28))
    assert m.classifier.fc1.in_features == 256 and m.classifier.fc3.out_features == 1


def test_names_are_case_insensitive():
    m = nets.build("vgg11BN", width_factor=0.125)
    assert any(isinstance(k, nn.BatchNorm2d) for k in m.modules())
    assert nets.canonical_name("lowres_resnet18") == "LowRes-ResNet18"


@pytest.mark.parametrize("name", nets.list_models())
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
    # a built module: in_channels from its first convolution, the length of a CNN1D
    assert nets.complexity(nets.build("LeNet", in_channels=1, input_size=28), input_size=28)["macs"] == \
        6 * 576 * 25 + 16 * 64 * 150 + 256 * 120 + 120 * 84 + 84 * 10
    m = nets.build("CNN1D", in_channels=1, num_classes=1, width=4, depth=2, L=8)
    # conv1: 4 positions * 4 out * (1 * 2); conv2: 2 * 4 * (4 * 2); readout 4 * 1
    assert nets.complexity(m)["macs"] == 4 * 4 * 2 + 2 * 4 * 8 + 4
    # LowRes: the inner net at the source size (resampling is not counted)
    assert nets.complexity("LowRes-ResNet18")["macs"] == nets.complexity("ResNet18", input_size=16)["macs"]


def test_model_table():
    t = nets.model_table()
    assert list(t["name"]) == nets.list_models()
    assert list(t.columns) == ["name", "family", "kind", "input", "params", "macs"]
    assert (t["params"] > 0).all() and (t["macs"] > 0).all()
    row = t.set_index("name")
    # well-known parameter counts of the CIFAR variants
    assert row.loc["ResNet18", "params"] == 11_173_962
    assert row.loc["VGG16bn", "params"] == 14_728_266
    assert row.loc["LeNet", "params"] == 62_006
    assert row.loc["VGG11", "macs"] == row.loc["VGG11bn", "macs"]
    assert row.loc["CNN1D", "input"] == "1x128" and row.loc["LeNet", "input"] == "3x32x32"
    # the numbers of the forward hooks this replaced (FlopCounterMode: FLOPs / 2)
    assert row.loc["ResNet18", "macs"] == 555_422_720 and row.loc["LeNet", "macs"] == 651_720
    assert row.loc["EfficientNetB0", "macs"] == 30_331_392


def test_lowres_nets_resample_inside():
    from stabkit.transforms import resize

    torch.manual_seed(0)
    m = nets.build("LowRes-ResNet18", width_factor=0.125, source_size=16).eval()
    assert isinstance(m, nets.AtResolution) and m.source_size == 16
    assert m.resampling() == {"interpolation": "bilinear", "antialias": True, "blur_sigma": 0.0}
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(m(x), m.net(resize(x, 16)), atol=1e-6)
        assert m.net(torch.rand(2, 3, 24, 24)).shape == (2, 10)  # the bare net takes any size
    gm = symbolic_trace(m)  # FX-traceable: the resampling is one leaf node
    assert [n.target.__name__ for n in gm.graph.nodes if n.op == "call_function"][0] == "_resample"
    with torch.no_grad():
        torch.testing.assert_close(gm(x), m(x))
    with pytest.raises(ValueError, match="interpolation"):
        nets.build("LowRes-ResNet18", width_factor=0.125, interpolation="lanczos")
    for bad in (0, 16.5, True):
        with pytest.raises(ValueError, match="source_size"):
            nets.build("LowRes-ResNet18", width_factor=0.125, source_size=bad)
    assert set(nets.VARIABLE_INPUT_NETS) == {n for n in nets.list_models()
                                             if nets.model_info(n)["any_input_size"] and not nets.model_info(n)["base"]}
