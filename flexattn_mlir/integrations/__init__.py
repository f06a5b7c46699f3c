"""Integrations with model libraries: each takes a library's attention
hook (its call convention, masks and config) and hands on calls of our
``flex_attention`` with a shared block mask. Each submodule imports its
library lazily: importing :mod:`flexattn_mlir` (or this package) imports
none of them.

* :mod:`flexattn_mlir.integrations.transformers`: Hugging Face transformers'
  ``AttentionInterface`` / ``AttentionMaskInterface`` through one
  :func:`~flexattn_mlir.integrations.transformers.register` call.
"""
