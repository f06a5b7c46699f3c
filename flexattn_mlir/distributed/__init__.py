"""Context parallelism: flex_attention over a sequence sharded across ranks.

It takes this rank's shards of q, k, v (and of per-token tensors the mods
read) and a ``torch.distributed`` process group (gloo on CPUs, NCCL on
GPUs), and hands on this rank's rows of ``out`` and ``lse``, equal to a
one-process call's, with gradients through the backward. The pieces:

* :mod:`.sharding`: :class:`SequenceSharding`, which positions each rank
  holds (contiguous, zig-zag head-tail, block-mask-aware), and the shard /
  unshard helpers;
* :mod:`.mask`: :func:`create_cp_block_mask`, this rank's block masks, and
  the mods rewritten to see global indices through captured index tables;
* :mod:`.attention`: :func:`context_parallel_flex_attention`, K/V by
  all-gather or by a ring that overlaps transfer and compute, partial
  results merged by lse, and the backward across ranks;
* :mod:`.comm`: the collectives.

See docs/context-parallel.md.
"""

from .attention import context_parallel_flex_attention
from .mask import CPBlockMask, create_cp_block_mask
from .sharding import SequenceSharding, context_parallel_shard, context_parallel_unshard

__all__ = ["SequenceSharding", "context_parallel_shard", "context_parallel_unshard",
           "CPBlockMask", "create_cp_block_mask", "context_parallel_flex_attention"]
