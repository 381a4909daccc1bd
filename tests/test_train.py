"""stabkit.train, stabkit.checkpoints and stabkit.precision: paper defaults, the training spec, losses, optimiser groups, schedule,
loop, checkpoints, determinism, no host synchronisation inside an epoch (book/methods.md, "Training")."""
import math
import warnings

import pytest
import torch
from torch import nn

from stabkit import checkpoints as C, train as T
from stabkit.checkpoints import CheckpointFolder
from stabkit.precision import deterministic_mode
from stabkit.train import TrainSpec

#: The metrics' timing columns (wall and CPU seconds): they differ between identical runs.
TIMES = ["seconds", "cpu_seconds"]


def test_defaults_follow_the_paper():
    c = T.defaults("cifar10", "VGG11")
    assert (c["optimizer"], c["lr"], c["momentum"], c["weight_decay"], c["batch_size"]) == ("sgd", 0.1, 0.9, 5e-4, 128)
    assert (c["epochs"], c["schedule"], c["loss"], c["augment"]) == (250, "cosine", "ce", ("crop", "flip"))
    f = T.defaults("cifar10", "DenseNetL4")
    assert (f["optimizer"], f["lr"], f["weight_decay"], f["schedule"]) == ("adam", 0.1, 0.0, "constant")
    s = T.defaults("twopoints", "VGG11bn")
    assert (s["lr"], s["epochs"], s["loss"], s["augment"], s["stop_at_zero_loss"]) == (0.05, 300, "hinge", (), True)
    with pytest.raises(ValueError, match="task"):
        T.defaults("mnist")
    from stabkit.protocol import training_defaults
    for task in T.TASKS:
        for net in ("VGG11", "DenseNetL2"):
            assert T.defaults(task, net) == training_defaults(task, net)  # one table, in stabkit.protocol


def test_train_spec_is_the_paper_s_defaults_with_overrides():
    assert TrainSpec() == TrainSpec.for_task("cifar10", "VGG11")
    s = TrainSpec.for_task("twopoints", "VGG11bn", epochs=7, lr=None)
    assert (s.lr, s.epochs, s.loss, s.stop_at_zero_loss, s.batch_size) == (0.05, 7, "hinge", True, 128)
    assert TrainSpec.for_task("cifar10", "DenseNetL4").optimizer == "adam"
    with pytest.raises(TypeError, match="unknown TrainSpec field.*'lrate'"):
        TrainSpec.for_task("cifar10", lrate=0.1)
    for bad, match in (({"epochs": 0}, "epochs"), ({"optimizer": "rmsprop"}, "optimizer.*sgd"),
                       ({"schedule": "step"}, "schedule"), ({"channels_last": "yes"}, "channels_last"),
                       ({"deterministic": "yes"}, "deterministic")):
        with pytest.raises(ValueError, match=match):
            TrainSpec(**bad)
    with pytest.raises(TypeError, match="spec must be a TrainSpec"):
        T.train(nn.Linear(4, 2), {"train": [], "test": []}, {"epochs": 1})
    with pytest.raises(ValueError, match="loaders must be a mapping with the keys 'train' and 'test'"):
        T.train(nn.Linear(4, 2), ([], []), TrainSpec(epochs=1))


def test_hinge_loss_and_errors():
    out = torch.tensor([[2.0], [0.5], [-0.5], [-3.0]])
    y = torch.tensor([1, 1, 1, 0])  # label 1 -> +1, label 0 -> -1
    loss, err = T.make_loss("hinge")(out, y)
    assert loss.item() == pytest.approx((0 + 0.5 + 1.5 + 0) / 4)
    assert err.item() == 1
    assert T.hinge_loss(out, torch.tensor([1, 1, 1, -1])).item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="one output"):
        T.hinge_loss(torch.zeros(3, 2), torch.zeros(3))
    loss, err = T.make_loss("ce")(torch.tensor([[5.0, 0.0], [5.0, 0.0]]), torch.tensor([0, 1]))
    assert err.item() == 1 and loss.item() > 0
    with pytest.raises(ValueError, match="loss"):
        T.make_loss("mse")


def test_weight_decay_only_on_weights_and_adam_for_fcn():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2, 1))
    opt = T.make_optimizer(model, "sgd", 0.1, 0.9, 5e-4)
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(model[0].weight), id(model[3].weight)}
    assert all(g["momentum"] == 0.9 for g in opt.param_groups)
    assert isinstance(T.make_optimizer(model, "adam", 0.1, 0.0, 0.0), torch.optim.Adam)


def test_cosine_schedule_rises_over_the_last_20_percent():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = T.make_schedule(opt, "cosine", 10)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[4] == pytest.approx(0.05 * (1 + math.cos(math.pi * 4 / 8)))
    assert min(lrs) == pytest.approx(0.0, abs=1e-12) and lrs.index(min(lrs)) == 8
    assert lrs[9] > lrs[8]  # rises again
    sched = T.make_schedule(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.3), "constant", 5)
    assert sched.get_last_lr() == [0.3]


def _blobs(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, 4, generator=g) * 0.3 + (2.0 * y[:, None] - 1.0) * 2.0
    return x, y


def _batches(x, y, bs=32):
    return [(x[i:i + bs], y[i:i + bs]) for i in range(0, len(y), bs)]


def _ld(train, test, **extra):
    return {"train": train, "test": test, **extra}


def test_train_loop_metrics_best_and_zero_loss_stop(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    x, y = _blobs()
    res = T.train(model, _ld(_batches(x, y), _batches(*_blobs(seed=1))),
                  TrainSpec.for_task("twopoints", "lin", epochs=50, lr=0.05), progress=False,
                  checkpoints=CheckpointFolder(tmp_path, "lin", "abc"))
    assert list(res.metrics.columns) == ["epoch", "train_loss", "train_err", "test_loss", "test_err", "lr", "seconds",
                                          "cpu_seconds"]
    assert res.stopped_early and len(res.metrics) < 50  # separable: hinge loss reaches exactly 0
    assert res.metrics.train_loss.iloc[-1] == 0.0 and (res.metrics.train_loss.iloc[:-1] > 0).all()
    assert res.best_test_err == res.metrics.test_err.min()
    sd, meta = C.load_checkpoint(tmp_path / "best.pt", net="lin", config_hash="abc")
    assert meta["kind"] == "best" and meta["epoch"] == res.best_epoch and meta["format"] == C.CHECKPOINT_FORMAT
    assert torch.equal(sd["weight"], res.best_state["weight"])
    sd_last, meta_last = CheckpointFolder(tmp_path, "lin", "abc").load("last")
    assert meta_last["epoch"] == len(res.metrics) and torch.equal(sd_last["weight"], model.weight.detach())


def test_train_is_deterministic_on_cpu():
    def once():
        torch.manual_seed(3)
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 2))
        x, y = _blobs()
        noise = lambda b, g: b + 0.1 * torch.randn(b.shape, generator=g)  # noqa: E731
        return T.train(model, _ld(_batches(x, y), _batches(x, y)), TrainSpec(epochs=3, seed=5), augment_fn=noise,
                       progress=False).metrics.drop(columns=TIMES)
    a, b = once(), once()
    assert a.equals(b)


def test_select_on_extra_test_set():
    torch.manual_seed(0)
    x, y = _blobs()
    res = T.train(nn.Linear(4, 2), _ld(_batches(x, y), _batches(x, y), other=_batches(x, 1 - y)),
                  TrainSpec(epochs=2, select_on="other"), progress=False)
    assert "other_err" in res.metrics and res.best_test_err == res.metrics.test_err[res.best_epoch - 1]
    with pytest.raises(ValueError, match="select_on"):
        T.train(nn.Linear(4, 2), _ld(_batches(x, y), _batches(x, y)), TrainSpec(epochs=1, select_on="nope"),
                progress=False)


def test_corrupted_and_foreign_checkpoints_are_refused(tmp_path):
    sd = nn.Linear(3, 2).state_dict()
    good = C.save_checkpoint(tmp_path / "good.pt", sd, net="LeNet", config_hash="k1", epoch=3)
    assert C.load_checkpoint(good, net="LeNet", config_hash="k1")[1]["epoch"] == 3
    raw = good.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(C.CheckpointError, match="corrupted"):
        C.load_checkpoint(tmp_path / "trunc.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(C.CheckpointError, match="corrupted"):
        C.load_checkpoint(tmp_path / "text.pt")
    torch.save(sd, tmp_path / "foreign.pt")  # a plain state dict from elsewhere
    with pytest.raises(C.CheckpointError, match="not a stabkit checkpoint"):
        C.load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(C.CheckpointError, match="belongs to run"):
        C.load_checkpoint(good, config_hash="other")
    with pytest.raises(C.CheckpointError, match="holds net"):
        C.load_checkpoint(good, net="VGG11")
    with pytest.raises(C.CheckpointError, match="does not exist"):
        C.load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="metadata"):
        C.save_checkpoint(tmp_path / "x.pt", sd, net="a", config_hash="b", bad=[1, 2])
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave no temporary file


def test_fast_mode_is_cuda_only():
    x, y = _blobs()
    with pytest.warns(UserWarning, match="only has an effect on CUDA"):
        res = T.train(nn.Linear(4, 2), _ld(_batches(x, y), _batches(x, y)), TrainSpec(epochs=1, fast=True),
                      progress=False)
    assert len(res.metrics) == 1


def test_cosine_to_zero_ends_at_zero_and_never_rises():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = T.make_schedule(opt, "cosine_to_zero", 10)
    lrs = []
    for _ in range(11):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[5] == pytest.approx(0.05)
    assert all(a >= b for a, b in zip(lrs, lrs[1:])) and lrs[10] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="schedule.*cosine_to_zero"):
        T.make_schedule(opt, "cosine-to-zero", 10)


def test_bf16_precision_autocasts_on_the_cpu_and_is_recorded():
    seen = []

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 2)

        def forward(self, x):
            out = self.lin(x)
            seen.append(out.dtype)
            return out
    x, y = _blobs()
    torch.manual_seed(0)
    res = T.train(Probe(), _ld(_batches(x, y), _batches(x, y)), TrainSpec(epochs=2, precision="bf16"), progress=False)
    assert set(seen) == {torch.bfloat16} and res.mode["precision"] == "bf16"
    seen.clear()
    torch.manual_seed(0)
    ref = T.train(Probe(), _ld(_batches(x, y), _batches(x, y)), TrainSpec(epochs=2), progress=False)
    assert set(seen) == {torch.float32} and ref.mode["precision"] == "float32"
    assert all(v.dtype == torch.float32 for v in res.best_state.values())  # weights stay float32
    assert abs(res.metrics["train_loss"].iloc[-1] - ref.metrics["train_loss"].iloc[-1]) < 0.05
    with pytest.raises(ValueError, match="precision.*bf16"):
        T.train(Probe(), _ld(_batches(x, y), _batches(x, y)), TrainSpec(epochs=1, precision="fp16"), progress=False)


def test_bf16_on_a_cpu_without_native_bf16_warns(monkeypatch):
    x, y = _blobs()
    monkeypatch.setattr(T, "cpu_supports_bf16", lambda: False)
    with pytest.warns(UserWarning, match="without native bfloat16.*float32"):
        T.train(nn.Linear(4, 2), _ld(_batches(x, y), _batches(x, y)), TrainSpec(epochs=1, precision="bf16"),
                progress=False)
    monkeypatch.setattr(T, "cpu_supports_bf16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        T.train(nn.Linear(4, 2), _ld(_batches(x, y), _batches(x, y)), TrainSpec(epochs=1, precision="bf16"),
                progress=False)


def _run(deterministic, tmp_path=None):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 2))
    x, y = _blobs()
    noise = lambda b, g: b + 0.1 * torch.randn(b.shape, generator=g)  # noqa: E731
    return T.train(model, _ld(_batches(x, y), _batches(x, y)), TrainSpec(epochs=3, seed=5, deterministic=deterministic),
                   augment_fn=noise, progress=False,
                   checkpoints=CheckpointFolder(tmp_path, "mlp", "k") if tmp_path else None)


def test_deterministic_switch_is_recorded_and_restores_flags(tmp_path):
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
              torch.backends.cudnn.benchmark)
    fast_res, det_res = _run(False), _run(True, tmp_path)
    assert fast_res.mode["deterministic"] is False and det_res.mode["deterministic"] is True
    assert det_res.mode["nondeterministic_ops"] == [] and det_res.mode["device"] == "cpu"
    assert set(det_res.mode) >= {"fast", "cudnn_benchmark", "tf32_matmul", "tf32_cudnn"}
    # on the CPU the switch changes nothing in the numbers
    assert fast_res.metrics.drop(columns=TIMES).equals(det_res.metrics.drop(columns=TIMES))
    assert all(torch.equal(fast_res.best_state[k], det_res.best_state[k]) for k in fast_res.best_state)
    assert C.load_checkpoint(tmp_path / "best.pt")[1]["deterministic"] is True
    after = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
             torch.backends.cudnn.benchmark)
    assert after == before  # global flags restored
    with pytest.raises(ValueError, match="deterministic"):
        _run("yes")


def test_deterministic_mode_records_ops_without_a_deterministic_kernel():
    with deterministic_mode() as ops:
        assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
        warnings.warn("foo_backward_cuda does not have a deterministic implementation, but you set ...")
        warnings.warn("foo_backward_cuda does not have a deterministic implementation, but you set ...")
    assert ops == ["foo_backward_cuda"]
    assert not torch.are_deterministic_algorithms_enabled()
    with deterministic_mode(False) as ops:
        assert not torch.are_deterministic_algorithms_enabled()
    assert ops == []


def test_one_host_read_per_epoch(monkeypatch):
    """Loss and error sums stay on the device; the loop reads them once per epoch, whatever the batch count."""
    x, y = _blobs(n=192)
    reads = []
    for bs in (8, 64):  # 24 and 3 training batches per epoch
        counter = [0]
        with monkeypatch.context() as mp:
            for name in ("item", "tolist", "__float__", "__int__", "__bool__"):
                def spy(self, *a, _real=getattr(torch.Tensor, name), **k):
                    counter[0] += 1
                    return _real(self, *a, **k)
                mp.setattr(torch.Tensor, name, spy)
            torch.manual_seed(0)
            T.train(nn.Linear(4, 2), _ld(_batches(x, y, bs), _batches(x, y, bs), other=_batches(x, 1 - y, bs)),
                    TrainSpec(epochs=3), progress=False)
        reads.append(counter[0])
    assert reads == [3, 3]  # one read per epoch: train, test and extra sums together


def test_best_state_is_a_cpu_copy_of_the_best_epoch():
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    x, y = _blobs()
    seen = {}
    res = T.train(model, _ld(_batches(x, y), _batches(x, 1 - y)), TrainSpec(epochs=4), progress=False,
                  on_epoch=lambda row: seen.setdefault(row["epoch"], T.cpu_state(model)))
    assert all(v.device.type == "cpu" and v.is_contiguous() for v in res.best_state.values())
    assert all(torch.equal(res.best_state[k], seen[res.best_epoch][k]) for k in res.best_state)
    assert all(torch.equal(res.last_state[k], seen[4][k]) for k in res.last_state)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_no_host_synchronisation_per_batch_on_cuda():
    """The number of host-device synchronisations of a CUDA training run does not grow with the batches."""
    from stabkit import data, nets

    x = torch.randint(0, 256, (512, 3, 32, 32), dtype=torch.uint8)
    y = torch.randint(0, 10, (512,))

    def syncs(batch_size: int) -> int:
        torch.manual_seed(0)
        model = nets.build("LeNet").cuda()
        kw = dict(mean=data.CIFAR10_MEAN, std=data.CIFAR10_STD, device="cuda")
        tr = data.DeviceLoader(x, y, batch_size, augment=True, noise_std=1.0, **kw)
        te = data.DeviceLoader(x[:256], y[:256], batch_size, shuffle=False, **kw)
        T.train(model, _ld(tr, te), TrainSpec(epochs=1), progress=False)  # warm-up (lazy CUDA initialisation)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                T.train(model, _ld(tr, te), TrainSpec(epochs=2), progress=False)
        finally:
            torch.cuda.set_sync_debug_mode(0)
        return sum("synchroniz" in str(m.message) for m in w)

    few, many = syncs(256), syncs(16)  # 2 and 32 training batches per epoch
    assert many == few, (few, many)



def test_channels_last_is_a_memory_order_only():
    """On by default on the CPU (faster there); the same training to rounding; weights come back contiguous."""
    from stabkit.nets import build

    def fit(cl):
        torch.manual_seed(0)
        model = build("VGG11bn", width_factor=0.125)
        g = torch.Generator().manual_seed(1)
        x, y = torch.rand(64, 3, 32, 32, generator=g), torch.randint(0, 10, (64,), generator=g)
        batches = [(x[i:i + 32], y[i:i + 32]) for i in (0, 32)]
        res = T.train(model, _ld(batches, batches), TrainSpec(epochs=2, lr=0.01, channels_last=cl), progress=False)
        return model, res

    m_auto, auto = fit(None)
    _, plain = fit(False)
    assert auto.mode["channels_last"] is True and plain.mode["channels_last"] is False
    assert all(p.is_contiguous() for p in m_auto.parameters())
    assert all(v.is_contiguous() for v in auto.best_state.values())
    for k in plain.best_state:
        torch.testing.assert_close(auto.best_state[k], plain.best_state[k], rtol=1e-4, atol=1e-5)
    assert math.isclose(auto.metrics["train_loss"].iloc[-1], plain.metrics["train_loss"].iloc[-1], rel_tol=1e-5)
    with pytest.raises(ValueError, match="channels_last"):
        fit("yes")


class _Interrupt(Exception):
    pass


def _resumable_fit(root, *, stop_after=None, resume=False, hash_="run1", augment=None):
    """A small CNN with batch norm and dropout, trained on DeviceLoaders with crop/flip and noise, an
    augmentation generator and a noisy extra test set: every random state a resume must restore."""
    from stabkit.data import DeviceLoader

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                          nn.Flatten(), nn.Dropout(0.3), nn.Linear(32, 10))
    torch.manual_seed(99)  # a restarted process does not share the global generator's state
    g = torch.Generator().manual_seed(1)
    x, y = (torch.rand(96, 3, 16, 16, generator=g) * 255).to(torch.uint8), torch.randint(0, 10, (96,), generator=g)
    train_ld = DeviceLoader(x, y, 32, augment=True, noise_std=1.0, seed=3)
    test_ld = DeviceLoader(x[:64], y[:64], 32, shuffle=False, seed=4)
    noisy = DeviceLoader(x[:64], y[:64], 32, shuffle=False, noise_std=2.0, seed=5)
    jitter = lambda b, gen: b + 0.05 * torch.randn(b.shape, generator=gen)  # noqa: E731

    def on_epoch(row):
        if stop_after is not None and row["epoch"] == stop_after:
            raise _Interrupt

    return model, T.train(model, _ld(train_ld, test_ld, noisy=noisy), TrainSpec(epochs=5, lr=0.05, seed=7),
                          augment_fn=augment or jitter, progress=False, checkpoints=CheckpointFolder(root, "cnn", hash_),
                          on_epoch=on_epoch, resume=resume, resume_every_s=0)


def test_an_interrupted_training_resumes_bit_for_bit(tmp_path):
    _, ref = _resumable_fit(tmp_path / "ref")
    assert ref.extra["resumed_epoch"] == 0 and not (tmp_path / "ref" / C.RESUME_FILE).exists()
    with pytest.raises(_Interrupt):  # killed during epoch 3: the state after epoch 2 is on disk
        _resumable_fit(tmp_path / "cut", stop_after=3)
    assert CheckpointFolder(tmp_path / "cut", "cnn", "run1").resume_epoch() == 2
    assert CheckpointFolder(tmp_path / "cut", "cnn", "other").resume_epoch() is None
    assert CheckpointFolder(tmp_path / "cut", "lin", "run1").resume_epoch() is None
    with pytest.raises(C.CheckpointError, match="config_hash"):  # another run's state is refused
        _resumable_fit(tmp_path / "cut", resume=True, hash_="other")
    model, res = _resumable_fit(tmp_path / "cut", resume=True)
    assert res.extra["resumed_epoch"] == 2 and len(res.metrics) == 5
    assert res.metrics.drop(columns=TIMES).equals(ref.metrics.drop(columns=TIMES))
    assert res.best_epoch == ref.best_epoch
    for k in ref.best_state:
        assert torch.equal(res.best_state[k], ref.best_state[k]), k
        assert torch.equal(res.last_state[k], ref.last_state[k]), k
    assert not (tmp_path / "cut" / C.RESUME_FILE).exists()  # removed once training ended
    sd, meta = C.load_checkpoint(tmp_path / "cut" / "last.pt", config_hash="run1")
    assert meta["epoch"] == 5 and all(torch.equal(sd[k], ref.last_state[k]) for k in sd)
    # the CPU time of every epoch, the resumed ones included, sums to the run's
    assert (res.metrics.cpu_seconds > 0).all() and res.extra["cpu_seconds"] == pytest.approx(res.metrics.cpu_seconds.sum())


def test_cpu_time_is_the_processes_not_the_wall_clock(tmp_path):
    """An epoch's ``cpu_seconds`` is the process's CPU time: a pause (a SIGSTOP of a background sweep, a
    sleep here) lengthens the wall time of the epoch but not its CPU time, so core-hours are not inflated.
    A run resumed from a file written before the column existed has no total (NaN), not a partial one."""
    import time

    calls = []

    def pause(b, gen):  # 3 batches an epoch: the 4th call is epoch 2's first batch
        calls.append(1)
        if len(calls) == 4:
            time.sleep(0.6)
        return b
    _, res = _resumable_fit(tmp_path / "a", augment=pause)
    m = res.metrics
    assert m.seconds.iloc[1] > 0.6 and m.cpu_seconds.iloc[1] < m.seconds.iloc[1] - 0.4
    rows = [dict(r) for _, r in m.iterrows()]
    assert T._cpu_seconds(rows) == pytest.approx(m.cpu_seconds.sum())
    rows[0].pop("cpu_seconds")
    assert math.isnan(T._cpu_seconds(rows)) and math.isnan(T._cpu_seconds([]))


def test_resume_arguments_are_checked(tmp_path):
    x, y = _blobs()
    spec = TrainSpec.for_task("twopoints", epochs=1)
    with pytest.raises(ValueError, match="resume=True needs checkpoints"):
        T.train(nn.Linear(4, 1), _ld(_batches(x, y), _batches(x, y)), spec, progress=False, resume=True)
    with pytest.raises(ValueError, match="resume_every_s"):
        T.train(nn.Linear(4, 1), _ld(_batches(x, y), _batches(x, y)), spec, progress=False,
                checkpoints=CheckpointFolder(tmp_path, "lin", "a"), resume_every_s=-1)
    (tmp_path / C.RESUME_FILE).write_bytes(b"not a torch file")
    assert CheckpointFolder(tmp_path, "lin", "a").resume_epoch() is None
    with pytest.raises(C.CheckpointError, match="corrupted"):
        T.train(nn.Linear(4, 1), _ld(_batches(x, y), _batches(x, y)), spec, progress=False,
                checkpoints=CheckpointFolder(tmp_path, "lin", "a"), resume=True)
    # written only after an epoch that is not the last, and only when the interval has passed
    seen = []
    spec = TrainSpec.for_task("twopoints", epochs=2)
    T.train(nn.Linear(4, 1), _ld(_batches(x, y), _batches(x, y)), spec, progress=False,
            checkpoints=CheckpointFolder(tmp_path / "b", "lin", "b"), resume_every_s=None,
            on_epoch=lambda row: seen.append((tmp_path / "b" / C.RESUME_FILE).exists()))
    assert seen == [False, False]
    T.train(nn.Linear(4, 1), _ld(_batches(x, y), _batches(x, y)), spec, progress=False,
            checkpoints=CheckpointFolder(tmp_path / "c", "lin", "c"), resume_every_s=0,
            on_epoch=lambda row: seen.append((tmp_path / "c" / C.RESUME_FILE).exists()))
    assert seen[2:] == [False, True]  # written after epoch 1 (seen at epoch 2), none after the last
    assert not (tmp_path / "c" / C.RESUME_FILE).exists()


def test_a_checkpoint_folder_checks_net_and_run_and_records_a_finished_training(tmp_path):
    import pandas as pd
    sd = nn.Linear(3, 2).state_dict()
    ck = CheckpointFolder(tmp_path / "run", "LeNet", "k1")
    assert ck.finished() is None and ck.resume_epoch() is None and len(ck.problems()) == 2
    for which in ("best", "last"):
        ck.save(which, sd, epoch=3)
    assert ck.problems() == [] and ck.load("best")[1]["kind"] == "best"
    assert CheckpointFolder(tmp_path / "run", "VGG11", "k1").problems()[0].endswith("expected 'VGG11'")
    with pytest.raises(ValueError, match="kind must be one of"):
        ck.file("middle")
    other = CheckpointFolder(tmp_path / "other", "LeNet", "k2")
    other.copy_from(ck, trained_by="k1")
    sd2, meta = other.load("last")
    assert meta["config_hash"] == "k2" and meta["trained_by"] == "k1" and meta["epoch"] == 3 and meta["kind"] == "last"
    assert all(torch.equal(sd[k], sd2[k]) for k in sd)
    metrics = pd.DataFrame({"epoch": [1, 2], "test_err": [0.5, 0.25]})
    ck.record_finished({"best_epoch": 2}, metrics)
    training, back = ck.finished()
    assert training == {"best_epoch": 2} and back.equals(metrics)
    assert CheckpointFolder(tmp_path / "run", "LeNet", "other").finished() is None  # another run's record
    (tmp_path / "run" / "last.pt").unlink()
    assert ck.finished() is None  # a record without what it vouches for
    assert not list((tmp_path / "run").glob(".*tmp*"))
