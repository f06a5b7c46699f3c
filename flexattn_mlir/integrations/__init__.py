"""Integrations with model libraries. Each submodule imports its library
lazily: importing :mod:`flexattn_mlir` (or this package) imports none of them.

* :mod:`flexattn_mlir.integrations.transformers`: Hugging Face transformers'
  ``AttentionInterface`` / ``AttentionMaskInterface`` through one
  :func:`~flexattn_mlir.integrations.transformers.register` call.
"""
