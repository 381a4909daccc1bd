"""Smoke test of the benchmark suite (``make bench``) at toy size: runs in a few seconds."""
import torch

from benchmarks import __main__ as bench_main
from benchmarks import bench_measure, common, naive


def test_quick_diffeo_case_writes_results(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "CIFAR_TAR", tmp_path / "absent.tar.gz")  # random images, no archive scan
    out = tmp_path / "RESULTS.md"
    assert bench_main.main(["--quick", "--only", "diffeo", "--output", str(out)]) == 0
    text = out.read_text()
    assert "## Machine" in text and "diffeo_batch 16x3x32x32" in text and "naive per-image loop" in text
    assert "MISMATCH" not in text


def test_naive_measure_agrees_with_stabkit():
    from stabkit.nets import build
    from stabkit.probes import draw_probes
    from stabkit.stability import measure

    torch.manual_seed(0)
    model = build("lenet").eval()
    probes = draw_probes(torch.randn(6, 3, 32, 32), seed=0)
    ref = naive.measure_float64(model, *probes)
    table = measure(model, probes)
    assert bench_measure.max_rel_diff(table, ref) < 1e-9


def test_naive_diffeo_loop_matches_diffeo_batch():
    from stabkit.transforms import diffeo_batch

    x = common.random_images(3, 16)
    a = naive.diffeo_loop(x, generator=torch.Generator().manual_seed(3))
    b = diffeo_batch(x, generator=torch.Generator().manual_seed(3))
    assert (a - b).abs().max() < 1e-5 and (b - x).abs().max() > 1e-3


def test_gpu_flag_without_cuda_says_so(capsys):
    if torch.cuda.is_available():
        return
    assert bench_main.main(["--gpu"]) == 2
    assert "cuda" in capsys.readouterr().err.lower()


def test_gpu_case_code_runs_on_cpu_at_toy_size():
    """The GPU cases only run on CUDA machines; exercise their training code on the CPU here."""
    from benchmarks import bench_gpu

    train, test, source = bench_gpu.cifar_full(quick=True, random=True)
    assert source == "random" and train[0].shape == (512, 32, 32, 3)
    train = (train[0][:128], train[1][:128])
    test = (test[0][:64], test[1][:64])
    loss = bench_gpu._device_epoch("lenet", train, test, "cpu", fast=True)
    loaders = (naive.pil_loader(*train), naive.pil_loader(*test, augment=False, shuffle=False))
    loss_b = bench_gpu._loader_epoch("lenet", loaders, "cpu", fast=True)
    assert 1.5 < loss < 3.5 and 1.5 < loss_b < 3.5


def test_quick_step_case_times_float32_and_bf16(tmp_path):
    out = tmp_path / "RESULTS.md"
    assert bench_main.main(["--quick", "--only", "step", "--output", str(out)]) == 0
    text = out.read_text()
    for variant in ("| float32 + channels_last |", "| bf16 + channels_last |", "| bf16 |", "| float32 |"):
        assert variant in text
    assert "train step LeNet, batch 32, 1 thread" in text and "CHECK FAILED" not in text


def test_quick_precision_case_compares_float32_and_bf16(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "CIFAR_TAR", tmp_path / "absent.tar.gz")
    out = tmp_path / "RESULTS.md"
    assert bench_main.main(["--quick", "--only", "precision", "--output", str(out)]) == 0
    text = out.read_text()
    assert "| bf16 |" in text and "| float32 |" in text and "test error (best / last)" in text


def test_a_partial_run_keeps_the_other_cases_records(tmp_path, monkeypatch):
    """``--only step`` after ``--only diffeo``: RESULTS.md shows both, each with when it ran."""
    import json

    monkeypatch.setattr(common, "CIFAR_TAR", tmp_path / "absent.tar.gz")
    out = tmp_path / "RESULTS.md"
    assert bench_main.main(["--quick", "--only", "diffeo", "--output", str(out)]) == 0
    first = json.loads((tmp_path / "RESULTS.json").read_text())
    assert set(first) == {"diffeo"} and first["diffeo"]["results"][0]["variant"]
    assert bench_main.main(["--quick", "--only", "step", "--output", str(out)]) == 0
    text = out.read_text()
    assert "diffeo_batch 16x3x32x32" in text and "train step LeNet, batch 32" in text
    assert "| diffeo | " in text and "| step | " in text  # the when-and-where table, a row per case
    both = json.loads((tmp_path / "RESULTS.json").read_text())
    assert set(both) == {"diffeo", "step"} and both["diffeo"] == first["diffeo"]
    # a case measured again replaces its own record only
    assert bench_main.main(["--quick", "--only", "diffeo", "--output", str(out)]) == 0
    again = json.loads((tmp_path / "RESULTS.json").read_text())
    assert again["step"] == both["step"] and again["diffeo"]["date"] >= first["diffeo"]["date"]


def test_a_damaged_records_file_is_named(tmp_path):
    import pytest

    from benchmarks import records

    bad = tmp_path / "RESULTS.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="RESULTS.json"):
        records.load(bad)
    bad.write_text('{"step": [1, 2]}')
    with pytest.raises(ValueError, match="not a benchmark records file"):
        records.load(bad)


def test_the_measure_case_compares_like_with_like_on_a_net_with_inplace_relus():
    """VGG's ReLU(inplace=True) overwrites the conv outputs the naive pipeline stores: the benchmark's
    stabkit variants measure with the same convention (with the default, conv1's G_f differed by 29 %)."""
    from stabkit.nets import build
    from stabkit.probes import draw_probes

    torch.manual_seed(0)
    model = build("vgg11", width_factor=0.125).eval()
    probes = draw_probes(torch.randn(4, 3, 32, 32), seed=0)
    ref = naive.measure_float64(model, *probes)
    table = bench_measure.VARIANTS["stabkit-float64"](model, probes)
    assert bench_measure.max_rel_diff(table, ref) < 1e-9
