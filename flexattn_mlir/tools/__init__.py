"""Tools: the commands over the whole pipeline. Each takes an example variant
(:mod:`flexattn_mlir.examples`) or the user's specs and hands on something to
read or ship: ``flexattn`` prints every compiler stage (:mod:`.cli`),
``flexattn-aot`` writes GPU kernels to a :mod:`flexattn_runtime` artifact
directory (:mod:`.aot`), ``flexattn-demo`` runs variants against torch's
flex_attention (:mod:`.demo`)."""
