// RUN: flexattn-opt %s -split-input-file -verify-diagnostics --flexattn-warp-specialize | FileCheck %s
// RUN: flexattn-opt %s -split-input-file -verify-diagnostics --flexattn-warp-specialize=stages=3 | FileCheck %s --check-prefix=STAGES3
// RUN: flexattn-opt %s -split-input-file -verify-diagnostics --flexattn-warp-specialize=max-shared-memory=232448 | FileCheck %s --check-prefix=FITS
// RUN: flexattn-opt %s -split-input-file -verify-diagnostics --flexattn-warp-specialize="stages=3 max-shared-memory=232448" | FileCheck %s --check-prefix=NOFIT

// The host function gains the tensor maps of q, k, v (TMA boxes of 64
// columns x the ring's tile rows, 128-byte swizzle); the CTA gets 384
// threads: one producer warpgroup, two consumer groups.
// CHECK-LABEL: func.func @causal(
// CHECK-SAME:    %[[O:[^:]+]]: memref<1x2x300x64xbf16>, %[[KVN:[^:]+]]: memref<1x1x3xi32>, %[[KVI:[^:]+]]: memref<1x1x3x3xi32>,
// CHECK-SAME:    %[[QMAP:[^:]+]]: !llvm.ptr {flexattn.tensor_map = {box = array<i64: 64, 128, 1, 1>, interleave = "none", l2_promotion = "256B", oob_fill = "zero", swizzle = "128B", tensor = 0 : i64}},
// CHECK-SAME:    %[[KMAP:[^:]+]]: !llvm.ptr {flexattn.tensor_map = {{{.*}}tensor = 1 : i64}},
// CHECK-SAME:    %[[VMAP:[^:]+]]: !llvm.ptr {flexattn.tensor_map = {{{.*}}tensor = 2 : i64}})
// CHECK:         %[[THREADS:.*]] = arith.constant 384 : index
// CHECK:         gpu.launch blocks(%[[BX:[^,]*]], {{.*}} threads({{.*}}) in (%{{.*}} = %[[THREADS]],
// Rings first: Q (one slot), K and V (two slots of a KV tile); 256 consumer
// threads release each slot.
// CHECK-NEXT:      %[[QR:.*]] = flexattn.ring.alloc consumers(256) : !flexattn.ring<1 x 128x64xbf16>
// CHECK-NEXT:      %[[KR:.*]] = flexattn.ring.alloc consumers(256) : !flexattn.ring<2 x 128x64xbf16>
// CHECK-NEXT:      %[[VR:.*]] = flexattn.ring.alloc consumers(256) : !flexattn.ring<2 x 128x64xbf16>
// CHECK-NEXT:      flexattn.warp_specialize producer(threads = 128, registers = 40) {
// CHECK-NEXT:      ^bb0(%[[PT:.*]]: index):
// Producer: thread 0 fences the maps, then loads Q for the tile and K, V
// for every KV block the mask lists (the same loop, its ring position carried).
// CHECK:             %[[LEADER:.*]] = arith.cmpi eq, %[[PT]], %{{.*}} : index
// CHECK:             scf.if %[[LEADER]] {
// CHECK:               nvvm.fence.proxy.acquire <sys> %[[QMAP]]
// CHECK:               nvvm.fence.proxy.acquire <sys> %[[KMAP]]
// CHECK:               nvvm.fence.proxy.acquire <sys> %[[VMAP]]
// CHECK:               %[[Q0:.*]] = arith.muli
// CHECK:               flexattn.ring.acquire %[[QR]][%[[J:.*]]] : !flexattn.ring<1 x 128x64xbf16>
// CHECK-NEXT:          flexattn.ring.load %[[QMAP]][%{{.*}}, %{{.*}}, %[[Q0]]] into %[[QR]][%[[J]]]
// CHECK:               scf.for {{.*}} iter_args(%{{.*}} = %{{.*}}, %[[I:.*]] = %{{.*}}) -> (i32, i32) {
// CHECK:                 flexattn.ring.acquire %[[KR]][%[[I]]]
// CHECK-NEXT:            flexattn.ring.load %[[KMAP]][{{.*}}] into %[[KR]][%[[I]]]
// CHECK-NEXT:            flexattn.ring.acquire %[[VR]][%[[I]]]
// CHECK-NEXT:            flexattn.ring.load %[[VMAP]][{{.*}}] into %[[VR]][%[[I]]]
// CHECK:                 %[[NEXT:.*]] = arith.addi %[[I]], %{{.*}} : i32
// CHECK:                 scf.yield %{{.*}}, %[[NEXT]] : i32, i32
// Consumers: each thread's fragment row (64 group + 16 warp + lane / 4) and
// column (2 (lane % 4)); state in registers: -inf, 0, 0.
// CHECK:         } consumers(groups = 2, threads = 128, registers = 232) {
// CHECK-NEXT:    ^bb0(%[[G:.*]]: index, %[[T:.*]]: index):
// CHECK:           %[[BAND:.*]] = arith.muli %[[G]], %{{.*}} : index
// CHECK:           flexattn.ring.wait %[[QR]][%[[CJ:.*]]] : !flexattn.ring<1 x 128x64xbf16>
// CHECK-NEXT:      %[[QT:.*]] = flexattn.ring.slot %[[QR]][%[[CJ]]]
// CHECK-DAG:       %[[M0:.*]] = arith.constant dense<0xFF800000> : vector<2xf32>
// CHECK-DAG:       %[[ACC0:.*]] = arith.constant dense<0.000000e+00> : vector<32xf32>
// In-order step: S = Q.Kᵀ, softmax, O = alpha O + P.V; each MMA waited for.
// CHECK:           scf.for {{.*}} iter_args(%{{.*}}, %[[CI:[^ ]*]] = %{{.*}}, %[[M:[^ ]*]] = %[[M0]], %[[L:[^ ]*]] = %{{.*}}, %[[ACC:[^ ]*]] = %[[ACC0]]) -> (i32, i32, vector<2xf32>, vector<2xf32>, vector<32xf32>) {
// CHECK:             flexattn.ring.wait %[[KR]][%[[CI]]]
// CHECK-NEXT:        %[[K:.*]] = flexattn.ring.slot %[[KR]][%[[CI]]]
// CHECK-NEXT:        %[[S0:.*]] = flexattn.mma %[[QT]][%[[BAND]]], %[[K]] {transpose_b} : !flexattn.smem_tile<128x64xbf16>, !flexattn.smem_tile<128x64xbf16> -> vector<64xf32>
// CHECK-NEXT:        %[[S:.*]] = flexattn.mma.wait pending(0) %[[S0]] : vector<64xf32>
// CHECK-NEXT:        flexattn.ring.release %[[KR]][%[[CI]]]
// CHECK:             %[[P:.*]], %[[M1:.*]], %[[L1:.*]], %[[ALPHA:.*]] = flexattn.frag.softmax %[[S]] state(%[[M]], %[[L]]) at({{.*}}) attributes {masked, scale = 1.250000e-01 : f32, seq_lens = array<i64: 300, 300>, tile_size = array<i64: 128, 128>} mask_mod {
// CHECK:             } : vector<64xf32>, vector<2xf32> -> vector<64xbf16>
// CHECK-NEXT:        %[[ACC1:.*]] = flexattn.frag.rescale %[[ACC]], %[[ALPHA]] : vector<32xf32>, vector<2xf32>
// CHECK-NEXT:        flexattn.ring.wait %[[VR]][%[[CI]]]
// CHECK-NEXT:        %[[V:.*]] = flexattn.ring.slot %[[VR]][%[[CI]]]
// CHECK-NEXT:        %[[O0:.*]] = flexattn.mma %[[P]], %[[V]], %[[ACC1]] : vector<64xbf16>, !flexattn.smem_tile<128x64xbf16>, vector<32xf32> -> vector<32xf32>
// CHECK-NEXT:        %[[O1:.*]]:2 = flexattn.mma.wait pending(0) %[[O0]], %[[P]] : vector<32xf32>, vector<64xbf16>
// CHECK-NEXT:        flexattn.ring.release %[[VR]][%[[CI]]]
// CHECK:             scf.yield %{{.*}}, %{{.*}}, %[[M1]], %[[L1]], %[[O1]]#0
// Q goes back before the epilogue's stores.
// CHECK:           flexattn.ring.release %[[QR]]
// CHECK:           flexattn.frag.finalize %{{.*}}#4 state(%{{.*}}#2, %{{.*}}#3) outs(%[[O]] : memref<1x2x300x64xbf16>)
// CHECK-NOT:       memref.alloca
// CHECK-NOT:       flexattn.tile_step

// STAGES3-LABEL: func.func @causal(
// STAGES3:         flexattn.ring.alloc consumers(256) : !flexattn.ring<1 x 128x64xbf16>
// STAGES3-NEXT:    flexattn.ring.alloc consumers(256) : !flexattn.ring<3 x 128x64xbf16>
// STAGES3-NEXT:    flexattn.ring.alloc consumers(256) : !flexattn.ring<3 x 128x64xbf16>
func.func @causal(%q: memref<1x2x300x64xbf16>, %k: memref<1x2x300x64xbf16>, %v: memref<1x2x300x64xbf16>,
                  %o: memref<1x2x300x64xbf16>, %kvn: memref<1x1x3xi32>, %kvi: memref<1x1x3x3xi32>) {
  %ninf = arith.constant 0xFF800000 : f32
  %zero = arith.constant 0.000000e+00 : f32
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %c3 = arith.constant 3 : index
  %c6 = arith.constant 6 : index
  %c128 = arith.constant 128 : index
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c6, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c1, %sy = %c1, %sz = %c1) {
    %head = arith.divui %bx, %c3 : index
    %b = arith.divui %head, %c2 : index
    %h = arith.remui %head, %c2 : index
    %rev = arith.remui %bx, %c3 : index
    %qt = arith.subi %c2, %rev : index
    %q0 = arith.muli %qt, %c128 : index
    %acc = memref.alloca() : memref<128x64xf32>
    %m = memref.alloca() : memref<128xf32>
    %l = memref.alloca() : memref<128xf32>
    linalg.fill ins(%zero : f32) outs(%acc : memref<128x64xf32>)
    linalg.fill ins(%ninf : f32) outs(%m : memref<128xf32>)
    linalg.fill ins(%zero : f32) outs(%l : memref<128xf32>)
    %n32 = memref.load %kvn[%c0, %c0, %qt] : memref<1x1x3xi32>
    %n = arith.index_cast %n32 : i32 to index
    scf.for %j = %c0 to %n step %c1 {
      %blk32 = memref.load %kvi[%c0, %c0, %qt, %j] : memref<1x1x3x3xi32>
      %blk = arith.index_cast %blk32 : i32 to index
      %kv0 = arith.muli %blk, %c128 : index
      flexattn.tile_step ins(%q, %k, %v : memref<1x2x300x64xbf16>, memref<1x2x300x64xbf16>, memref<1x2x300x64xbf16>)
          state(%acc, %m, %l : memref<128x64xf32>, memref<128xf32>, memref<128xf32>)
          at(%b, %h, %h, %q0, %kv0) attributes {masked, scale = 0.125 : f32, tile_size = array<i64: 128, 128>}
        mask_mod {
        ^bb0(%bb: i32, %hh: i32, %qi: i32, %kj: i32):
          %keep = arith.cmpi sge, %qi, %kj : i32
          flexattn.yield %keep : i1
        }
    }
    flexattn.finalize state(%acc, %m, %l : memref<128x64xf32>, memref<128xf32>, memref<128xf32>)
        outs(%o : memref<1x2x300x64xbf16>) at(%b, %h, %q0)
    gpu.terminator
  }
  return
}

// -----

// Persistent CTAs: the tile loop carries the Q ring position (its parity
// changes per tile) and the K/V ring position (it runs on across tiles).
// With the CTA's shared memory known and room for two Q tiles beside two K
// and V stages (2 x 32 + 4 x 32 KiB), Q takes two slots: the producer loads
// the next tile's Q while the consumers compute this one. With three
// stages (2 x 32 + 6 x 32 KiB > 227 KiB) it keeps one.
// FITS-LABEL: func.func @persistent(
// FITS:         flexattn.ring.alloc consumers(256) : !flexattn.ring<2 x 128x128xf16>
// FITS:         flexattn.ring.acquire %{{.*}}[%{{.*}}] : !flexattn.ring<2 x 128x128xf16>
// FITS:         flexattn.ring.wait %{{.*}}[%{{.*}}] : !flexattn.ring<2 x 128x128xf16>
// NOFIT-LABEL: func.func @persistent(
// NOFIT:        flexattn.ring.alloc consumers(256) : !flexattn.ring<1 x 128x128xf16>
// CHECK-LABEL: func.func @persistent(
// CHECK:         flexattn.warp_specialize
// CHECK:           scf.for %{{.*}} = %{{.*}} to %{{.*}} step %{{.*}} iter_args(%[[J:.*]] = %{{.*}}, %[[I:.*]] = %{{.*}}) -> (i32, i32) {
// CHECK:             flexattn.ring.acquire %{{.*}}[%[[J]]] : !flexattn.ring<1 x 128x128xf16>
// CHECK:             %[[IN:[0-9]+]]:2 = scf.for {{.*}} iter_args(%{{.*}} = %[[J]], %{{.*}} = %[[I]])
// CHECK:             %[[JN:.*]] = arith.addi %[[IN]]#0
// CHECK:             scf.yield %[[JN]], %[[IN]]#1 : i32, i32
// CHECK:         } consumers
// CHECK:           scf.for %{{.*}} = %{{.*}} to %{{.*}} step %{{.*}} iter_args(%[[CJ:.*]] = %{{.*}}, %[[CI:.*]] = %{{.*}}) -> (i32, i32) {
// CHECK:             flexattn.ring.wait %{{.*}}[%[[CJ]]] : !flexattn.ring<1 x 128x128xf16>
// CHECK:             scf.for {{.*}} -> (i32, i32, vector<2xf32>, vector<2xf32>, vector<64xf32>)
// CHECK:             flexattn.frag.finalize
func.func @persistent(%q: memref<1x1x512x128xf16>, %o: memref<1x1x512x128xf16>) {
  %ninf = arith.constant 0xFF800000 : f32
  %zero = arith.constant 0.000000e+00 : f32
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %c4 = arith.constant 4 : index
  %c128 = arith.constant 128 : index
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c2, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c1, %sy = %c1, %sz = %c1) {
    scf.for %t = %bx to %c4 step %c2 {
      %q0 = arith.muli %t, %c128 : index
      memref.alloca_scope {
        %acc = memref.alloca() : memref<128x128xf32>
        %m = memref.alloca() : memref<128xf32>
        %l = memref.alloca() : memref<128xf32>
        linalg.fill ins(%zero : f32) outs(%acc : memref<128x128xf32>)
        linalg.fill ins(%ninf : f32) outs(%m : memref<128xf32>)
        linalg.fill ins(%zero : f32) outs(%l : memref<128xf32>)
        scf.for %j = %c0 to %c4 step %c1 {
          %kv0 = arith.muli %j, %c128 : index
          flexattn.tile_step ins(%q, %q, %q : memref<1x1x512x128xf16>, memref<1x1x512x128xf16>, memref<1x1x512x128xf16>)
              state(%acc, %m, %l : memref<128x128xf32>, memref<128xf32>, memref<128xf32>)
              at(%c0, %c0, %c0, %q0, %kv0) attributes {scale = 0.125 : f32, tile_size = array<i64: 128, 128>}
        }
        flexattn.finalize state(%acc, %m, %l : memref<128x128xf32>, memref<128xf32>, memref<128xf32>)
            outs(%o : memref<1x1x512x128xf16>) at(%c0, %c0, %q0)
      }
    }
    gpu.terminator
  }
  return
}

// -----

func.func @f32_inputs(%q: memref<1x1x128x64xf32>, %o: memref<1x1x128x64xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c1, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c1, %sy = %c1, %sz = %c1) {
    %acc = memref.alloca() : memref<128x64xf32>
    %m = memref.alloca() : memref<128xf32>
    %l = memref.alloca() : memref<128xf32>
    // expected-error @+1 {{flexattn-warp-specialize takes bf16 or f16 q/k/v (f32: flexattn-multistage's tf32 kernel), got 'f32'}}
    flexattn.tile_step ins(%q, %q, %q : memref<1x1x128x64xf32>, memref<1x1x128x64xf32>, memref<1x1x128x64xf32>)
        state(%acc, %m, %l : memref<128x64xf32>, memref<128xf32>, memref<128xf32>)
        at(%c0, %c0, %c0, %c0, %c0) attributes {scale = 0.125 : f32, tile_size = array<i64: 128, 128>}
    flexattn.finalize state(%acc, %m, %l : memref<128x64xf32>, memref<128xf32>, memref<128xf32>)
        outs(%o : memref<1x1x128x64xf32>) at(%c0, %c0, %c0)
    gpu.terminator
  }
  return
}

// -----

func.func @head_dim_96(%q: memref<1x1x128x96xbf16>, %o: memref<1x1x128x96xbf16>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c1, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c1, %sy = %c1, %sz = %c1) {
    %acc = memref.alloca() : memref<128x96xf32>
    %m = memref.alloca() : memref<128xf32>
    %l = memref.alloca() : memref<128xf32>
    // expected-error @+1 {{flexattn-warp-specialize takes head dims 64 and 128 (other head dims: flexattn-multistage), got D = 96, Dv = 96}}
    flexattn.tile_step ins(%q, %q, %q : memref<1x1x128x96xbf16>, memref<1x1x128x96xbf16>, memref<1x1x128x96xbf16>)
        state(%acc, %m, %l : memref<128x96xf32>, memref<128xf32>, memref<128xf32>)
        at(%c0, %c0, %c0, %c0, %c0) attributes {scale = 0.125 : f32, tile_size = array<i64: 128, 128>}
    flexattn.finalize state(%acc, %m, %l : memref<128x96xf32>, memref<128xf32>, memref<128xf32>)
        outs(%o : memref<1x1x128x96xbf16>) at(%c0, %c0, %c0)
    gpu.terminator
  }
  return
}

// -----

func.func @head_dim_100(%q: memref<1x1x128x100xbf16>, %o: memref<1x1x128x100xbf16>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c1, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c1, %sy = %c1, %sz = %c1) {
    %acc = memref.alloca() : memref<128x100xf32>
    %m = memref.alloca() : memref<128xf32>
    %l = memref.alloca() : memref<128xf32>
    // expected-error @+1 {{the GPU kernel takes head dims that are multiples of 8 in [16, 256], got D = 100, Dv = 100}}
    flexattn.tile_step ins(%q, %q, %q : memref<1x1x128x100xbf16>, memref<1x1x128x100xbf16>, memref<1x1x128x100xbf16>)
        state(%acc, %m, %l : memref<128x100xf32>, memref<128xf32>, memref<128xf32>)
        at(%c0, %c0, %c0, %c0, %c0) attributes {scale = 0.125 : f32, tile_size = array<i64: 128, 128>}
    flexattn.finalize state(%acc, %m, %l : memref<128x100xf32>, memref<128xf32>, memref<128xf32>)
        outs(%o : memref<1x1x128x100xbf16>) at(%c0, %c0, %c0)
    gpu.terminator
  }
  return
}

// -----

func.func @small_tiles(%q: memref<1x1x128x64xbf16>, %o: memref<1x1x128x64xbf16>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c1, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c1, %sy = %c1, %sz = %c1) {
    %acc = memref.alloca() : memref<32x64xf32>
    %m = memref.alloca() : memref<32xf32>
    %l = memref.alloca() : memref<32xf32>
    // expected-error @+1 {{the GPU kernel needs tile_size [64|128|192, 64|128] (run flexattn-tile{tile-q=128 tile-kv=128}), got [32, 64]}}
    flexattn.tile_step ins(%q, %q, %q : memref<1x1x128x64xbf16>, memref<1x1x128x64xbf16>, memref<1x1x128x64xbf16>)
        state(%acc, %m, %l : memref<32x64xf32>, memref<32xf32>, memref<32xf32>)
        at(%c0, %c0, %c0, %c0, %c0) attributes {scale = 0.125 : f32, tile_size = array<i64: 32, 64>}
    flexattn.finalize state(%acc, %m, %l : memref<32x64xf32>, memref<32xf32>, memref<32xf32>)
        outs(%o : memref<1x1x128x64xbf16>) at(%c0, %c0, %c0)
    gpu.terminator
  }
  return
}

// -----

func.func @band_tiles(%q: memref<1x1x128x64xbf16>, %o: memref<1x1x128x64xbf16>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c1, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c1, %sy = %c1, %sz = %c1) {
    %acc = memref.alloca() : memref<64x64xf32>
    %m = memref.alloca() : memref<64xf32>
    %l = memref.alloca() : memref<64xf32>
    // expected-error @+1 {{flexattn-warp-specialize takes 128-row Q tiles (two 64-row consumer bands), or 192-row ones (three) at D = Dv = 64; 64-row tiles: flexattn-multistage; got 64 rows at D = 64, Dv = 64}}
    flexattn.tile_step ins(%q, %q, %q : memref<1x1x128x64xbf16>, memref<1x1x128x64xbf16>, memref<1x1x128x64xbf16>)
        state(%acc, %m, %l : memref<64x64xf32>, memref<64xf32>, memref<64xf32>)
        at(%c0, %c0, %c0, %c0, %c0) attributes {scale = 0.125 : f32, tile_size = array<i64: 64, 64>}
    flexattn.finalize state(%acc, %m, %l : memref<64x64xf32>, memref<64xf32>, memref<64xf32>)
        outs(%o : memref<1x1x128x64xbf16>) at(%c0, %c0, %c0)
    gpu.terminator
  }
  return
}

// -----

// A dynamic-shape kernel (run-time B and M: CompileOptions.dynamic) runs on
// flexattn-multistage; the TMA kernel's boxes and tile counts are static.
func.func @dynamic_shapes(%q: memref<?x1x?x64xbf16>, %o: memref<?x1x?x64xbf16>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c1, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c1, %sy = %c1, %sz = %c1) {
    %acc = memref.alloca() : memref<128x64xf32>
    %m = memref.alloca() : memref<128xf32>
    %l = memref.alloca() : memref<128xf32>
    // expected-error @+1 {{flexattn-warp-specialize needs static q/k/v shapes (its TMA boxes and tile counts); a dynamic-shape kernel runs on flexattn-multistage}}
    flexattn.tile_step ins(%q, %q, %q : memref<?x1x?x64xbf16>, memref<?x1x?x64xbf16>, memref<?x1x?x64xbf16>)
        state(%acc, %m, %l : memref<128x64xf32>, memref<128xf32>, memref<128xf32>)
        at(%c0, %c0, %c0, %c0, %c0) attributes {scale = 0.125 : f32, tile_size = array<i64: 128, 128>}
    flexattn.finalize state(%acc, %m, %l : memref<128x64xf32>, memref<128xf32>, memref<128xf32>)
        outs(%o : memref<?x1x?x64xbf16>) at(%c0, %c0, %c0)
    gpu.terminator
  }
  return
}

// -----

// Heads and head dims fix the tiles and the layout: run-time heads are
// refused by every GPU role pass.
func.func @dynamic_heads(%q: memref<1x?x128x64xbf16>, %o: memref<1x?x128x64xbf16>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c1, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c1, %sy = %c1, %sz = %c1) {
    %acc = memref.alloca() : memref<128x64xf32>
    %m = memref.alloca() : memref<128xf32>
    %l = memref.alloca() : memref<128xf32>
    // expected-error @+1 {{flexattn-warp-specialize needs static heads and head dims, got 'memref<1x?x128x64xbf16>'}}
    flexattn.tile_step ins(%q, %q, %q : memref<1x?x128x64xbf16>, memref<1x?x128x64xbf16>, memref<1x?x128x64xbf16>)
        state(%acc, %m, %l : memref<128x64xf32>, memref<128xf32>, memref<128xf32>)
        at(%c0, %c0, %c0, %c0, %c0) attributes {scale = 0.125 : f32, tile_size = array<i64: 128, 128>}
    flexattn.finalize state(%acc, %m, %l : memref<128x64xf32>, memref<128xf32>, memref<128xf32>)
        outs(%o : memref<1x?x128x64xbf16>) at(%c0, %c0, %c0)
    gpu.terminator
  }
  return
}

// -----

// 192-row Q tiles at D = 64 (FlashAttention-3's D = 64 tile): three consumer
// groups of 64 rows, 512 threads, a 192-row Q box and slot, and the budgets
// 32 + 3 x 160 registers.
// CHECK-LABEL: func.func @wide_tiles(
// CHECK-SAME:    !llvm.ptr {flexattn.tensor_map = {box = array<i64: 64, 192, 1, 1>, {{.*}}tensor = 0 : i64}}
// CHECK:         %[[THREADS:.*]] = arith.constant 512 : index
// CHECK:         gpu.launch {{.*}} threads({{.*}}) in (%{{.*}} = %[[THREADS]],
// CHECK-NEXT:      flexattn.ring.alloc consumers(384) : !flexattn.ring<1 x 192x64xbf16>
// CHECK-NEXT:      flexattn.ring.alloc consumers(384) : !flexattn.ring<2 x 128x64xbf16>
// CHECK-NEXT:      flexattn.ring.alloc consumers(384) : !flexattn.ring<2 x 128x64xbf16>
// CHECK-NEXT:      flexattn.warp_specialize producer(threads = 128, registers = 32) {
// CHECK:         } consumers(groups = 3, threads = 128, registers = 160) {
// CHECK:           flexattn.mma %{{.*}}[%{{.*}}], %{{.*}} {transpose_b} : !flexattn.smem_tile<192x64xbf16>, !flexattn.smem_tile<128x64xbf16> -> vector<64xf32>
func.func @wide_tiles(%q: memref<1x1x384x64xbf16>, %o: memref<1x1x384x64xbf16>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %c3 = arith.constant 3 : index
  %c128 = arith.constant 128 : index
  %c192 = arith.constant 192 : index
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c2, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c1, %sy = %c1, %sz = %c1) {
    %q0 = arith.muli %bx, %c192 : index
    %acc = memref.alloca() : memref<192x64xf32>
    %m = memref.alloca() : memref<192xf32>
    %l = memref.alloca() : memref<192xf32>
    scf.for %j = %c0 to %c3 step %c1 {
      %kv0 = arith.muli %j, %c128 : index
      flexattn.tile_step ins(%q, %q, %q : memref<1x1x384x64xbf16>, memref<1x1x384x64xbf16>, memref<1x1x384x64xbf16>)
          state(%acc, %m, %l : memref<192x64xf32>, memref<192xf32>, memref<192xf32>)
          at(%c0, %c0, %c0, %q0, %kv0) attributes {scale = 0.125 : f32, tile_size = array<i64: 192, 128>}
    }
    flexattn.finalize state(%acc, %m, %l : memref<192x64xf32>, memref<192xf32>, memref<192xf32>)
        outs(%o : memref<1x1x384x64xbf16>) at(%c0, %c0, %q0)
    gpu.terminator
  }
  return
}

// -----

func.func @wide_tiles_d128(%q: memref<1x1x192x128xbf16>, %o: memref<1x1x192x128xbf16>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c1, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c1, %sy = %c1, %sz = %c1) {
    %acc = memref.alloca() : memref<192x128xf32>
    %m = memref.alloca() : memref<192xf32>
    %l = memref.alloca() : memref<192xf32>
    // expected-error @+1 {{flexattn-warp-specialize takes 128-row Q tiles (two 64-row consumer bands), or 192-row ones (three) at D = Dv = 64; 64-row tiles: flexattn-multistage; got 192 rows at D = 128, Dv = 128}}
    flexattn.tile_step ins(%q, %q, %q : memref<1x1x192x128xbf16>, memref<1x1x192x128xbf16>, memref<1x1x192x128xbf16>)
        state(%acc, %m, %l : memref<192x128xf32>, memref<192xf32>, memref<192xf32>)
        at(%c0, %c0, %c0, %c0, %c0) attributes {scale = 0.125 : f32, tile_size = array<i64: 192, 128>}
    flexattn.finalize state(%acc, %m, %l : memref<192x128xf32>, memref<192xf32>, memref<192xf32>)
        outs(%o : memref<1x1x192x128xbf16>) at(%c0, %c0, %c0)
    gpu.terminator
  }
  return
}
