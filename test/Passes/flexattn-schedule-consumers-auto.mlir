// RUN: flexattn-opt %s --flexattn-schedule-consumers | FileCheck %s

// pv-wait=auto: a score_mod of plain arithmetic takes the wait for each
// P.V at the next step's start (float32 P carried, four reduction chains);
// one that calls the special-function unit (math.tanh) keeps the wait in
// the step, after the softmax (held until alpha with two consumer groups:
// flexattn-schedule-consumers.mlir).
// CHECK-LABEL: func.func @arithmetic_score_mod(
// CHECK:         scf.for {{.*}} -> (i32, vector<2xf32>, vector<2xf32>, vector<32xf32>, vector<64xbf16>, vector<64xf32>, vector<2xf32>, i1, i32) {
// CHECK-NEXT:      flexattn.mma.wait pending(0)
// CHECK:           flexattn.frag.softmax {{.*}} {flexattn.probs_rounded, flexattn.reduce_chains = 4 : i64
// CHECK:           } : vector<64xf32>, vector<2xf32> -> vector<64xf32>
// CHECK-LABEL: func.func @tanh_score_mod(
// CHECK:         scf.for {{.*}} -> (i32, vector<2xf32>, vector<2xf32>, vector<32xf32>, vector<64xbf16>) {
// CHECK-NOT:       flexattn.reduce_chains
// CHECK:           flexattn.frag.softmax
// CHECK-SAME:        flexattn.max_chains = 4 : i64
// CHECK:           math.tanh
// CHECK:           } : vector<64xf32>, vector<2xf32> -> vector<64xbf16>
// Three consumer groups (192-row Q tiles): the wait is not held until alpha
// (pv-wait=alpha measured slower there).
// CHECK-NEXT:      flexattn.mma.wait pending(0) %{{[^ ]*}}, %{{[^ ]*}} : vector<32xf32>, vector<64xbf16>
// Three consumer groups whose mask reads a captured buffer (the document
// mask): each row max stays one chain (the four chains' registers spill at
// the 128 a thread of 512 has).
// CHECK-LABEL: func.func @captured_mask(
// CHECK-NOT:       flexattn.max_chains
// CHECK:           memref.load
// CHECK:           } : vector<64xf32>, vector<2xf32> -> vector<64xbf16>
// Two consumer groups at D = 64 (128-row tiles, no score_mod): the step's
// wait, not held (pv-wait=alpha measured slower at D = 64).
// CHECK-LABEL: func.func @two_groups_d64(
// CHECK-NOT:       flexattn.max_chains
// CHECK:           : vector<64xf32>, vector<2xf32> -> vector<64xbf16>
// CHECK-NEXT:      flexattn.mma.wait pending(0) %{{[^ ]*}}, %{{[^ ]*}} : vector<32xf32>, vector<64xbf16>
func.func @arithmetic_score_mod(%o: memref<1x2x300x64xbf16>, %b: index, %h: index, %q0: index,
                        %n0: index) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c64 = arith.constant 64 : index
  %c128 = arith.constant 128 : index
  %c0_i32 = arith.constant 0 : i32
  %c1_i32 = arith.constant 1 : i32
  %ninf = arith.constant dense<0xFF800000> : vector<2xf32>
  %zero2 = arith.constant dense<0.0> : vector<2xf32>
  %zero = arith.constant dense<0.0> : vector<32xf32>
  %qr = flexattn.ring.alloc consumers(384) : !flexattn.ring<1 x 192x64xbf16>
  %kr = flexattn.ring.alloc consumers(384) : !flexattn.ring<2 x 128x64xbf16>
  %vr = flexattn.ring.alloc consumers(384) : !flexattn.ring<2 x 128x64xbf16>
  flexattn.warp_specialize producer(threads = 128, registers = 32) {
  ^bb0(%thread: index):
  } consumers(groups = 3, threads = 128, registers = 160) {
  ^bb0(%group: index, %thread: index):
    %band = arith.muli %group, %c64 : index
    %row = arith.addi %q0, %band : index
    flexattn.ring.wait %qr[%c0_i32] : !flexattn.ring<1 x 192x64xbf16>
    %q = flexattn.ring.slot %qr[%c0_i32] : !flexattn.ring<1 x 192x64xbf16>
    %r0:4 = scf.for %j = %c0 to %n0 step %c1 iter_args(%i = %c0_i32, %m = %ninf, %l = %zero2, %acc = %zero)
        -> (i32, vector<2xf32>, vector<2xf32>, vector<32xf32>) {
      %kv0 = arith.muli %j, %c128 : index
      flexattn.ring.wait %kr[%i] : !flexattn.ring<2 x 128x64xbf16>
      %k = flexattn.ring.slot %kr[%i] : !flexattn.ring<2 x 128x64xbf16>
      %s0 = flexattn.mma %q[%band], %k {transpose_b} : !flexattn.smem_tile<192x64xbf16>, !flexattn.smem_tile<128x64xbf16> -> vector<64xf32>
      %s = flexattn.mma.wait pending(0) %s0 : vector<64xf32>
      flexattn.ring.release %kr[%i] : !flexattn.ring<2 x 128x64xbf16>
      %p, %m1, %l1, %alpha = flexattn.frag.softmax %s state(%m, %l) at(%b, %h, %row, %kv0)
          attributes {scale = 0.125 : f32, seq_lens = array<i64: 300, 300>, tile_size = array<i64: 192, 128>}
        score_mod {
        ^bb0(%x: f32, %bb: i32, %hh: i32, %qi: i32, %kj: i32):
          %d = arith.subi %qi, %kj : i32
          %df = arith.sitofp %d : i32 to f32
          %y = arith.addf %x, %df : f32
          flexattn.yield %y : f32
        } : vector<64xf32>, vector<2xf32> -> vector<64xbf16>
      %acc1 = flexattn.frag.rescale %acc, %alpha : vector<32xf32>, vector<2xf32>
      flexattn.ring.wait %vr[%i] : !flexattn.ring<2 x 128x64xbf16>
      %v = flexattn.ring.slot %vr[%i] : !flexattn.ring<2 x 128x64xbf16>
      %o0 = flexattn.mma %p, %v, %acc1 : vector<64xbf16>, !flexattn.smem_tile<128x64xbf16>, vector<32xf32> -> vector<32xf32>
      %o1:2 = flexattn.mma.wait pending(0) %o0, %p : vector<32xf32>, vector<64xbf16>
      flexattn.ring.release %vr[%i] : !flexattn.ring<2 x 128x64xbf16>
      %i1 = arith.addi %i, %c1_i32 : i32
      scf.yield %i1, %m1, %l1, %o1#0 : i32, vector<2xf32>, vector<2xf32>, vector<32xf32>
    }
    flexattn.ring.release %qr[%c0_i32] : !flexattn.ring<1 x 192x64xbf16>
    flexattn.frag.finalize %r0#3 state(%r0#1, %r0#2) outs(%o : memref<1x2x300x64xbf16>) at(%b, %h, %row, %c0) : vector<32xf32>, vector<2xf32>
  }
  return
}

func.func @tanh_score_mod(%o: memref<1x2x300x64xbf16>, %b: index, %h: index, %q0: index,
                        %n0: index) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c64 = arith.constant 64 : index
  %c128 = arith.constant 128 : index
  %c0_i32 = arith.constant 0 : i32
  %c1_i32 = arith.constant 1 : i32
  %ninf = arith.constant dense<0xFF800000> : vector<2xf32>
  %zero2 = arith.constant dense<0.0> : vector<2xf32>
  %zero = arith.constant dense<0.0> : vector<32xf32>
  %qr = flexattn.ring.alloc consumers(384) : !flexattn.ring<1 x 192x64xbf16>
  %kr = flexattn.ring.alloc consumers(384) : !flexattn.ring<2 x 128x64xbf16>
  %vr = flexattn.ring.alloc consumers(384) : !flexattn.ring<2 x 128x64xbf16>
  flexattn.warp_specialize producer(threads = 128, registers = 32) {
  ^bb0(%thread: index):
  } consumers(groups = 3, threads = 128, registers = 160) {
  ^bb0(%group: index, %thread: index):
    %band = arith.muli %group, %c64 : index
    %row = arith.addi %q0, %band : index
    flexattn.ring.wait %qr[%c0_i32] : !flexattn.ring<1 x 192x64xbf16>
    %q = flexattn.ring.slot %qr[%c0_i32] : !flexattn.ring<1 x 192x64xbf16>
    %r0:4 = scf.for %j = %c0 to %n0 step %c1 iter_args(%i = %c0_i32, %m = %ninf, %l = %zero2, %acc = %zero)
        -> (i32, vector<2xf32>, vector<2xf32>, vector<32xf32>) {
      %kv0 = arith.muli %j, %c128 : index
      flexattn.ring.wait %kr[%i] : !flexattn.ring<2 x 128x64xbf16>
      %k = flexattn.ring.slot %kr[%i] : !flexattn.ring<2 x 128x64xbf16>
      %s0 = flexattn.mma %q[%band], %k {transpose_b} : !flexattn.smem_tile<192x64xbf16>, !flexattn.smem_tile<128x64xbf16> -> vector<64xf32>
      %s = flexattn.mma.wait pending(0) %s0 : vector<64xf32>
      flexattn.ring.release %kr[%i] : !flexattn.ring<2 x 128x64xbf16>
      %p, %m1, %l1, %alpha = flexattn.frag.softmax %s state(%m, %l) at(%b, %h, %row, %kv0)
          attributes {scale = 0.125 : f32, seq_lens = array<i64: 300, 300>, tile_size = array<i64: 192, 128>}
        score_mod {
        ^bb0(%x: f32, %bb: i32, %hh: i32, %qi: i32, %kj: i32):
          %y = math.tanh %x : f32
          flexattn.yield %y : f32
        } : vector<64xf32>, vector<2xf32> -> vector<64xbf16>
      %acc1 = flexattn.frag.rescale %acc, %alpha : vector<32xf32>, vector<2xf32>
      flexattn.ring.wait %vr[%i] : !flexattn.ring<2 x 128x64xbf16>
      %v = flexattn.ring.slot %vr[%i] : !flexattn.ring<2 x 128x64xbf16>
      %o0 = flexattn.mma %p, %v, %acc1 : vector<64xbf16>, !flexattn.smem_tile<128x64xbf16>, vector<32xf32> -> vector<32xf32>
      %o1:2 = flexattn.mma.wait pending(0) %o0, %p : vector<32xf32>, vector<64xbf16>
      flexattn.ring.release %vr[%i] : !flexattn.ring<2 x 128x64xbf16>
      %i1 = arith.addi %i, %c1_i32 : i32
      scf.yield %i1, %m1, %l1, %o1#0 : i32, vector<2xf32>, vector<2xf32>, vector<32xf32>
    }
    flexattn.ring.release %qr[%c0_i32] : !flexattn.ring<1 x 192x64xbf16>
    flexattn.frag.finalize %r0#3 state(%r0#1, %r0#2) outs(%o : memref<1x2x300x64xbf16>) at(%b, %h, %row, %c0) : vector<32xf32>, vector<2xf32>
  }
  return
}
func.func @captured_mask(%o: memref<1x2x300x64xbf16>, %doc: memref<300xi32>, %b: index, %h: index, %q0: index,
                        %n0: index) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c64 = arith.constant 64 : index
  %c128 = arith.constant 128 : index
  %c0_i32 = arith.constant 0 : i32
  %c1_i32 = arith.constant 1 : i32
  %ninf = arith.constant dense<0xFF800000> : vector<2xf32>
  %zero2 = arith.constant dense<0.0> : vector<2xf32>
  %zero = arith.constant dense<0.0> : vector<32xf32>
  %qr = flexattn.ring.alloc consumers(384) : !flexattn.ring<1 x 192x64xbf16>
  %kr = flexattn.ring.alloc consumers(384) : !flexattn.ring<2 x 128x64xbf16>
  %vr = flexattn.ring.alloc consumers(384) : !flexattn.ring<2 x 128x64xbf16>
  flexattn.warp_specialize producer(threads = 128, registers = 32) {
  ^bb0(%thread: index):
  } consumers(groups = 3, threads = 128, registers = 160) {
  ^bb0(%group: index, %thread: index):
    %band = arith.muli %group, %c64 : index
    %row = arith.addi %q0, %band : index
    flexattn.ring.wait %qr[%c0_i32] : !flexattn.ring<1 x 192x64xbf16>
    %q = flexattn.ring.slot %qr[%c0_i32] : !flexattn.ring<1 x 192x64xbf16>
    %r0:4 = scf.for %j = %c0 to %n0 step %c1 iter_args(%i = %c0_i32, %m = %ninf, %l = %zero2, %acc = %zero)
        -> (i32, vector<2xf32>, vector<2xf32>, vector<32xf32>) {
      %kv0 = arith.muli %j, %c128 : index
      flexattn.ring.wait %kr[%i] : !flexattn.ring<2 x 128x64xbf16>
      %k = flexattn.ring.slot %kr[%i] : !flexattn.ring<2 x 128x64xbf16>
      %s0 = flexattn.mma %q[%band], %k {transpose_b} : !flexattn.smem_tile<192x64xbf16>, !flexattn.smem_tile<128x64xbf16> -> vector<64xf32>
      %s = flexattn.mma.wait pending(0) %s0 : vector<64xf32>
      flexattn.ring.release %kr[%i] : !flexattn.ring<2 x 128x64xbf16>
      %p, %m1, %l1, %alpha = flexattn.frag.softmax %s state(%m, %l) at(%b, %h, %row, %kv0)
          captures(%doc : memref<300xi32>)
          attributes {masked, scale = 0.125 : f32, seq_lens = array<i64: 300, 300>, tile_size = array<i64: 192, 128>}
        mask_mod {
        ^bb0(%bb: i32, %hh: i32, %qi: i32, %kj: i32, %ids: memref<300xi32>):
          %qx = arith.index_cast %qi : i32 to index
          %kx = arith.index_cast %kj : i32 to index
          %dq = memref.load %ids[%qx] : memref<300xi32>
          %dk = memref.load %ids[%kx] : memref<300xi32>
          %same = arith.cmpi eq, %dq, %dk : i32
          flexattn.yield %same : i1
        } : vector<64xf32>, vector<2xf32> -> vector<64xbf16>
      %acc1 = flexattn.frag.rescale %acc, %alpha : vector<32xf32>, vector<2xf32>
      flexattn.ring.wait %vr[%i] : !flexattn.ring<2 x 128x64xbf16>
      %v = flexattn.ring.slot %vr[%i] : !flexattn.ring<2 x 128x64xbf16>
      %o0 = flexattn.mma %p, %v, %acc1 : vector<64xbf16>, !flexattn.smem_tile<128x64xbf16>, vector<32xf32> -> vector<32xf32>
      %o1:2 = flexattn.mma.wait pending(0) %o0, %p : vector<32xf32>, vector<64xbf16>
      flexattn.ring.release %vr[%i] : !flexattn.ring<2 x 128x64xbf16>
      %i1 = arith.addi %i, %c1_i32 : i32
      scf.yield %i1, %m1, %l1, %o1#0 : i32, vector<2xf32>, vector<2xf32>, vector<32xf32>
    }
    flexattn.ring.release %qr[%c0_i32] : !flexattn.ring<1 x 192x64xbf16>
    flexattn.frag.finalize %r0#3 state(%r0#1, %r0#2) outs(%o : memref<1x2x300x64xbf16>) at(%b, %h, %row, %c0) : vector<32xf32>, vector<2xf32>
  }
  return
}

func.func @two_groups_d64(%o: memref<1x2x300x64xbf16>, %b: index, %h: index, %q0: index,
                        %n0: index) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c64 = arith.constant 64 : index
  %c128 = arith.constant 128 : index
  %c0_i32 = arith.constant 0 : i32
  %c1_i32 = arith.constant 1 : i32
  %ninf = arith.constant dense<0xFF800000> : vector<2xf32>
  %zero2 = arith.constant dense<0.0> : vector<2xf32>
  %zero = arith.constant dense<0.0> : vector<32xf32>
  %qr = flexattn.ring.alloc consumers(256) : !flexattn.ring<1 x 128x64xbf16>
  %kr = flexattn.ring.alloc consumers(256) : !flexattn.ring<2 x 128x64xbf16>
  %vr = flexattn.ring.alloc consumers(256) : !flexattn.ring<2 x 128x64xbf16>
  flexattn.warp_specialize producer(threads = 128, registers = 32) {
  ^bb0(%thread: index):
  } consumers(groups = 2, threads = 128, registers = 160) {
  ^bb0(%group: index, %thread: index):
    %band = arith.muli %group, %c64 : index
    %row = arith.addi %q0, %band : index
    flexattn.ring.wait %qr[%c0_i32] : !flexattn.ring<1 x 128x64xbf16>
    %q = flexattn.ring.slot %qr[%c0_i32] : !flexattn.ring<1 x 128x64xbf16>
    %r0:4 = scf.for %j = %c0 to %n0 step %c1 iter_args(%i = %c0_i32, %m = %ninf, %l = %zero2, %acc = %zero)
        -> (i32, vector<2xf32>, vector<2xf32>, vector<32xf32>) {
      %kv0 = arith.muli %j, %c128 : index
      flexattn.ring.wait %kr[%i] : !flexattn.ring<2 x 128x64xbf16>
      %k = flexattn.ring.slot %kr[%i] : !flexattn.ring<2 x 128x64xbf16>
      %s0 = flexattn.mma %q[%band], %k {transpose_b} : !flexattn.smem_tile<128x64xbf16>, !flexattn.smem_tile<128x64xbf16> -> vector<64xf32>
      %s = flexattn.mma.wait pending(0) %s0 : vector<64xf32>
      flexattn.ring.release %kr[%i] : !flexattn.ring<2 x 128x64xbf16>
      %p, %m1, %l1, %alpha = flexattn.frag.softmax %s state(%m, %l) at(%b, %h, %row, %kv0)
          attributes {scale = 0.125 : f32, seq_lens = array<i64: 300, 300>, tile_size = array<i64: 128, 128>}
          : vector<64xf32>, vector<2xf32> -> vector<64xbf16>
      %acc1 = flexattn.frag.rescale %acc, %alpha : vector<32xf32>, vector<2xf32>
      flexattn.ring.wait %vr[%i] : !flexattn.ring<2 x 128x64xbf16>
      %v = flexattn.ring.slot %vr[%i] : !flexattn.ring<2 x 128x64xbf16>
      %o0 = flexattn.mma %p, %v, %acc1 : vector<64xbf16>, !flexattn.smem_tile<128x64xbf16>, vector<32xf32> -> vector<32xf32>
      %o1:2 = flexattn.mma.wait pending(0) %o0, %p : vector<32xf32>, vector<64xbf16>
      flexattn.ring.release %vr[%i] : !flexattn.ring<2 x 128x64xbf16>
      %i1 = arith.addi %i, %c1_i32 : i32
      scf.yield %i1, %m1, %l1, %o1#0 : i32, vector<2xf32>, vector<2xf32>, vector<32xf32>
    }
    flexattn.ring.release %qr[%c0_i32] : !flexattn.ring<1 x 128x64xbf16>
    flexattn.frag.finalize %r0#3 state(%r0#1, %r0#2) outs(%o : memref<1x2x300x64xbf16>) at(%b, %h, %row, %c0) : vector<32xf32>, vector<2xf32>
  }
  return
}
