"""Call plans: what a ``flex_attention`` call needs at a cache hit, found
with one dictionary lookup and a few identity checks.

A call's work splits in two. What depends only on the mods, the block-mask
object, the shapes, dtypes and devices of q/k/v (and sinks), ``scale`` and
the options: capturing the mods, checking the arguments and the block mask,
the kernel's key and the kernel. And what every call does: allocate the
outputs and launch (:class:`~.attention.Launch`). The first call does both
and, once it succeeded, keeps the first part as a :class:`CallPlan` under
:func:`call_key`; a later call with an equal key checks the plan's guards and
launches the kernel the plan prepared (:meth:`~.attention.Launch.prepare`: on
a GPU flexattn_runtime's ``PreparedLaunch``, which does not validate again
the devices, dtypes and shapes the key and guards fix, nor the contiguity and
freshness of what the launch makes; it checks alignment and the current
device).

The guards, each a check that reads no tensor data (as torch.compile's):

- the score_mod and the block mask are the same objects (``is``);
- the block mask's fields (``mask_mod``, ``BLOCK_SIZE``, ``seq_lengths``
  and its tensors) are the same objects, and its tensors' version counters
  and data pointers are unchanged: a mask changed in place is checked again;
- capturing the mods again would give the same IR and the same tensors
  (:func:`~flexattn_mlir.frontend.capture.guards_hold`: the closure cells,
  globals, defaults and code objects the capture read are the same objects;
  each captured tensor keeps its shape, dtype and device). A captured
  tensor's values are not guarded: the kernel reads them at every call, so a
  tensor changed in place is seen as it is;
- no table was cleared since (``kernels.clear_table``,
  ``capture.clear_memo``), and ``FLEXATTN_OVERRIDE_IR`` /
  ``FLEXATTN_CHECK_INDICES`` are as they were (both are in the key).

Whatever a guard misses runs the full call, which checks everything and
raises what it would raise, so an error is never skipped: a call is planned
only after it succeeded, and an argument that changes what the checks see
(a shape, a dtype, a device, an option) is in the key. Calls that record
gradients (:mod:`.autograd`) and mods the capture cannot key (an object
whose state the mod reads) are never planned.
"""

from __future__ import annotations

import os
from operator import attrgetter, is_not, methodcaller

from ..compiler.cache import LRU
from ..frontend import capture
from ..masks import index_checks
from . import kernels

__all__ = ["CallPlan", "call_key", "find", "store", "hits", "PLANS"]

#: Plans kept (each holds its kernel, its mods' objects and the mask's tensors).
PLANS = 256
_plans = LRU(PLANS)
#: Calls that found their plan (tests assert hits with it).
hits = 0

_MASK_FIELDS = ("mask_mod", "BLOCK_SIZE", "seq_lengths", "kv_num_blocks", "kv_indices",
                "full_kv_num_blocks", "full_kv_indices")
_MASK_TENSORS = _MASK_FIELDS[3:]
_version_of, _address_of = attrgetter("_version"), methodcaller("data_ptr")

# The two environment variables in the key, read from os.environ's own
# mapping: os.environ.get raises and catches a KeyError for an unset one,
# which costs a microsecond per call.
try:
    _environ = os.environ._data
    _OVERRIDE, _CHECK = (os.environ.encodekey(n) for n in ("FLEXATTN_OVERRIDE_IR",
                                                           index_checks.ENV))
except AttributeError:  # an os.environ without CPython's internals
    _environ, _OVERRIDE, _CHECK = os.environ, "FLEXATTN_OVERRIDE_IR", index_checks.ENV


def _meta(t):
    return type(t), t.shape, t.dtype, t.device


def call_key(query, key, value, score_mod, block_mask, scale, enable_gqa, return_lse,
             return_max, kernel_options, sinks):
    """The plan key of a call (None: not plannable, e.g. options that are not
    a mapping; one that cannot be hashed is never stored nor found)."""
    try:
        options = tuple(sorted(kernel_options.items())) if kernel_options else None
        return (id(score_mod), id(block_mask), type(query), query.shape, query.dtype,
                query.device, type(key), key.shape, key.dtype, key.device, type(value),
                value.shape, value.dtype, value.device, scale, enable_gqa, return_lse,
                return_max, options, None if sinks is None else _meta(sinks),
                _environ.get(_OVERRIDE), _environ.get(_CHECK))
    except (AttributeError, TypeError):
        return None


class CallPlan:
    """A successful call's checked, captured and compiled part: the captured
    tensors (in the kernel's order), the :class:`~.attention.Launch`, and
    the guards under which they stay valid (see the module docstring)."""

    __slots__ = ("score_fn", "block_mask", "mask_fields", "mask_values", "mask_absent",
                 "mask_tensors", "mask_versions", "mask_addresses", "guards", "captures",
                 "launch", "kernel", "tables", "memo")

    def __init__(self, score_fn, block_mask, guards: tuple, captures, launch):
        self.score_fn, self.block_mask = score_fn, block_mask
        present = tuple(n for n in _MASK_FIELDS if hasattr(block_mask, n))
        self.mask_fields = attrgetter(*present, "__class__") if block_mask is not None else None
        self.mask_values = self.mask_fields(block_mask) if block_mask is not None else ()
        self.mask_absent = tuple(n for n in _MASK_FIELDS if n not in present)
        self.mask_tensors = tuple(getattr(block_mask, n) for n in _MASK_TENSORS
                                  if getattr(block_mask, n, None) is not None)
        self.mask_versions = tuple(map(_version_of, self.mask_tensors))
        self.mask_addresses = tuple(map(_address_of, self.mask_tensors))
        self.guards = guards
        self.captures = tuple(captures)
        self.launch = launch
        self.kernel = launch.prepare()  # what a hit launches (checks alignment only)
        self.tables, self.memo = kernels.table_generation, capture.memo_generation

    def holds(self, score_mod, block_mask) -> bool:
        """Whether this plan serves a call with these mods (its key matched)."""
        if score_mod is not self.score_fn or block_mask is not self.block_mask:
            return False
        if self.tables != kernels.table_generation or self.memo != capture.memo_generation:
            return False
        if block_mask is not None:
            try:
                if any(map(is_not, self.mask_fields(block_mask), self.mask_values)):
                    return False
            except AttributeError:  # a field was deleted
                return False
            for name in self.mask_absent:
                if getattr(block_mask, name, None) is not None:
                    return False
            if (tuple(map(_version_of, self.mask_tensors)) != self.mask_versions
                    or tuple(map(_address_of, self.mask_tensors)) != self.mask_addresses):
                return False
        for g in self.guards:
            if not capture.guards_hold(g):
                return False
        return True

    def run(self, query, key, value, sinks):
        """The call at a hit: ``(out, lse, max_scores)``."""
        global hits
        hits += 1
        return self.launch(query, key, value, self.captures, sinks, self.kernel)


def find(key, score_mod, block_mask):
    """The plan stored under ``key`` if its guards hold, else None."""
    if key is None:
        return None
    try:
        plan = _plans.get(key)
    except TypeError:  # a part that cannot be hashed (a scale or an option's value)
        return None
    if plan is None or not plan.holds(score_mod, block_mask):
        return None
    return plan


def store(key, plan: CallPlan) -> None:
    if key is None or os.environ.get("FLEXATTN_OVERRIDE_IR"):
        return
    try:
        _plans[key] = plan
    except TypeError:  # a part that cannot be hashed: never planned
        pass
