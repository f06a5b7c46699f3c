"""Execution: takes torch tensors and the mods' IR, checks the arguments,
finds or compiles the kernel (the compiler, its caches, GPU artifact stores)
and hands on the call's results: the forward on CPU or CUDA tensors
(:mod:`.attention`), and the differentiable ``torch.library`` ops whose
backward runs the compiled backward kernel (:mod:`.autograd`)."""
