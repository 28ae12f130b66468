"""Node perturbation's gradient estimate layer by layer, against backprop's, on a trained run.

Issue 16 asks why node perturbation stops at the output layer's skill. This loads a run's
checkpoint (for example the best of ``node-perturbation-out``, where ``head.out`` is trained and
the hidden layers are at their initialisation: where a second, hidden-layer stage would start),
takes one fixed training batch spread over the training period, and prints for each layer of
node perturbation's subset the cosine of its estimate to the true gradient and its norm ratio,
for several probe counts. The cosine of an average over k independent probes grows as
``sqrt(k c1^2 / (1 + (k - 1) c1^2))`` from its one-probe value c1, so the table says how many
forwards a step would need on each layer.

    .venv/bin/python benchmarks/np_layer_cosine.py --run RUN_DIR [--probes 1 4 16 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch


def fixed_batch(run, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, object]:  # noqa: ANN001
    """The run's first training batch, spread over the training period, and its loss."""
    from seacast.training.losses import make_loss
    from seacast.windows import open_samples

    cfg = run.config
    sets = open_samples(cfg.store, cfg.samples)
    if run.tides is not None:
        sets = sets.with_tides(run.tides)
    picks = torch.linspace(0, len(sets.train) - 1, batch_size).round().long().unique()
    samples = [sets.train[int(i)] for i in picks]
    x = torch.stack([s["x"] for s in samples])
    y = torch.stack([s["y"] for s in samples])
    loss_fn = make_loss(
        sets.normaliser, sets.sea_mask, cfg.trainer.land_in_loss, cfg.trainer.loss_units
    )
    return x, y, loss_fn


def layer_grads(
    model: torch.nn.Module, layers: dict[str, torch.nn.Module]
) -> dict[str, torch.Tensor]:
    return {
        name: torch.cat(
            [
                (p.grad if p.grad is not None else torch.zeros_like(p)).flatten().double()
                for p in layer.parameters(recurse=False)
            ]
        )
        for name, layer in layers.items()
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--run", type=Path, required=True, help="a run folder with checkpoint_best.pt"
    )
    parser.add_argument("--which", default="best", choices=["best", "last"])
    parser.add_argument("--probes", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument(
        "--repeats", type=int, default=3, help="independent estimates per probe count"
    )
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument(
        "--only",
        nargs="+",
        default=["head", "decoder.3", "up.3", "reducers.0", "encoder.0"],
        help="node perturbation's layer subset (the experiment's)",
    )
    parser.add_argument(
        "--np",
        dest="np_fields",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field of trainer.node_perturbation (sigma=1e-3, credit=global, layers=samples)",
    )
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    import yaml

    from seacast.training.checkpoint import load_run
    from seacast.training.gradcheck import with_probes
    from seacast.training.rules import make_rule
    from seacast.training.zeroth_order.credit import chosen_layers

    overrides = {k: yaml.safe_load(v) for k, v in (f.split("=", 1) for f in args.np_fields)}
    run = load_run(args.run, which=args.which)
    model = run.model
    model.eval()
    x, y, loss_fn = fixed_batch(run, args.batch)
    names = {m: n for n, m in model.named_modules()}
    layers = {names[m]: m for m in chosen_layers(model, args.only, "node-perturbation")}

    for p in model.parameters():
        p.grad = None
    loss_fn(model(x), y).mean().backward()
    true = layer_grads(model, layers)

    cosines: dict[tuple[str, int], list[float]] = {}
    ratios: dict[tuple[str, int], list[float]] = {}
    for probes in args.probes:
        cfg = run.config.trainer.model_copy(deep=True)
        data = cfg.model_dump()
        data["node_perturbation"]["only"] = list(args.only)
        data["node_perturbation"].update(overrides)
        cfg = with_probes(type(cfg).model_validate(data), "node-perturbation", probes)
        for repeat in range(args.repeats):
            for p in model.parameters():
                p.grad = None
            torch.manual_seed(1000 * probes + repeat)
            make_rule("node-perturbation", model, cfg).step(model, x, y, loss_fn)
            estimate = layer_grads(model, layers)
            for name in layers:
                t, e = true[name], estimate[name]
                denom = float(t.norm() * e.norm())
                cosines.setdefault((name, probes), []).append(
                    float(t @ e) / denom if denom else 0.0
                )
                ratios.setdefault((name, probes), []).append(
                    float(e.norm() / t.norm()) if float(t.norm()) else float("nan")
                )

    print(
        f"run {args.run} ({args.which}, step {run.step}); batch {len(x)}; "
        f"node_perturbation {overrides or 'as trained'}; median of {args.repeats} estimates"
    )
    header = " | ".join(f"cos {k}p" for k in args.probes)
    print(f"| layer | params | |grad| | {header} | |est|/|grad| {args.probes[0]}p |")
    print("|---|---|---|" + "---|" * len(args.probes) + "---|")
    for name, layer in layers.items():
        n = sum(p.numel() for p in layer.parameters(recurse=False))
        cells = " | ".join(f"{statistics.median(cosines[(name, k)]):+.2f}" for k in args.probes)
        ratio = statistics.median(ratios[(name, args.probes[0])])
        print(f"| {name} | {n} | {float(true[name].norm()):.2e} | {cells} | {ratio:.3g} |")


if __name__ == "__main__":
    main()
