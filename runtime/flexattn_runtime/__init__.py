"""flexattn_runtime: launch compiled flexattn kernels (PTX/cubin + JSON
metadata) on torch CUDA tensors through the CUDA driver. Needs neither MLIR
nor torch-mlir."""
