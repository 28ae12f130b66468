"""Zeroth-order update rules: a parameter update from forward passes and noise only.

Offers three :class:`~seacast.training.rules.UpdateRule` subclasses, registered
under their trainer names:

* :class:`SpsaRule` (``spsa``): MeZO-style weight perturbation. Seeded noise
  ``z(s)`` is added to the weights in place, ``θ ± εz``; the central difference
  ``g = (L₊ − L₋) / 2ε`` times ``z`` (regenerated from the seed, never stored)
  is the estimate. With ``inplace_sgd`` the rule applies ``θ -= lr g z`` itself
  and keeps no ``.grad`` tensors, so a step needs the memory of inference.
* :class:`NodePerturbationRule` (``node-perturbation``): noise ψ on every
  Conv/Linear layer's output (pre-activation), per sample; the per-sample loss
  difference δ_b between the noisy and the clean (or antithetic) pass modulates a
  layer-local Hebbian update ``δ_b/σ² · ψ_l ⊗ x_l`` computed with the conv
  weight-gradient operator. Nothing flows backward through the network.
* :class:`ForwardGradientRule` (``forward-gradient``): the exact directional
  derivative ``∇L·v`` from forward-mode AD (``torch.autograd.forward_ad``
  dual tensors, which also work with train-mode BatchNorm), estimate ``(∇L·v) v``.

Every rule runs its forwards under ``torch.no_grad()`` in the model's current
mode (the loop puts it in train mode). Two things keep the passes of one step
comparable, see :class:`_SamePasses`: every pass of a step replays the same
random state (so dropout draws the same mask in L₊ and L₋, or in the clean and
noisy pass), and BatchNorm running statistics are updated once per step (by
the step's first pass), not once per pass.
"""

from __future__ import annotations

from seacast.training.zeroth_order.common import (
    JVP_FORWARD_COST,
    SamePasses,
    draw_seed,
    generator_for,
    mix_seed,
    no_autograd,
    noise_like,
    parameter_blocks,
    trainable_parameters,
)
from seacast.training.zeroth_order.credit import (
    Credit,
    layer_input,
    local_layers,
    local_weight_gradient,
)
from seacast.training.zeroth_order.forward_gradient import (
    ForwardGradientRule,
    directional_derivative,
)
from seacast.training.zeroth_order.node_perturbation import NodePerturbationRule
from seacast.training.zeroth_order.spsa import SpsaRule

__all__ = [
    "JVP_FORWARD_COST",
    "Credit",
    "ForwardGradientRule",
    "NodePerturbationRule",
    "SamePasses",
    "SpsaRule",
    "directional_derivative",
    "draw_seed",
    "generator_for",
    "layer_input",
    "local_layers",
    "local_weight_gradient",
    "mix_seed",
    "no_autograd",
    "noise_like",
    "parameter_blocks",
    "trainable_parameters",
]
