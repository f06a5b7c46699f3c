// RUN: flexattn-opt %s --flexattn-schedule-consumers | FileCheck %s --check-prefixes=CHECK,HOLD
// RUN: flexattn-opt %s --flexattn-schedule-consumers=pingpong=0 | FileCheck %s --check-prefix=NOPP --implicit-check-not=nvvm.barrier
// RUN: flexattn-opt %s --flexattn-schedule-consumers="pipeline=0 pingpong=0" | FileCheck %s --check-prefix=SERIAL --implicit-check-not=nvvm.barrier
// RUN: flexattn-opt %s --flexattn-schedule-consumers=pv-wait=next-step | FileCheck %s --check-prefix=NEXT
// RUN: flexattn-opt %s --flexattn-schedule-consumers=pv-wait=alpha | FileCheck %s --check-prefixes=CHECK,HOLD
// RUN: flexattn-opt %s --flexattn-schedule-consumers=pv-wait=step | FileCheck %s --check-prefixes=CHECK,STEP
// RUN: not flexattn-opt %s --flexattn-schedule-consumers=pv-wait=later 2>&1 | FileCheck %s --check-prefix=BADWAIT
// BADWAIT: pv-wait must be auto, step, alpha or next-step, got 'later'

// pipeline + pingpong. Group 1 opens group 0's first turn.
// CHECK-LABEL: func.func @consumers(
// CHECK:       } consumers(groups = 2, threads = 128, registers = 232) {
// CHECK-NEXT:  ^bb0(%[[G:.*]]: index, %{{.*}}: index):
// CHECK:         %[[GI:.*]] = arith.index_cast %[[G]] : index to i32
// CHECK:         %[[SECOND:.*]] = arith.cmpi eq, %[[GI]], %{{.*}} : i32
// CHECK:         scf.if %[[SECOND]] {
// CHECK:           nvvm.barrier.arrive id = %{{.*}} number_of_threads = %{{.*}}
// CHECK:         %[[Q:.*]] = flexattn.ring.slot %{{.*}}[%[[FIRST:.*]]] : !flexattn.ring<1 x 128x128xbf16>
// P starts at 0; it is carried through both KV loops.
// CHECK:         %[[P0:.*]] = arith.constant dense<0.000000e+00> : vector<64xbf16>
// CHECK:         %[[R0:.*]]:5 = scf.for {{.*}} iter_args(%[[I:[^ ]*]] = %[[FIRST]], %{{[^ ]*}} = %{{.*}}, %{{[^ ]*}} = %{{.*}}, %[[ACC:[^ ]*]] = %{{.*}}, %[[PP:[^ ]*]] = %[[P0]]) -> (i32, vector<2xf32>, vector<2xf32>, vector<64xf32>, vector<64xbf16>) {
// Wait for K_j; this group's turn: S_j = Q.K_jᵀ, then, after the first
// step, the wait for V_{j-1} (the first step reads the Q tile in place of
// V, P = 0) and O += P_{j-1}.V_{j-1}.
// CHECK:           flexattn.ring.wait %[[KR:.*]][%[[I]]]
// CHECK:           %[[K:.*]] = flexattn.ring.slot %[[KR]][%[[I]]]
// CHECK:           nvvm.barrier id = %{{.*}} number_of_threads = %{{.*}}
// CHECK-NEXT:      %[[S0:.*]] = flexattn.mma %[[Q]][%{{.*}}], %[[K]] {transpose_b}
// CHECK-NEXT:      %[[HAS:.*]] = arith.cmpi ugt, %[[I]], %[[FIRST]] : i32
// CHECK:           %[[PREV:.*]] = arith.select %[[HAS]], %{{.*}}, %{{.*}} : i32
// CHECK:           scf.if %[[HAS]] {
// CHECK-NEXT:        flexattn.ring.wait %[[VR:.*]][%[[PREV]]]
// CHECK:           %[[VS:.*]] = flexattn.ring.slot %[[VR]][%[[PREV]]]
// CHECK:           %[[QV:.*]] = flexattn.smem_tile.reinterpret %[[Q]]
// CHECK:           %[[VP:.*]] = arith.select %[[HAS]], %[[VS]], %[[QV]] : !flexattn.smem_tile<128x128xbf16>
// CHECK-NEXT:      %[[O0:.*]] = flexattn.mma %[[PP]], %[[VP]], %[[ACC]] : vector<64xbf16>, !flexattn.smem_tile<128x128xbf16>, vector<64xf32> -> vector<64xf32>
// CHECK:           nvvm.barrier.arrive id = %{{.*}} number_of_threads = %{{.*}}
// Only S is waited for before the softmax; P.V runs on.
// CHECK-NEXT:      %[[S:.*]] = flexattn.mma.wait pending(1) %[[S0]] : vector<64xf32>
// CHECK-NEXT:      flexattn.ring.release %[[KR]][%[[I]]]
// pv-wait=alpha (auto's choice for two consumer groups without a score_mod
// of plain arithmetic): the wait is held until the first row's alpha, so
// ptxas issues it after the row maxima and the first exponentials; the max runs as four
// chains. pv-wait=step: the wait alone (ptxas issues it after the first
// row's max).
// CHECK:           %[[P:.*]], %{{.*}}, %{{.*}}, %[[ALPHA:.*]] = flexattn.frag.softmax %[[S]]
// HOLD-SAME:         flexattn.max_chains = 4 : i64
// STEP-NOT:          flexattn.max_chains
// HOLD:            %[[A0:.*]] = vector.extract_strided_slice %[[ALPHA]] {offsets = [0], sizes = [1], strides = [1]} : vector<2xf32> to vector<1xf32>
// HOLD-NEXT:       %[[O:.*]]:2 = flexattn.mma.wait pending(0) %[[O0]], %[[PP]] after(%[[A0]] : vector<1xf32>) : vector<64xf32>, vector<64xbf16>
// STEP:            %[[O:.*]]:2 = flexattn.mma.wait pending(0) %[[O0]], %[[PP]] : vector<64xf32>, vector<64xbf16>
// CHECK-NEXT:      scf.if %[[HAS]] {
// CHECK-NEXT:        flexattn.ring.release %[[VR]][%[[PREV]]]
// CHECK:           %[[ACC1:.*]] = flexattn.frag.rescale %[[O]]#0, %[[ALPHA]] : vector<64xf32>, vector<2xf32>
// CHECK:           scf.yield %{{.*}}, %{{.*}}, %{{.*}}, %[[ACC1]], %[[P]] :
// The second loop continues from the first's P and position.
// CHECK:         %[[R1:.*]]:5 = scf.for {{.*}} iter_args({{.*}} = %[[R0]]#0, {{.*}} = %[[R0]]#4)
// CHECK:           flexattn.frag.softmax
// CHECK-NOT:         mask_mod
// The last step's P.V after the loops, then Q goes back and the epilogue.
// CHECK:         %[[LHAS:.*]] = arith.cmpi ugt, %[[R1]]#0, %[[FIRST]] : i32
// CHECK:         %[[OL:.*]] = flexattn.mma %[[R1]]#4, %{{.*}}, %[[R1]]#3
// CHECK-NEXT:    %[[OW:.*]]:2 = flexattn.mma.wait pending(0) %[[OL]], %[[R1]]#4
// CHECK:         flexattn.ring.release %{{.*}}[%[[FIRST]]] : !flexattn.ring<1 x 128x128xbf16>
// CHECK-NEXT:    flexattn.frag.finalize %[[OW]]#0 state(%[[R1]]#1, %[[R1]]#2)

// pv-wait=next-step (auto takes it where the softmax has a score_mod; this
// one has a mask_mod only, so auto waits in the step, above): the wait for
// a step's P.V opens the next step, so ptxas cannot hoist it above the
// softmax's exponentials; the softmax yields float32 P (rounded after that
// wait) and reduces its rows as four chains.
// NEXT-LABEL: func.func @consumers(
// NEXT:         %[[Q:.*]] = flexattn.ring.slot %{{.*}}[%[[FIRST:.*]]] : !flexattn.ring<1 x 128x128xbf16>
// Nothing is in flight before the first step: P = 0 (16-bit, and the
// float32 P the next step rounds), alpha = 1, no V slot held.
// NEXT-DAG:     %[[P0:.*]] = arith.constant dense<0.000000e+00> : vector<64xbf16>
// NEXT-DAG:     %[[PF0:.*]] = arith.constant dense<0.000000e+00> : vector<64xf32>
// NEXT-DAG:     %[[A0:.*]] = arith.constant dense<1.000000e+00> : vector<2xf32>
// NEXT-DAG:     %[[NOV:.*]] = arith.constant false
// NEXT:         %[[R0:.*]]:9 = scf.for {{.*}} iter_args(%[[I:[^ ]*]] = %[[FIRST]], %{{[^ ]*}} = %{{.*}}, %{{[^ ]*}} = %{{.*}}, %[[ACC:[^ ]*]] = %{{.*}}, %[[PH:[^ ]*]] = %[[P0]], %[[PF:[^ ]*]] = %[[PF0]], %[[AL:[^ ]*]] = %[[A0]], %[[HV:[^ ]*]] = %[[NOV]], %[[PV:[^ ]*]] = %{{.*}}) -> (i32, vector<2xf32>, vector<2xf32>, vector<64xf32>, vector<64xbf16>, vector<64xf32>, vector<2xf32>, i1, i32) {
// A step opens with the wait for the P.V the step before issued: its V slot
// goes back, the float32 P becomes 16-bit, and O is rescaled.
// NEXT-NEXT:      %[[O:.*]]:2 = flexattn.mma.wait pending(0) %[[ACC]], %[[PH]] : vector<64xf32>, vector<64xbf16>
// NEXT-NEXT:      scf.if %[[HV]] {
// NEXT-NEXT:        flexattn.ring.release %[[VR:.*]][%[[PV]]]
// NEXT:           %[[P16:.*]] = arith.truncf %[[PF]] : vector<64xf32> to vector<64xbf16>
// NEXT-NEXT:      %[[ACC1:.*]] = flexattn.frag.rescale %[[O]]#0, %[[AL]] : vector<64xf32>, vector<2xf32>
// Wait for K_j and, after the first step, V_{j-1} (the first step reads the
// Q tile in place of V, P = 0); with the next-step wait V's wait stays ahead
// of the turn. This group's turn: S_j = Q.K_jᵀ and O += P_{j-1}.V_{j-1}.
// NEXT:           flexattn.ring.wait %[[KR:.*]][%[[I]]]
// NEXT:           %[[K:.*]] = flexattn.ring.slot %[[KR]][%[[I]]]
// NEXT:           %[[HAS:.*]] = arith.cmpi ugt, %[[I]], %[[FIRST]] : i32
// NEXT:           %[[PREV:.*]] = arith.select %[[HAS]], %{{.*}}, %{{.*}} : i32
// NEXT:           scf.if %[[HAS]] {
// NEXT-NEXT:        flexattn.ring.wait %[[VR]][%[[PREV]]]
// NEXT:           %[[VS:.*]] = flexattn.ring.slot %[[VR]][%[[PREV]]]
// NEXT:           %[[QV:.*]] = flexattn.smem_tile.reinterpret %[[Q]]
// NEXT:           %[[VP:.*]] = arith.select %[[HAS]], %[[VS]], %[[QV]] : !flexattn.smem_tile<128x128xbf16>
// NEXT:           nvvm.barrier id = %{{.*}} number_of_threads = %{{.*}}
// NEXT-NEXT:      %[[S0:.*]] = flexattn.mma %[[Q]][%{{.*}}], %[[K]] {transpose_b}
// NEXT-NEXT:      %[[O0:.*]] = flexattn.mma %[[P16]], %[[VP]], %[[ACC1]] : vector<64xbf16>, !flexattn.smem_tile<128x128xbf16>, vector<64xf32> -> vector<64xf32>
// NEXT:           nvvm.barrier.arrive id = %{{.*}} number_of_threads = %{{.*}}
// Only S is waited for before the softmax; P.V runs on into the next step.
// NEXT-NEXT:      %[[S:.*]] = flexattn.mma.wait pending(1) %[[S0]] : vector<64xf32>
// NEXT-NEXT:      flexattn.ring.release %[[KR]][%[[I]]]
// NEXT:           %[[P:.*]], %{{.*}}, %{{.*}}, %[[ALPHA:.*]] = flexattn.frag.softmax %[[S]]
// NEXT-SAME:      flexattn.reduce_chains = 4 : i64
// NEXT:           } : vector<64xf32>, vector<2xf32> -> vector<64xf32>
// NEXT-NOT:       flexattn.mma.wait
// NEXT:           scf.yield %{{.*}}, %{{.*}}, %{{.*}}, %[[O0]], %[[P16]], %[[P]], %[[ALPHA]], %[[HAS]], %[[PREV]] :
// The second loop continues from the first's position and the P.V in flight.
// NEXT:         %[[R1:.*]]:9 = scf.for {{.*}} iter_args({{.*}} = %[[R0]]#0, {{.*}} = %[[R0]]#3, {{.*}} = %[[R0]]#4, {{.*}} = %[[R0]]#5, {{.*}} = %[[R0]]#6, {{.*}} = %[[R0]]#7, {{.*}} = %[[R0]]#8)
// NEXT:           flexattn.frag.softmax
// NEXT-NOT:         mask_mod
// After the loops: the wait for the last P.V in flight, then the last
// step's P.V, then Q goes back and the epilogue.
// NEXT:         %[[OE:.*]]:2 = flexattn.mma.wait pending(0) %[[R1]]#3, %[[R1]]#4
// NEXT:         %[[PL:.*]] = arith.truncf %[[R1]]#5
// NEXT-NEXT:    %[[AE:.*]] = flexattn.frag.rescale %[[OE]]#0, %[[R1]]#6
// NEXT:         %[[LHAS:.*]] = arith.cmpi ugt, %[[R1]]#0, %[[FIRST]] : i32
// NEXT:         %[[OL:.*]] = flexattn.mma %[[PL]], %{{.*}}, %[[AE]]
// NEXT-NEXT:    %[[OW:.*]]:2 = flexattn.mma.wait pending(0) %[[OL]], %[[PL]]
// NEXT:         flexattn.ring.release %{{.*}}[%[[FIRST]]] : !flexattn.ring<1 x 128x128xbf16>
// NEXT-NEXT:    flexattn.frag.finalize %[[OW]]#0 state(%[[R1]]#1, %[[R1]]#2)

// NOPP-LABEL: func.func @consumers(
// NOPP:         scf.for
// NOPP:           flexattn.mma %{{.*}} {transpose_b}
// NOPP:           flexattn.ring.wait
// NOPP:           flexattn.mma
// NOPP-NEXT:      flexattn.mma.wait pending(1)

// In order: the input, unchanged.
// SERIAL-LABEL: func.func @consumers(
// SERIAL:         scf.for {{.*}} -> (i32, vector<2xf32>, vector<2xf32>, vector<64xf32>) {
// SERIAL:           flexattn.mma.wait pending(0)
// SERIAL:           flexattn.frag.rescale
// SERIAL:           flexattn.mma.wait pending(0)
func.func @consumers(%o: memref<1x2x300x128xbf16>, %b: index, %h: index, %q0: index,
                     %n0: index, %n1: index) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c64 = arith.constant 64 : index
  %c128 = arith.constant 128 : index
  %c0_i32 = arith.constant 0 : i32
  %c1_i32 = arith.constant 1 : i32
  %ninf = arith.constant dense<0xFF800000> : vector<2xf32>
  %zero2 = arith.constant dense<0.0> : vector<2xf32>
  %zero = arith.constant dense<0.0> : vector<64xf32>
  %qr = flexattn.ring.alloc consumers(256) : !flexattn.ring<1 x 128x128xbf16>
  %kr = flexattn.ring.alloc consumers(256) : !flexattn.ring<2 x 128x128xbf16>
  %vr = flexattn.ring.alloc consumers(256) : !flexattn.ring<2 x 128x128xbf16>
  flexattn.warp_specialize producer(threads = 128, registers = 40) {
  ^bb0(%thread: index):
  } consumers(groups = 2, threads = 128, registers = 232) {
  ^bb0(%group: index, %thread: index):
    %band = arith.muli %group, %c64 : index
    %row = arith.addi %q0, %band : index
    flexattn.ring.wait %qr[%c0_i32] : !flexattn.ring<1 x 128x128xbf16>
    %q = flexattn.ring.slot %qr[%c0_i32] : !flexattn.ring<1 x 128x128xbf16>
    %r0:4 = scf.for %j = %c0 to %n0 step %c1 iter_args(%i = %c0_i32, %m = %ninf, %l = %zero2, %acc = %zero)
        -> (i32, vector<2xf32>, vector<2xf32>, vector<64xf32>) {
      %kv0 = arith.muli %j, %c128 : index
      flexattn.ring.wait %kr[%i] : !flexattn.ring<2 x 128x128xbf16>
      %k = flexattn.ring.slot %kr[%i] : !flexattn.ring<2 x 128x128xbf16>
      %s0 = flexattn.mma %q[%band], %k {transpose_b} : !flexattn.smem_tile<128x128xbf16>, !flexattn.smem_tile<128x128xbf16> -> vector<64xf32>
      %s = flexattn.mma.wait pending(0) %s0 : vector<64xf32>
      flexattn.ring.release %kr[%i] : !flexattn.ring<2 x 128x128xbf16>
      %p, %m1, %l1, %alpha = flexattn.frag.softmax %s state(%m, %l) at(%b, %h, %row, %kv0)
          attributes {masked, scale = 0.125 : f32, seq_lens = array<i64: 300, 300>, tile_size = array<i64: 128, 128>}
        mask_mod {
        ^bb0(%bb: i32, %hh: i32, %qi: i32, %kj: i32):
          %keep = arith.cmpi sge, %qi, %kj : i32
          flexattn.yield %keep : i1
        } : vector<64xf32>, vector<2xf32> -> vector<64xbf16>
      %acc1 = flexattn.frag.rescale %acc, %alpha : vector<64xf32>, vector<2xf32>
      flexattn.ring.wait %vr[%i] : !flexattn.ring<2 x 128x128xbf16>
      %v = flexattn.ring.slot %vr[%i] : !flexattn.ring<2 x 128x128xbf16>
      %o0 = flexattn.mma %p, %v, %acc1 : vector<64xbf16>, !flexattn.smem_tile<128x128xbf16>, vector<64xf32> -> vector<64xf32>
      %o1:2 = flexattn.mma.wait pending(0) %o0, %p : vector<64xf32>, vector<64xbf16>
      flexattn.ring.release %vr[%i] : !flexattn.ring<2 x 128x128xbf16>
      %i1 = arith.addi %i, %c1_i32 : i32
      scf.yield %i1, %m1, %l1, %o1#0 : i32, vector<2xf32>, vector<2xf32>, vector<64xf32>
    }
    %r1:4 = scf.for %j = %c0 to %n1 step %c1 iter_args(%i = %r0#0, %m = %r0#1, %l = %r0#2, %acc = %r0#3)
        -> (i32, vector<2xf32>, vector<2xf32>, vector<64xf32>) {
      %kv0 = arith.muli %j, %c128 : index
      flexattn.ring.wait %kr[%i] : !flexattn.ring<2 x 128x128xbf16>
      %k = flexattn.ring.slot %kr[%i] : !flexattn.ring<2 x 128x128xbf16>
      %s0 = flexattn.mma %q[%band], %k {transpose_b} : !flexattn.smem_tile<128x128xbf16>, !flexattn.smem_tile<128x128xbf16> -> vector<64xf32>
      %s = flexattn.mma.wait pending(0) %s0 : vector<64xf32>
      flexattn.ring.release %kr[%i] : !flexattn.ring<2 x 128x128xbf16>
      %p, %m1, %l1, %alpha = flexattn.frag.softmax %s state(%m, %l) at(%b, %h, %row, %kv0)
          attributes {scale = 0.125 : f32, seq_lens = array<i64: 300, 300>, tile_size = array<i64: 128, 128>}
          : vector<64xf32>, vector<2xf32> -> vector<64xbf16>
      %acc1 = flexattn.frag.rescale %acc, %alpha : vector<64xf32>, vector<2xf32>
      flexattn.ring.wait %vr[%i] : !flexattn.ring<2 x 128x128xbf16>
      %v = flexattn.ring.slot %vr[%i] : !flexattn.ring<2 x 128x128xbf16>
      %o0 = flexattn.mma %p, %v, %acc1 : vector<64xbf16>, !flexattn.smem_tile<128x128xbf16>, vector<64xf32> -> vector<64xf32>
      %o1:2 = flexattn.mma.wait pending(0) %o0, %p : vector<64xf32>, vector<64xbf16>
      flexattn.ring.release %vr[%i] : !flexattn.ring<2 x 128x128xbf16>
      %i1 = arith.addi %i, %c1_i32 : i32
      scf.yield %i1, %m1, %l1, %o1#0 : i32, vector<2xf32>, vector<2xf32>, vector<64xf32>
    }
    flexattn.ring.release %qr[%c0_i32] : !flexattn.ring<1 x 128x128xbf16>
    flexattn.frag.finalize %r1#3 state(%r1#1, %r1#2) outs(%o : memref<1x2x300x128xbf16>) at(%b, %h, %row, %c0) : vector<64xf32>, vector<2xf32>
  }
  return
}

// Three consumer groups (192-row Q tiles at D = 64) take turns round the
// ring: group g waits on barrier g + 1 and passes to group (g + 1) mod 3;
// each barrier counts the waiting and the passing group (256 threads).
// Group 2 opens group 0's first turn.
// CHECK-LABEL: func.func @three_groups(
// CHECK:       } consumers(groups = 3, threads = 128, registers = 160) {
// CHECK-NEXT:  ^bb0(%[[G:.*]]: index, %{{.*}}: index):
// CHECK:         %[[GI:.*]] = arith.index_cast %[[G]] : index to i32
// CHECK-NEXT:    %[[TWO:.*]] = arith.constant 2 : i32
// CHECK-NEXT:    %[[LAST:.*]] = arith.cmpi eq, %[[GI]], %[[TWO]] : i32
// CHECK-NEXT:    scf.if %[[LAST]] {
// CHECK-DAG:       %[[B1:.*]] = arith.constant 1 : i32
// CHECK-DAG:       %[[N:.*]] = arith.constant 256 : i32
// CHECK-NEXT:      nvvm.barrier.arrive id = %[[B1]] number_of_threads = %[[N]]
// CHECK:         scf.for
// CHECK:           %[[TG:.*]] = arith.index_cast %{{.*}} : index to i32
// CHECK-DAG:       %[[N1:.*]] = arith.constant 256 : i32
// CHECK-DAG:       %[[ONE:.*]] = arith.constant 1 : i32
// CHECK-NEXT:      %[[OWN:.*]] = arith.addi %[[TG]], %[[ONE]] : i32
// CHECK-NEXT:      nvvm.barrier id = %[[OWN]] number_of_threads = %[[N1]]
// CHECK-NEXT:      flexattn.mma {{.*}} {transpose_b} : !flexattn.smem_tile<192x64xbf16>
// CHECK:           flexattn.ring.wait
// CHECK:           flexattn.mma
// CHECK-NEXT:      %[[PG:.*]] = arith.index_cast %{{.*}} : index to i32
// CHECK-NEXT:      %[[C2:.*]] = arith.constant 2 : i32
// CHECK-NEXT:      %[[ISLAST:.*]] = arith.cmpi eq, %[[PG]], %[[C2]] : i32
// CHECK-NEXT:      %[[TWO2:.*]] = arith.constant 2 : i32
// CHECK-NEXT:      %[[NEXTBAR:.*]] = arith.addi %[[PG]], %[[TWO2]] : i32
// CHECK-NEXT:      %[[FIRSTBAR:.*]] = arith.constant 1 : i32
// CHECK-NEXT:      %[[BAR:.*]] = arith.select %[[ISLAST]], %[[FIRSTBAR]], %[[NEXTBAR]] : i32
// CHECK-NEXT:      %[[N2:.*]] = arith.constant 256 : i32
// CHECK-NEXT:      nvvm.barrier.arrive id = %[[BAR]] number_of_threads = %[[N2]]
// CHECK-NEXT:      flexattn.mma.wait pending(1)
// The step's wait, not held; each row max as four chains (three groups).
// CHECK:           flexattn.frag.softmax
// CHECK-SAME:        flexattn.max_chains = 4 : i64
// CHECK:           flexattn.mma.wait pending(0) %{{[^ ]*}}, %{{[^ ]*}} : vector<32xf32>, vector<64xbf16>
func.func @three_groups(%o: memref<1x2x300x64xbf16>, %b: index, %h: index, %q0: index,
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
    flexattn.ring.release %qr[%c0_i32] : !flexattn.ring<1 x 192x64xbf16>
    flexattn.frag.finalize %r0#3 state(%r0#1, %r0#2) outs(%o : memref<1x2x300x64xbf16>) at(%b, %h, %row, %c0) : vector<32xf32>, vector<2xf32>
  }
  return
}
