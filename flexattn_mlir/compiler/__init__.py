"""The compiler: takes an :class:`~.spec.AttentionSpec` (shapes, dtypes, the
mods as :class:`~.mods.ModIR` region text) with :class:`~.options.CompileOptions`
and hands on a compiled kernel: the staged driver builds the
``flexattn.attention`` module and runs the stages of the backend registered
for ``options.target`` (``backends/``), keyed in the cache by everything that
changes the generated code."""
