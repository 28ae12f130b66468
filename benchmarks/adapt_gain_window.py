"""``forecast --adapt zo --adapt-target gain`` at every init time of a held-out year, with the run's network.

The same rule as the product, on far more init times than ``benchmarks/adapt_zo.py`` can run
through ``seacast forecast`` (about a minute each on 2 cores):

1. every sample of the held-out store goes through the run's model at gain 0.5 and 1.5 (the
   two forwards :func:`seacast.forecast.fit_gain` makes); each sample keeps, per lead time and
   variable, the run's loss at gains 0.5, 1 and 1.5, and the sums that give its physical
   error at any gain;
2. at every init time every 6 h after the first whole window, the product's own functions pick
   the window's samples (:func:`seacast.forecast.adaptation.gain_window`: one every 3 h, a lead
   time counted where its target is known at the init time) and turn their summed losses into
   the gains (:func:`seacast.forecast.adaptation.gain_from_parabolas`);
3. the init time's forecast is scored as trained and at those gains, against the references a
   forecaster would use (fitted on the run's training period): the tide, the tide + the
   damped anomaly and the tide + the regressed anomaly.

Prints RMSE / the best reference per lead time and variable, as trained and adapted, the
adapted / as-trained ratio with a 5-95 % interval (weeks resampled), and that ratio by season.
``--check K`` runs ``seacast.forecast.forecast`` itself at K of the init times and prints how
far its gains are from these.

    .venv/bin/python benchmarks/adapt_gain_window.py --run RUN [--store data/twin_seed1_2025.zarr]
        [--adapt-hours 672,1344,2160] [--check 3] [--period 2025-09-01:2025-11-30]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import xarray as xr

SEASONS = {12: "DJF", 1: "DJF", 2: "DJF", 3: "MAM", 4: "MAM", 5: "MAM"}
SEASONS |= {6: "JJA", 7: "JJA", 8: "JJA", 9: "SON", 10: "SON", 11: "SON"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a tide-aware run folder")
    parser.add_argument("--store", type=Path, default=Path("data/twin_seed1_2025.zarr"))
    parser.add_argument("--adapt-hours", default="672,1344,2160", help="window lengths to score")
    parser.add_argument("--every", type=int, default=6, help="hours between scored init times")
    parser.add_argument("--check", type=int, default=0, help="forecasts to check the gains on")
    parser.add_argument(
        "--period", default=None, help="START:END of the scored init times (default: all)"
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from seacast.training.checkpoint import load_run
    from seacast.windows import Timeline

    run = load_run(args.run)
    if run.tides is None or getattr(run.model, "base_gain", None) is None:
        raise SystemExit(f"{args.run} has no tide base (model.base: tide): no gain to adapt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        store = xr.open_zarr(args.store, consolidated=False)
    timeline = Timeline.from_store(store)
    started = time.perf_counter()
    stats = sample_statistics(run, store, args.store, timeline)
    print(
        f"{len(stats['loss'])} samples through the model in {time.perf_counter() - started:.0f} s"
    )
    cfg = run.config
    variables, leads = list(cfg.samples.variables), list(cfg.samples.lead_times)
    cells = [f"{v} +{lead}h" for lead in leads for v in variables]
    for hours in (int(h) for h in args.adapt_hours.split(",")):
        inits, gains = adapted_gains(run, timeline, stats, hours, args.every, args.period)
        report(hours, inits, gains, stats, timeline, cells)
        if args.check:
            check_against_forecast(args, run, timeline, inits, gains, hours)


def sample_statistics(run, store, store_path: Path, timeline) -> dict[str, np.ndarray]:
    """Per sample (init index ``i``), per lead time and variable: the run's summed loss at gains
    0.5, 1, 1.5 (``loss [n, 3, L, C]``) and, in physical units over the sea points, the error
    sums ``e0e0, e0b, bb`` (error at gain g: ``e0e0 + 2 g e0b + g^2 bb``) and the references'."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from anomaly_persistence import anomalies

    from seacast.anomaly_regression import fit_for_run
    from seacast.forecast.inputs import _read_frames
    from seacast.training.losses import make_loss
    from seacast.windows import open_samples

    cfg = run.config
    variables, leads, lags = (
        list(cfg.samples.variables),
        list(cfg.samples.lead_times),
        cfg.samples.lags,
    )
    lead_steps = np.asarray([timeline.steps(h, "lead time") for h in leads])
    sea = np.asarray(store["sea_mask"].values, dtype=bool)
    encoding = run.encoding_for(sea)
    loss_fn = make_loss(run.normaliser, sea, units=cfg.trainer.loss_units)
    tides = run.tides.select(variables)
    alpha = tides.damping_for(leads)  # [L, C]
    regression = fit_for_run(cfg, tides, open_samples(cfg.store, cfg.samples).plan)
    n = len(timeline.hours)
    frames = encoding.encode(
        _read_frames(store, variables, np.arange(n)), np.asarray(timeline.hours)
    )  # [T, C, H, W]
    _, anomaly = anomalies(store_path, tides, variables)  # [T, C, P]
    field = np.zeros((n, len(variables), *sea.shape), np.float32)
    field[:, :, sea] = anomaly
    # a run with weather-forecast inputs reads the forecast series up to its horizon past t0
    forcing = run.forcing
    ahead = forcing.horizon_steps if forcing is not None else 0
    forcing_frames = forcing.read(store, np.arange(n), sea) if forcing is not None else None
    indices = np.arange(lags - 1, n - max(int(lead_steps.max()), ahead))
    out = {k: np.zeros((n, len(leads), len(variables))) for k in ("e0e0", "e0b", "bb")}
    out |= {k: np.zeros((n, len(leads), len(variables))) for k in ("tide", "damped", "regressed")}
    out["loss"] = np.zeros((n, 3, len(leads), len(variables)))
    model = run.model.eval()
    with torch.no_grad():
        for a in range(0, len(indices), 32):
            idx = indices[a : a + 32]
            windows = [frames[i - lags + 1 : i + 1].permute(1, 0, 2, 3) for i in idx]
            if forcing is not None:
                windows = [
                    forcing.with_channels(w, forcing_frames, int(i))
                    for w, i in zip(windows, idx, strict=True)
                ]
            x = torch.stack(windows)
            y = torch.stack([frames[i + lead_steps] for i in idx])  # [B, L, C, H, W]
            model.base_gain.fill_(0.5)
            low = model(x)
            model.base_gain.fill_(1.5)
            high = model(x)
            for k, pred in enumerate((low, 0.5 * (low + high), high)):
                out["loss"][idx, k] = loss_fn.elementwise(pred, y).sum(dim=(3, 4)).double().numpy()
            head = 1.5 * low - 0.5 * high  # gain 0
            p0 = run.normaliser.denormalise(head, channel_dim=-3).numpy()[..., sea]
            p1 = run.normaliser.denormalise(head + high - low, channel_dim=-3).numpy()[..., sea]
            truth = np.stack([anomaly[i + lead_steps] for i in idx])  # [B, L, C, P]
            e0, b = p0 - truth, p1 - p0
            out["e0e0"][idx] = (e0 * e0).sum(-1)
            out["e0b"][idx] = (e0 * b).sum(-1)
            out["bb"][idx] = (b * b).sum(-1)
            now = np.stack([anomaly[i] for i in idx])[:, None]  # [B, 1, C, P]
            out["tide"][idx] = (truth**2).sum(-1)
            out["damped"][idx] = ((alpha[None, :, :, None] * now - truth) ** 2).sum(-1)
            window = np.stack([field[i - lags + 1 : i + 1] for i in idx])
            regressed = regression.predict(window, sea)[..., sea]
            out["regressed"][idx] = ((regressed - truth) ** 2).sum(-1)
    model.base_gain.fill_(1.0)
    out["indices"] = indices
    return out


def adapted_gains(run, timeline, stats, adapt_hours: int, every_hours: int, period=None):
    """The scored init indices and the product's gains ``[n, L, C]`` at each."""
    from seacast.forecast.adaptation import gain_from_parabolas, gain_window

    hours = timeline.hours
    indices = stats["indices"]
    first = hours[0] + adapt_hours + max(run.config.samples.lead_times)
    last = hours[-1]
    if period:
        from seacast.timeaxis import times_to_hours

        start, end = (int(times_to_hours(pd.Timestamp(t))[0]) for t in period.split(":"))
        first, last = max(first, start), end
    inits = [int(i) for i in indices if first <= hours[i] <= last and hours[i] % every_hours == 0]
    gains = []
    for i in inits:
        samples, known = gain_window(run, timeline, i, adapt_hours)
        sums = np.einsum("nklc,nl->klc", stats["loss"][samples], known)
        gains.append(gain_from_parabolas(sums, np.ones(sums.shape[1:]))["gain"])
    return np.asarray(inits), np.asarray(gains)


def report(adapt_hours, inits, gains, stats, timeline, cells) -> None:
    e0e0, e0b, bb = (stats[k][inits] for k in ("e0e0", "e0b", "bb"))
    trained = e0e0 + 2 * e0b + bb  # [n, L, C]
    adapted = e0e0 + 2 * gains * e0b + gains**2 * bb
    refs = np.stack([stats[k][inits].sum(0) for k in ("tide", "damped", "regressed")])
    best = refs.min(0)
    stamps = pd.to_datetime(np.asarray(timeline.hours)[inits], unit="h")
    print(
        f"\nwindow {adapt_hours} h ({adapt_hours // 24} d): {len(inits)} init times every "
        f"{int(np.diff(timeline.hours[inits]).min())} h, {stamps[0]:%Y-%m-%d}..{stamps[-1]:%Y-%m-%d}"
    )
    print(f"{'':28s}" + "  ".join(f"{c:>9s}" for c in cells))

    def row(name, values):
        print(f"{name:28s}" + "  ".join(f"{v:9.3f}" for v in np.asarray(values).reshape(-1)))

    names = ("tide", "tide + damped", "tide + regressed")
    for name, ref in zip(names, refs, strict=True):
        row(f"{name} / best ref", np.sqrt(ref / best))
    row("as trained / best ref", np.sqrt(trained.sum(0) / best))
    row("adapted / best ref", np.sqrt(adapted.sum(0) / best))
    ratio = np.sqrt(adapted.sum(0) / trained.sum(0))
    row("adapted / as trained", ratio)
    weeks = (np.asarray(timeline.hours)[inits] - timeline.hours[inits[0]]) // (7 * 24)
    rng = np.random.default_rng(0)
    unique = np.unique(weeks)
    by_week_a = np.stack([adapted[weeks == w].sum(0) for w in unique])
    by_week_t = np.stack([trained[weeks == w].sum(0) for w in unique])
    draws = rng.integers(0, len(unique), size=(1000, len(unique)))
    boot = np.sqrt(by_week_a[draws].sum(1) / by_week_t[draws].sum(1))
    row("  5 % (weeks resampled)", np.quantile(boot, 0.05, axis=0))
    row("  95 %", np.quantile(boot, 0.95, axis=0))
    for season in ("DJF", "MAM", "JJA", "SON"):
        chosen = np.asarray([SEASONS[m] == season for m in stamps.month])
        if chosen.sum() >= 20:
            row(
                f"  {season} ({chosen.sum()} inits)",
                np.sqrt(adapted[chosen].sum(0) / trained[chosen].sum(0)),
            )
    row("median gain", np.median(gains, axis=0))


def check_against_forecast(args, run, timeline, inits, gains, adapt_hours) -> None:
    from seacast.forecast import forecast

    picks = np.linspace(0, len(inits) - 1, args.check).round().astype(int)
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for k in picks:
            stamp = f"{pd.to_datetime(timeline.hours[inits[k]], unit='h'):%Y-%m-%dT%H}"
            result = forecast(
                args.run,
                store_path=args.store,
                init_time=stamp,
                out_dir=Path(tmp),
                adapt="zo",
                adapt_target="gain",
                adapt_hours=adapt_hours,
            )
            got = np.asarray(result.adaptation["gain"])
            worst = max(worst, float(np.abs(got - gains[k]).max()))
    print(f"check: seacast.forecast.forecast at {len(picks)} init times, gains within {worst:.2g}")


if __name__ == "__main__":
    main()
