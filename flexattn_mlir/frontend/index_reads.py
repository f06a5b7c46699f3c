"""How the export traces a mod's read of a captured tensor at a computed index.

A mod indexes captured tensors with its 0-d integer index tensors:
``slopes[h]``, ``padding[b, kv_idx]``. Plain ``Tensor.__getitem__`` turns
such an index into a Python int, which torch.export cannot do for a traced
(data-dependent) value: ``GuardOnDataDependentSymNode``. torch 2.13's
non-strict export rewrites the read to ``torch.select(t, dim, i.item())``,
an unbacked index that needs no guard; torch 2.11 does not, and fails
(docs/frontend.md §7). :class:`ScalarIndexReads` applies that rewrite
itself while the mod is traced, so both export the same graph: the one
torch 2.13 exports anyway, lowered by torch-mlir to the select chain the
conversion folds into a ``flexattn.check_index``-guarded load
(docs/frontend.md §1.3). No bound is assumed for the index: torch's own
bounds (``t[-1]`` wraps, anything outside ``[-N, N)`` is an error) stay
with the check_index.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

__all__ = ["ScalarIndexReads"]


_INDEX_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64)


def _is_scalar_index(item) -> bool:
    """A 0-d signed integer tensor (bool and uint8 tensors index as masks)."""
    return isinstance(item, torch.Tensor) and item.dim() == 0 and item.dtype in _INDEX_DTYPES


def _step(dim: int, item):
    """``(next dim, t -> t')`` for one plain item of ``t[...]``, or None
    when the item is not one the rewrite handles (lists, tensors of
    indices, slices with tensor bounds: torch's ``__getitem__`` keeps them)."""
    if item is None:
        return dim + 1, lambda t: torch.unsqueeze(t, dim)
    if _is_scalar_index(item):
        return dim, lambda t: torch.select(t, dim, item.item())
    if isinstance(item, (int, torch.SymInt)) and not isinstance(item, bool):
        return dim, lambda t: torch.select(t, dim, item)
    if isinstance(item, slice):
        parts = (item.start, item.stop, item.step)
        if any(p is not None and not isinstance(p, (int, torch.SymInt)) for p in parts):
            return None
        if item.start is None and item.stop is None and item.step in (None, 1):
            return dim + 1, lambda t: t
        step = 1 if item.step is None else item.step
        return dim + 1, lambda t: torch.ops.aten.slice(t, dim, item.start, item.stop, step)
    return None


def _rewrite(t: torch.Tensor, index) -> Optional[Callable[[], torch.Tensor]]:
    """``t[index]`` as a chain of select / slice / unsqueeze when ``index``
    holds a 0-d integer tensor (torch 2.13's non-strict rewrite), else None."""
    items = list(index) if isinstance(index, tuple) else [index]
    if not any(_is_scalar_index(i) for i in items):
        return None
    if sum(i is Ellipsis for i in items) > 1:
        return None  # torch's __getitem__ raises its own error
    at = next((k for k, i in enumerate(items) if i is Ellipsis), None)
    if at is not None:
        rest = sum(i is not None and i is not Ellipsis for i in items)
        items[at:at + 1] = [slice(None)] * (t.dim() - rest)
    chain, dim = [], 0
    for item in items:
        step = _step(dim, item)
        if step is None:
            return None
        dim, fn = step
        chain.append(fn)

    def run():
        out = t
        for fn in chain:
            out = fn(out)
        return out

    return run


class ScalarIndexReads(torch.overrides.TorchFunctionMode):
    """While active, ``t[i]`` / ``t[i, j]`` with 0-d integer index tensors
    runs as ``torch.select(t, d, i.item())`` (see the module docstring).
    Everything else runs unchanged."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if (getattr(func, "__name__", None) == "__getitem__" and len(args) == 2
                and not kwargs and isinstance(args[0], torch.Tensor)):
            run = _rewrite(args[0], args[1])
            if run is not None:
                return run()
        return func(*args, **kwargs)
