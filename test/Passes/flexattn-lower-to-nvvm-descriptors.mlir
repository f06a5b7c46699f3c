// RUN: flexattn-opt %s --flexattn-lower-to-nvvm='chip=sm_80 features=+ptx70 bare-pointers=0' | FileCheck %s
// RUN: not flexattn-opt %s --flexattn-lower-to-nvvm='chip=sm_80 features=+ptx70' 2>&1 | FileCheck %s --check-prefix=BARE

// A dynamic-shape kernel (CompileOptions.dynamic) takes memref descriptors
// (bare-pointers=0): each memref argument is its allocated and aligned
// pointer, offset, sizes and strides (q: 3 + 2 x 4 parameters), and the
// kernel reads its run-time sizes from them: q's M is parameter 5.
// CHECK:       llvm.func @dyn(%{{[^:]+}}: !llvm.ptr, %{{[^:]+}}: !llvm.ptr, %{{[^:]+}}: i64, %{{[^:]+}}: i64, %{{[^:]+}}: i64, %[[M:[^:]+]]: i64, %{{[^:]+}}: i64, %{{[^:]+}}: i64, %{{[^:]+}}: i64, %{{[^:]+}}: i64, %{{[^:]+}}: i64, %{{[^:]+}}: !llvm.ptr, %[[OUT:[^:]+]]: !llvm.ptr, %{{[^:]+}}: i64, %{{[^:]+}}: i64, %{{[^:]+}}: i64)
// CHECK-SAME:  nvvm.kernel
// CHECK:         llvm.store %[[M]], %[[OUT]] : i64, !llvm.ptr
// Bare pointers (the default) need static shapes: upstream's conversion
// refuses the kernel.
// BARE: error: failed to legalize operation 'gpu.func'
module attributes {gpu.container_module} {
  gpu.module @k {
    gpu.func @dyn(%q: memref<?x4x?x64xbf16>, %out: memref<?xi64>) kernel {
      %c0 = arith.constant 0 : index
      %c2 = arith.constant 2 : index
      %m = memref.dim %q, %c2 : memref<?x4x?x64xbf16>
      %mi = arith.index_cast %m : index to i64
      memref.store %mi, %out[%c0] : memref<?xi64>
      gpu.return
    }
  }
}
