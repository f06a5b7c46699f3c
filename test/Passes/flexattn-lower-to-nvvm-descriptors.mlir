// RUN: flexattn-opt %s --flexattn-lower-to-nvvm='chip=sm_80 features=+ptx70 bare-pointers=0' | FileCheck %s
// RUN: not flexattn-opt %s --flexattn-lower-to-nvvm='chip=sm_80 features=+ptx70' 2>&1 | FileCheck %s --check-prefix=BARE

// A dynamic-shape kernel (CompileOptions.dynamic) takes memref descriptors
// (bare-pointers=0): each memref argument is its allocated and aligned
// pointer, offset, sizes and strides, and the kernel reads its run-time
// sizes from them (memref.dim of q's M: the descriptor's size 2).
// CHECK:       llvm.func @dyn(%[[QA:[^:]+]]: !llvm.ptr, %[[QP:[^:]+]]: !llvm.ptr, %{{[^:]+}}: i64, %[[B:[^:]+]]: i64, %{{[^:]+}}: i64, %[[M:[^:]+]]: i64, %{{[^:]+}}: i64, %{{[^:]+}}: i64, %{{[^:]+}}: i64, %{{[^:]+}}: i64, %{{[^:]+}}: i64
// CHECK-SAME:  nvvm.kernel
// CHECK:         llvm.insertvalue %[[M]], %{{.*}}[3, 2]
// Bare pointers need static shapes: upstream's conversion refuses the kernel.
// BARE: error
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
