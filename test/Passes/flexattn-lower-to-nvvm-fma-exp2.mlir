// RUN: flexattn-opt %s --flexattn-lower-to-nvvm='chip=sm_90a features=+ptx83' | FileCheck %s
// RUN: flexattn-opt %s --flexattn-lower-to-nvvm='chip=sm_90a features=+ptx83' --gpu-module-to-binary=format=isa \
// RUN:   | FileCheck %s --check-prefix=PTX

// An exp2 marked flexattn.fma_exp2 (by flexattn-lower-fragments) becomes
// the FMA-pipe polynomial of OnlineSoftmax.h: x' = max(x, -127); n =
// round(x') through x' + 1.5 2^23; f = x' - n; p(f) in 3 fmas; n << 23
// added to p's bits, negative bits (underflow) clamped to +0. The unmarked
// one stays ex2.approx.
// CHECK-LABEL: llvm.func @softmax_exps(
// CHECK-SAME:    %[[X:[^:]+]]: f32, %[[Y:[^:]+]]: f32
// CHECK-DAG:     %[[LO:.*]] = llvm.mlir.constant(-1.270000e+02 : f32) : f32
// CHECK-DAG:     %[[MAGIC:.*]] = llvm.mlir.constant(0x4B400000 : f32) : f32
// CHECK-DAG:     %[[C23:.*]] = llvm.mlir.constant(23 : i32) : i32
// CHECK-DAG:     %[[ZERO:.*]] = llvm.mlir.constant(0 : i32) : i32
// CHECK:         %[[XC:.*]] = llvm.intr.maxnum(%[[X]], %[[LO]]) : (f32, f32) -> f32
// CHECK-NEXT:    %[[SH:.*]] = llvm.fadd %[[XC]], %[[MAGIC]] : f32
// CHECK-NEXT:    %[[N:.*]] = llvm.fsub %[[SH]], %[[MAGIC]] : f32
// CHECK-NEXT:    %[[F:.*]] = llvm.fsub %[[XC]], %[[N]] : f32
// CHECK-NEXT:    %[[P1:.*]] = llvm.call_intrinsic "llvm.fma.f32"(%{{.*}}, %[[F]], %{{.*}}) : (f32, f32, f32) -> f32
// CHECK-NEXT:    %[[P2:.*]] = llvm.call_intrinsic "llvm.fma.f32"(%[[P1]], %[[F]], %{{.*}}) : (f32, f32, f32) -> f32
// CHECK-NEXT:    %[[P3:.*]] = llvm.call_intrinsic "llvm.fma.f32"(%[[P2]], %[[F]], %{{.*}}) : (f32, f32, f32) -> f32
// CHECK-NEXT:    %[[SHI:.*]] = llvm.bitcast %[[SH]] : f32 to i32
// CHECK-NEXT:    %[[NB:.*]] = llvm.shl %[[SHI]], %[[C23]] : i32
// CHECK-NEXT:    %[[PB:.*]] = llvm.bitcast %[[P3]] : f32 to i32
// CHECK-NEXT:    %[[BITS:.*]] = llvm.add %[[NB]], %[[PB]] : i32
// CHECK-NEXT:    %[[GT:.*]] = llvm.icmp "sgt" %[[BITS]], %[[ZERO]] : i32
// CHECK-NEXT:    %[[POS:.*]] = llvm.select %[[GT]], %[[BITS]], %[[ZERO]] : i1, i32
// CHECK-NEXT:    %[[E:.*]] = llvm.bitcast %[[POS]] : i32 to f32
// CHECK-NOT:     llvm.fma.f32
// CHECK:         llvm.call_intrinsic "llvm.nvvm.ex2.approx.ftz.f32"(%[[Y]])
// CHECK-NOT:     llvm.nvvm.ex2.approx
// CHECK:         llvm.return

// The kernel's PTX holds the 10 FMA- and ALU-pipe instructions, then the one
// ex2.approx (the unmarked exp2).
// PTX:      .visible .entry softmax_exps(
// PTX-NOT:  ex2.approx
// PTX-SAME: max.f32 {{.*}}0fC2FE0000;
// PTX-SAME: add.rn.f32 {{.*}}0f4B400000;
// PTX-SAME: add.rn.f32 {{.*}}0fCB400000;
// PTX-SAME: sub.rn.f32
// PTX-SAME: fma.rn.f32
// PTX-SAME: fma.rn.f32
// PTX-SAME: fma.rn.f32
// PTX-SAME: shl.b32 {{.*}}23;
// PTX-SAME: add.s32
// PTX-SAME: max.s32 {{.*}}, 0;
// PTX-SAME: ex2.approx.ftz.f32
// PTX-NOT:  ex2.approx
module attributes {gpu.container_module} {
  gpu.module @k {
    gpu.func @softmax_exps(%x: f32, %y: f32, %out: memref<2xf32>) kernel {
      %c0 = arith.constant 0 : index
      %c1 = arith.constant 1 : index
      %p = math.exp2 %x {flexattn.fma_exp2} : f32
      %a = math.exp2 %y : f32
      memref.store %p, %out[%c0] : memref<2xf32>
      memref.store %a, %out[%c1] : memref<2xf32>
      gpu.return
    }
  }
}
