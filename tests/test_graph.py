"""Tests of stabkit.graph: tracing, the layer interpreter, eval_mode, model_device, strict_float32."""
import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

from stabkit.graph import (LayerInterpreter, eval_mode, is_inplace_relu, is_reshape, layer_name, layer_nodes,
                           model_device, node_kind, on_depth_axis, output_node, resolve_device, strict_float32,
                           trace)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True))
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        h = F.max_pool2d(self.features(x), 2)
        return self.fc(self.drop(h.view(h.size(0), -1)))


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture()
def net():
    torch.manual_seed(0)
    m = Net().double()
    with torch.no_grad():
        m.features[1].running_mean.uniform_(-0.5, 0.5, generator=gen(1))
        m.features[1].running_var.uniform_(0.5, 2.0, generator=gen(2))
    return m


def test_trace_names_as_torchvision_and_shares_parameters(net):
    from torchvision.models.feature_extraction import get_graph_node_names

    net.train()
    gm = trace(net)
    assert net.training and all(m.training for m in net.modules())  # traced in eval mode, flags restored
    assert isinstance(gm, fx.GraphModule)
    names = [layer_name(n) for n in layer_nodes(gm)]
    assert names == get_graph_node_names(net)[1][1:]
    assert gm.get_submodule("features.0") is net.features[0]  # no copy
    kinds = {layer_name(n): node_kind(n, gm) for n in layer_nodes(gm)}
    assert kinds["features.0"] == "Conv2d" and kinds["max_pool2d"] == "max_pool2d" and kinds["view"] == "view"
    assert [layer_name(n) for n in layer_nodes(gm) if is_reshape(n, gm)] == ["view"]
    assert [layer_name(n) for n in layer_nodes(gm) if not on_depth_axis(n, gm)] == ["view"]
    flat = trace(nn.Flatten())
    assert is_reshape(output_node(flat), flat) and on_depth_axis(output_node(flat), flat)  # the output counts
    assert [layer_name(n) for n in layer_nodes(gm) if is_inplace_relu(n, gm)] == ["features.2"]
    assert layer_name(output_node(gm)) == "fc"
    with pytest.raises(ValueError, match="traceable"):
        trace(DataDependent())
    with pytest.raises(TypeError, match="model"):
        trace("net")


class DataDependent(nn.Module):
    def forward(self, x):
        return x if x.sum() > 0 else -x


def test_interpreter_matches_forward_and_sees_true_values(net):
    net.eval()
    x = torch.randn(5, 3, 8, 8, generator=gen(0), dtype=torch.float64)
    gm = trace(net)
    seen = {}
    out = LayerInterpreter(gm, lambda node, value: seen.__setitem__(layer_name(node), value.clone()
                                                                     if isinstance(value, torch.Tensor) else value)
                           ).run(x)
    with torch.no_grad():
        torch.testing.assert_close(out, net(x), rtol=0, atol=0)
        conv = net.features[0](x)
        bn = net.features[1](conv)
    assert set(seen) == {layer_name(n) for n in layer_nodes(gm)}
    torch.testing.assert_close(seen["features.1"], bn, rtol=0, atol=0)  # before the in-place ReLU
    assert (seen["features.1"] < 0).any() and seen["size"] == 5
    # hook restricted to some nodes, and the original code's in-place convention
    seen.clear()
    nodes = [n for n in layer_nodes(gm) if layer_name(n) in ("features.1", "fc")]
    LayerInterpreter(gm, lambda node, value: seen.__setitem__(layer_name(node), value.clone()), nodes=nodes,
                     inplace_relu=True).run(x)
    assert set(seen) == {"features.1", "fc"}
    torch.testing.assert_close(seen["features.1"], F.relu(bn), rtol=0, atol=0)


def test_interpreter_frees_values_after_last_use(net):
    net.eval()
    gm = trace(net)
    live = []
    interp = LayerInterpreter(gm)
    interp.hook = lambda node, value: live.append(len(interp.env))
    interp.run(torch.randn(2, 3, 8, 8, dtype=torch.float64))
    assert max(live) <= 3  # a chain: only the current input (and the batch size) are held
    assert interp.garbage_collect_values


def test_interpreter_batch_stats_per_part_and_float64_nodes(net):
    x = torch.randn(6, 3, 8, 8, generator=gen(0), dtype=torch.float64)
    gm = trace(net)
    bn_node = next(n for n in layer_nodes(gm) if layer_name(n) == "features.1")
    seen = {}
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with eval_mode(net):
        LayerInterpreter(gm, lambda n, v: seen.__setitem__(n, v.clone()), nodes=[bn_node], batch_stats_parts=2).run(x)
    conv = net.features[0](x).detach()
    want = torch.cat([F.batch_norm(c, None, None, net.features[1].weight, net.features[1].bias, True, 0.0,
                                   net.features[1].eps) for c in conv.chunk(2)])
    torch.testing.assert_close(seen[bn_node], want.detach(), rtol=0, atol=0)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    # float64 nodes: a float32 model computes them in float64
    m32 = Net().float().eval()
    gm32 = trace(m32)
    fc = output_node(gm32)
    out = LayerInterpreter(gm32, float64_nodes=[fc]).run(x.float())
    assert out.dtype == torch.float64 and m32.fc.weight.dtype == torch.float32
    with pytest.raises(ValueError, match="single required input"):
        LayerInterpreter(trace(TwoInputs())).run(x)


class TwoInputs(nn.Module):
    def forward(self, x, y):
        return x + y


def test_eval_mode_restores_every_flag_and_batch_stats(net):
    net.train()
    net.drop.eval()  # mixed modes come back exactly
    flags = [m.training for m in net.modules()]
    x = torch.randn(6, 3, 8, 8, generator=gen(0), dtype=torch.float64)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with eval_mode(net) as m:
        assert m is net and not any(mod.training for mod in net.modules())
    assert [m.training for m in net.modules()] == flags
    bn = net.features[1]
    with eval_mode(net, batch_stats=True), torch.no_grad():
        assert bn.training and not net.drop.training and not net.features[0].training
        got = net.features[1](net.features[0](x))
    assert [m.training for m in net.modules()] == flags and bn.track_running_stats
    want = F.batch_norm(net.features[0](x), None, None, bn.weight, bn.bias, True, 0.0, bn.eps)
    torch.testing.assert_close(got, want.detach(), rtol=0, atol=0)
    for k, v in net.state_dict().items():  # running statistics untouched, num_batches_tracked too
        assert torch.equal(v, before[k]), k
    with pytest.raises(RuntimeError, match="boom"), eval_mode(net):
        raise RuntimeError("boom")
    assert [m.training for m in net.modules()] == flags


def test_model_device():
    assert model_device(nn.Linear(2, 2)) == torch.device("cpu")
    assert model_device(nn.ReLU()) is None
    assert model_device(nn.ReLU(), default="cpu") == torch.device("cpu")
    bn = nn.BatchNorm1d(2, affine=False)  # buffers only
    assert model_device(bn) == torch.device("cpu")


def test_strict_float32_sets_and_restores_flags():
    b = torch.backends
    saved = (b.cuda.matmul.fp32_precision, b.cudnn.conv.fp32_precision)
    try:
        b.cudnn.conv.fp32_precision = "tf32"
        with strict_float32():
            assert (b.cuda.matmul.fp32_precision, b.cudnn.conv.fp32_precision) == ("ieee", "ieee")
        assert b.cudnn.conv.fp32_precision == "tf32"
        with strict_float32(False):
            assert b.cudnn.conv.fp32_precision == "tf32"
        with pytest.raises(RuntimeError, match="boom"), strict_float32():
            raise RuntimeError("boom")
        assert b.cudnn.conv.fp32_precision == "tf32"
    finally:
        b.cuda.matmul.fp32_precision, b.cudnn.conv.fp32_precision = saved


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="where must be one of"):
        resolve_device("gpu", name="where")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device='cuda:1'.*not available"):
            resolve_device("cuda:1")
