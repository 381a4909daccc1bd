"""One SGD training step on the CPU: float32 vs bf16 autocast, channels_last on/off, 1 and 2 threads.

What the cpu grids of the CIFAR-10 figures pay per step (batch 128, crop + flip already applied: random
CIFAR-sized inputs), per net family at the widths those grids train. The baseline of each case is the
default before ``precision`` existed: float32 with channels_last (``stabkit.train`` turns it on on the CPU).
Every variant goes through ``stabkit.precision.autocast`` and the same SGD optimiser (weight decay on
weights only), so what is timed is what ``train()`` runs. Variants are interleaved round-robin so that all
see the same load. Check: after one step from the same weights, the bf16 loss agrees with float32 to 2 %
(bf16 has an 8-bit mantissa).
"""
from __future__ import annotations

import torch

from .common import Result, interleaved

#: (net, width_factor) as the cpu grid of Fig. 1 / Fig. 3 trains them.
NETS = (("LeNet", 1.0), ("AlexNet", 0.5), ("VGG11bn", 0.5), ("VGG16bn", 0.5), ("ResNet18", 0.25))
QUICK_NETS = (("LeNet", 1.0),)
#: (precision, channels_last)
MODES = (("float32", True), ("float32", False), ("bf16", True), ("bf16", False))


def _step_fn(net: str, width: float, precision: str, channels_last: bool, batch: int):
    from stabkit.nets import build
    from stabkit.precision import autocast
    from stabkit.train import make_optimizer

    torch.manual_seed(0)
    model = build(net, width_factor=width)
    model.train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    opt = make_optimizer(model, "sgd", 0.01, 0.9, 5e-4)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, 32, 32, generator=g).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,), generator=g)
    dev = torch.device("cpu")
    losses: list[float] = []

    def step():
        with autocast(dev, False, precision):
            out = model(x)
        loss = torch.nn.functional.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return step, losses


def run(quick: bool = False, repeats: int = 3, threads: tuple[int, ...] = (1, 2)) -> list[Result]:
    from stabkit.precision import cpu_supports_bf16

    batch = 32 if quick else 128
    nets = QUICK_NETS if quick else NETS
    native = cpu_supports_bf16()
    saved = torch.get_num_threads()
    out: list[Result] = []
    try:
        for n_threads in (threads[:1] if quick else threads):
            torch.set_num_threads(n_threads)
            for net, width in nets:
                fns, losses = {}, {}
                for prec, cl in MODES:
                    name = f"{prec}{' + channels_last' if cl else ''}"
                    fns[name], losses[name] = _step_fn(net, width, prec, cl, batch)
                cpu: dict = {}
                secs = interleaved(fns, repeats, warmup=1, cpu=cpu)
                first = {k: v[0] for k, v in losses.items()}  # the warm-up step: same weights for every mode
                ref = first["float32 + channels_last"]
                rel = max(abs(v - ref) / abs(ref) for v in first.values())
                ok = rel < 0.02
                label = f"{net}" + (f" width {width:g}" if width != 1 else "")
                case = f"train step {label}, batch {batch}, {n_threads} thread{'s' if n_threads > 1 else ''}"
                for name in fns:
                    out.append(Result(case, name, secs[name], batch, cpu_seconds=cpu[name],
                                      baseline=name == "float32 + channels_last", extra={"ok": ok},
                                      notes=(f"first-step loss {first[name]:.4f} (max rel. diff {rel:.1e}); "
                                             f"native bf16: {'yes' if native else 'no'}")))
    finally:
        torch.set_num_threads(saved)
    return out
