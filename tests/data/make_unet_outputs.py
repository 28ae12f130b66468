"""Writes unet_outputs.npz: every U-Net's outputs and input gradient on a fixed input, as the code was.

The regression test tests/test_models.py::test_outputs_and_gradients_equal_the_recorded_ones
compares against it, so a speed change that alters the math fails. Rerun this only when a
change is meant to alter the outputs: .venv/bin/python tests/data/make_unet_outputs.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from seacast.config import MODEL_NAMES, ModelConfig
from seacast.models import build_model

SHAPE, LAGS, CHANNELS, LEADS = (16, 16), 4, 3, 2


def recorded_outputs() -> dict[str, np.ndarray]:
    x = torch.rand(1, CHANNELS, LAGS, *SHAPE, generator=torch.Generator().manual_seed(1))
    out = {"input": x.numpy()}
    for name in MODEL_NAMES:
        for faithful in (True, False):
            cfg = ModelConfig(
                name=name,
                filters=2,
                faithful=faithful,
                base="none",
                dropout=0.0,
                final_activation="none",
            )
            model = build_model(cfg, CHANNELS, CHANNELS, LAGS, LEADS, SHAPE, seed=3)
            key = f"{name}-{'faithful' if faithful else 'efficient'}"
            model.train()  # batch statistics, as in a training step
            inputs = x.clone().requires_grad_(True)
            y = model(inputs)
            y.square().sum().backward()
            out[f"{key}-train"] = y.detach().numpy()
            out[f"{key}-grad"] = inputs.grad.numpy()
            model.eval()
            with torch.no_grad():
                out[f"{key}-eval"] = model(x).numpy()
    return out


if __name__ == "__main__":
    np.savez_compressed(Path(__file__).with_name("unet_outputs.npz"), **recorded_outputs())
