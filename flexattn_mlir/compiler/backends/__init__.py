"""The compiler's backends, one module per target family (CPU, GPU): each
takes the module after the target-independent stages and hands on machine
code (a JIT-compiled CPU kernel; PTX, cubin and launch metadata)."""
