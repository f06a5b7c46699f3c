// RUN: flexattn-opt %s --flexattn-lower-to-nvvm='chip=sm_90a features=+ptx83' | FileCheck %s
// RUN: flexattn-opt %s --pass-pipeline='builtin.module(flexattn-lower-to-nvvm{chip=sm_90a features=+ptx83 opt-level=1})' \
// RUN:   | FileCheck %s --check-prefix=TARGET

// The math user mods use most becomes the special-function unit's NVVM
// intrinsics: no libdevice calls, no math ops left, no inline asm; f32
// division by a constant is a multiply.

// TARGET: gpu.module @k [#nvvm.target<O = 1, chip = "sm_90a", features = "+ptx83">]
// CHECK:  gpu.module @k [#nvvm.target<O = 3, chip = "sm_90a", features = "+ptx83">]
// CHECK-NOT: llvm.func @__nv_
// CHECK-NOT: llvm.inline_asm
// CHECK:  llvm.func @mods(
// CHECK-SAME: nvvm.kernel
// softcap: 30 * tanh(x / 30): the division by 30 became a multiply by 1/30 ...
// CHECK:    %[[INV30:.*]] = llvm.mlir.constant(0.0333333351 : f32) : f32
// CHECK:    llvm.fmul %{{.*}}, %[[INV30]]
// ... and tanh: ex2 of 2|x| log2(e), rcp.approx, copysign.
// CHECK:    llvm.call_intrinsic "llvm.fabs.f32"
// CHECK:    llvm.call_intrinsic "llvm.nvvm.ex2.approx.ftz.f32"
// CHECK:    nvvm.rcp.approx.ftz.f
// CHECK:    llvm.call_intrinsic "llvm.copysign.f32"
// exp(x) = ex2(x log2(e)); log(x) = lg2(x) ln(2)
// CHECK:    llvm.call_intrinsic "llvm.nvvm.ex2.approx.ftz.f32"
// CHECK:    llvm.call_intrinsic "llvm.nvvm.lg2.approx.ftz.f"
// A division by a run-time value: div.full.
// CHECK:    llvm.call_intrinsic "llvm.nvvm.div.full"
// abs, floor: one intrinsic each; max: an intrinsic; no libdevice calls.
// CHECK:    llvm.call_intrinsic "llvm.fabs.f32"
// CHECK:    llvm.call_intrinsic "llvm.floor.f32"
// CHECK:    llvm.intr.maxnum
// CHECK-NOT: math.
module attributes {gpu.container_module} {
  gpu.module @k {
    gpu.func @mods(%out: memref<4xf32>, %x: f32, %y: f32) kernel {
      %c30 = arith.constant 30.0 : f32
      %a = arith.divf %x, %c30 : f32
      %t = math.tanh %a : f32
      %sc = arith.mulf %t, %c30 : f32
      %e = math.exp %x : f32
      %l = math.log %y : f32
      %d0 = arith.divf %x, %y : f32
      %ab = math.absf %d0 : f32
      %fl = math.floor %ab : f32
      %d = arith.maxnumf %fl, %x : f32
      %c0 = arith.constant 0 : index
      %c1 = arith.constant 1 : index
      %c2 = arith.constant 2 : index
      %c3 = arith.constant 3 : index
      memref.store %sc, %out[%c0] : memref<4xf32>
      memref.store %e, %out[%c1] : memref<4xf32>
      memref.store %l, %out[%c2] : memref<4xf32>
      memref.store %d, %out[%c3] : memref<4xf32>
      gpu.return
    }
  }
}
