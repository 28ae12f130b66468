"""Reuse, within one zeroth-order step, what no perturbed parameter can change.

A zeroth-order step runs the model several times on the same batch, each time with
other noise on the perturbed parameters. A module call whose own parameters are not
perturbed and whose inputs do not depend on any perturbed parameter gives the same
output every time: :class:`FrozenPrefix` keeps it from the step's first pass and
replays it on the others. With only the layers near the output perturbed (a layer
subset), the later passes run only those layers: on the tide-aware 3ddr_unet F=4,
64x64, batch 16, a pass of the full-resolution tail takes 20 ms against 189 ms for
the whole model (one thread).

Which calls are frozen is found once, on two samples, without autograd: in an analysis
pass the perturbed parameters are tagged tensors (:class:`_Tagged`), and every result
computed from a tagged tensor carries its tags, through the operations between modules
too (``torch.cat``, reshapes). The calls are then matched by their order within a
pass, which is the same on every pass of a model whose control flow does not depend
on its weights. An in-place write of a tagged value into an untagged tensor is not
traced; ``tests/test_frozen_prefix.py`` checks the four U-Nets pass for pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

PERTURBED = "perturbed"
"""The tag of what a perturbed parameter reaches."""


class _Tagged(torch.Tensor):
    """A tensor that carries ``tags``; every result computed from it carries them too."""

    tags: frozenset

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: tuple = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        tags = _tags_of((args, kwargs))
        with torch._C.DisableTorchFunctionSubclass():
            out = func(*args, **kwargs)
        return _retag(out, tags)


def _tag(tensor: torch.Tensor, tags: frozenset) -> torch.Tensor:
    tagged = tensor.as_subclass(_Tagged)
    tagged.tags = tags
    return tagged


def _tags_of(value: Any) -> frozenset:
    return frozenset().union(*(getattr(t, "tags", frozenset()) for t in _tensors(value)))


def _retag(value: Any, tags: frozenset) -> Any:
    if not tags:
        return value
    if isinstance(value, torch.Tensor):
        return _tag(value, tags | getattr(value, "tags", frozenset()))
    if isinstance(value, list | tuple):
        return type(value)(_retag(v, tags) for v in value)
    return value


def _next_call(counts: dict[nn.Module, int], module: nn.Module) -> int:
    """The index of this call of ``module`` within the pass, counted in ``counts``."""
    index = counts.get(module, 0)
    counts[module] = index + 1
    return index


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


class FrozenPrefix:
    """Keep the outputs of a step's frozen module calls from its first pass for the others.

    Use: ``with cache.step(x):`` around the step's passes; each ``model(x)`` inside is
    one pass. The first records, the later ones replay. Outside ``step`` the model is
    untouched (no hooks), so validation and inference run as usual.
    """

    def __init__(self, model: nn.Module, perturbed: Iterable[nn.Parameter]) -> None:
        self.model = model
        self.perturbed = {id(p) for p in perturbed}
        self.names = {m: n for n, m in model.named_modules()}
        self.frozen_modules = {
            m
            for m in model.modules()
            if m is not model and not any(id(p) in self.perturbed for p in m.parameters())
        }
        # per module, the indices (within one pass) of its calls whose output can be reused
        self.frozen_calls: dict[nn.Module, set[int]] | None = None
        # the frozen calls whose output later passes read (the rest get a stand-in)
        self.needed: set[tuple[nn.Module, int]] = set()

    @property
    def reused_modules(self) -> list[str]:
        """The names of the modules with a reused call (empty before the first step)."""
        return sorted(self.names[m] for m in self.frozen_calls or {})

    @contextmanager
    def _analysis(self) -> Iterator[None]:
        """An analysis pass: no autograd, and the buffers (BatchNorm's running statistics)
        put back afterwards."""
        buffers = [(b, b.clone()) for b in self.model.buffers()]
        try:
            with torch.no_grad():
                yield
        finally:
            with torch.no_grad():
                for buffer, value in buffers:
                    buffer.copy_(value)

    def _tagged_parameters(self) -> dict[str, torch.Tensor]:
        return {
            name: _tag(p.detach(), frozenset({PERTURBED}))
            for name, p in self.model.named_parameters()
            if id(p) in self.perturbed
        }

    def _find_frozen_calls(self, x: torch.Tensor) -> dict[nn.Module, set[int]]:
        """The outermost calls that no perturbed parameter reaches, found on two samples."""
        found: dict[nn.Module, set[int]] = {}
        counts: dict[nn.Module, int] = {}
        depth = [0]  # > 0 inside a frozen call: the calls within it are not outermost
        nested: set[nn.Module] = set()

        def before(module: nn.Module, args: tuple) -> None:
            index = _next_call(counts, module)
            frozen = module in self.frozen_modules and PERTURBED not in _tags_of(args)
            if depth[0] == 0 and frozen:
                found.setdefault(module, set()).add(index)
            elif depth[0]:
                nested.add(module)
            depth[0] += 1 if (frozen or depth[0]) else 0

        def after(module: nn.Module, args: tuple, output: Any) -> None:
            if depth[0]:
                depth[0] -= 1

        with self._hooks(before, after), self._analysis():
            functional_call(self.model, self._tagged_parameters(), (_few(x),), strict=False)
        # a module also called inside a frozen call would count calls that replay skips
        return {m: calls for m, calls in found.items() if m not in nested}

    def _find_needed(self, x: torch.Tensor) -> set[tuple[nn.Module, int]]:
        """The frozen calls whose output the rest of the pass reads; the others only feed other
        frozen calls, which replay without reading their input.

        Each frozen output gets its own tag, in place of its inputs' (so a frozen call hides
        what it read); the tags the model's output carries are the needed calls."""
        assert self.frozen_calls is not None
        counts: dict[nn.Module, int] = {}
        needed: set[tuple[nn.Module, int]] = set()

        def after(module: nn.Module, args: tuple, output: Any) -> Any:
            index = _next_call(counts, module)
            if index not in self.frozen_calls.get(module, ()):
                return None
            if not isinstance(output, torch.Tensor):
                needed.add((module, index))  # not traced: kept
                return None
            return _tag(output, frozenset({(module, index)}))

        with self._hooks(None, after, only=self.frozen_calls), self._analysis():
            out = self.model(_few(x))
        return needed | {tag for tag in _tags_of(out) if tag != PERTURBED}

    @contextmanager
    def _hooks(
        self, before: Any, after: Any, only: Iterable[nn.Module] | None = None
    ) -> Iterator[None]:
        modules = list(only) if only is not None else list(self.model.modules())
        handles = []
        for module in modules:
            if module is self.model:
                continue
            if before is not None:
                handles.append(module.register_forward_pre_hook(before))
            if after is not None:
                handles.append(module.register_forward_hook(after))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    @contextmanager
    def step(self, x: torch.Tensor) -> Iterator[None]:
        """The passes of one step on batch ``x``: the first records, the rest replay."""
        if self.frozen_calls is None:
            self.frozen_calls = self._find_frozen_calls(x)
            self.needed = self._find_needed(x)
        frozen_calls, needed = self.frozen_calls, self.needed
        outputs: dict[tuple[nn.Module, int], Any] = {}
        counts: dict[nn.Module, int] = {}

        def record(module: nn.Module, args: tuple, output: Any) -> None:
            index = _next_call(counts, module)
            if (module, index) in needed:
                outputs[(module, index)] = output
            elif index in frozen_calls[module]:  # read only by other frozen calls: any values do
                outputs[(module, index)] = _stand_in(output)

        def replaying(module: nn.Module) -> Any:
            original = module.forward

            def forward(*args: Any, **kwargs: Any) -> Any:
                index = _next_call(counts, module)
                if (module, index) in outputs:
                    return outputs[(module, index)]
                return original(*args, **kwargs)

            return forward

        recorders = [m.register_forward_hook(record) for m in frozen_calls]

        def pass_starts(module: nn.Module, args: tuple) -> None:
            counts.clear()

        def pass_ends(module: nn.Module, args: tuple, output: Any) -> None:
            if recorders:  # the first pass is over: replay from now on
                for handle in recorders:
                    handle.remove()
                recorders.clear()
                for frozen in frozen_calls:
                    frozen.forward = replaying(frozen)

        handles = [
            self.model.register_forward_pre_hook(pass_starts),
            self.model.register_forward_hook(pass_ends),
        ]
        terms = getattr(self.model, "input_only_terms", ())
        for name in terms:
            setattr(self.model, name, _first_result(getattr(self.model, name)))
        try:
            yield
        finally:
            for handle in handles + recorders:
                handle.remove()
            for frozen in frozen_calls:
                frozen.__dict__.pop("forward", None)
            for name in terms:
                self.model.__dict__.pop(name, None)


def _few(x: torch.Tensor) -> torch.Tensor:
    """The analysis passes' input: two samples, so that train-mode BatchNorm1d has a batch."""
    return x[:2]


def _stand_in(output: torch.Tensor) -> torch.Tensor:
    """A tensor of ``output``'s shape that holds one number (stride 0): no memory kept."""
    return torch.zeros((), dtype=output.dtype, device=output.device).expand(output.shape)


def _first_result(method: Any) -> Any:
    """``method`` computed once: its first result stands for every later call (same batch)."""
    kept: list[Any] = []

    def once(*args: Any, **kwargs: Any) -> Any:
        if not kept:
            kept.append(method(*args, **kwargs))
        return kept[0]

    return once
