// RUN: flexattn-opt %s -split-input-file -flexattn-lower-backward-mma -verify-diagnostics | FileCheck %s

// The launch of flexattn-map-backward-to-grid for 64 x 64 tiles of an
// M = N = 100 problem (GQA 2/1, bf16, D = 64, a learnable per-head weight,
// causal dq steps): 2 dk/dv CTAs then 4 dq CTAs. Each CTA gets one group of
// 4 warps (128 threads), copies its owned tiles once, and per step streams
// the other side in 64-row chunks (a loop; one chunk per 64-row tile)
// through two two-slot rings, at a run-time position. A step alone in its
// loop copies the loop's first chunk before the loop, and the next step's
// first chunk during its own last one.

// CHECK-LABEL: func.func @two_nests(
// CHECK-SAME:    %[[Q:[^:]+]]: memref<1x2x100x64xbf16>, %[[K:[^:]+]]: memref<1x1x100x64xbf16>, %[[V:[^:]+]]: memref<1x1x100x64xbf16>, %[[DO:[^:]+]]: memref<1x2x100x64xbf16>, %[[LSE:[^:]+]]: memref<1x2x100xf32>, %[[DELTA:[^:]+]]: memref<1x2x100xf32>, %[[DQ:[^:]+]]: memref<1x2x100x64xbf16>, %[[DK:[^:]+]]: memref<1x1x100x64xbf16>, %[[DV:[^:]+]]: memref<1x1x100x64xbf16>, %{{[^:]+}}: memref<2xf32>, %[[DW:[^:]+]]: memref<2xf32>)
// CHECK:         %[[C128:.+]] = arith.constant 128 : index
// CHECK:         gpu.launch {{.*}} threads(%{{[^,]+}}, %{{[^,]+}}, %{{[^)]+}}) in (%{{[^ ]+}} = %[[C128]],
// The owned tiles' rings (64 rows) and the streamed chunks' (2 x 64 rows).
// CHECK:           %[[OWNA:.+]] = flexattn.ring.alloc consumers(128) : !flexattn.ring<1 x 64x64xbf16>
// CHECK:           %[[OWNB:.+]] = flexattn.ring.alloc consumers(128) : !flexattn.ring<1 x 64x64xbf16>
// CHECK:           %[[STRA:.+]] = flexattn.ring.alloc consumers(128) : !flexattn.ring<2 x 64x64xbf16>
// CHECK:           %[[STRB:.+]] = flexattn.ring.alloc consumers(128) : !flexattn.ring<2 x 64x64xbf16>
// CHECK:           %[[POS:.+]] = memref.alloca() : memref<i32>
// The accumulators: one fragment per thread, at the kernel's entry.
// CHECK-DAG:       %[[DKACC:.+]] = memref.alloca() : memref<vector<32xf32>>
// CHECK-DAG:       %[[DVACC:.+]] = memref.alloca() : memref<vector<32xf32>>
// CHECK-DAG:       %[[DQACC:.+]] = memref.alloca() : memref<vector<32xf32>>
// CHECK-NOT:       memref<64x64xf32>
// CHECK:           scf.if
// dk/dv CTA: K and V once, then per Q tile Q and dout.
// CHECK:             memref.store %{{.+}}, %[[DKACC]][] : memref<vector<32xf32>>
// CHECK:             flexattn.ring.copy %[[K]][%{{.+}}] into %[[OWNA]]
// CHECK:             flexattn.ring.copy %[[V]][%{{.+}}] into %[[OWNB]]
// CHECK:             flexattn.ring.wait %[[OWNB]][%{{.+}}] in_flight(0)
// CHECK:             scf.for %[[H:[^ ]+]] =
// The Q loop's first step's chunk 0, before the loop, at the counter's
// position (its row: the body's q0, at the lower bound; batch and head are
// the loop's).
// CHECK:               %[[FIRST:.+]] = arith.cmpi slt, %[[LB:[^,]+]], %[[UB:[^ ]+]] : index
// CHECK:               %[[ROW0:.+]] = scf.if %[[FIRST]] -> (index) {
// CHECK:                 %[[Q00:.+]] = arith.muli %[[LB]], %{{.+}} : index
// CHECK:                 scf.yield %[[Q00]]
// CHECK:               %[[P0:.+]] = memref.load %[[POS]][] : memref<i32>
// CHECK:               flexattn.ring.copy %[[Q]][%[[B:[^,]+]], %[[H]], %[[ROW0]]] into %[[STRA]][%[[P0]]] if %[[FIRST]] :
// CHECK:               flexattn.ring.copy %[[DO]][%[[B]], %[[H]], %[[ROW0]]] into %[[STRB]][%[[P0]]] if %[[FIRST]] :
// CHECK:               scf.for %[[QT:[^ ]+]] = %[[LB]] to %[[UB]]
// CHECK:                 scf.for %{{.+}} = %{{.+}} to %{{.+}} step %{{.+}} {
// After the step's last chunk, the next step's: its q0 at qt + 1, ahead of
// the wait.
// CHECK:                 %[[MORE:.+]] = arith.cmpi ult
// CHECK:                 %[[LAST:.+]] = arith.xori %[[MORE]], %{{.+}} : i1
// CHECK:                 %[[QT1:.+]] = arith.addi %[[QT]], %{{.+}} : index
// CHECK:                 %[[LATER:.+]] = arith.cmpi slt, %[[QT1]], %[[UB]] : index
// CHECK:                 %[[THEN:.+]] = arith.andi %[[LAST]], %[[LATER]] : i1
// CHECK:                 %[[NXT:.+]] = scf.if %[[THEN]] -> (index) {
// CHECK:                 %[[AT:.+]] = memref.load %[[POS]][] : memref<i32>
// CHECK:                 %[[NEXT:.+]] = arith.addi %[[AT]], %{{.+}} : i32
// CHECK:                 flexattn.ring.wait %[[STRA]][%[[AT]]] in_flight(1)
// CHECK:                 %[[QS:.+]] = flexattn.ring.slot %[[STRA]]
// CHECK:                 flexattn.ring.wait %[[STRB]][%[[AT]]] in_flight(0)
// CHECK:                 %[[DOT:.+]] = flexattn.ring.slot %[[STRB]]
// The next chunk's copy, before this chunk's MMAs: this step's next chunk,
// or past its last the next step's first.
// CHECK:                 %[[ANY:.+]] = arith.ori %[[MORE]], %[[THEN]] : i1
// CHECK:                 %[[R1:.+]] = arith.select %[[MORE]], %{{.+}}, %[[NXT]] : index
// CHECK:                 flexattn.ring.acquire %[[STRA]][%[[NEXT]]]
// CHECK:                 flexattn.ring.copy %[[Q]][%[[B]], %[[H]], %[[R1]]] into %[[STRA]][%[[NEXT]]] if %[[ANY]]
// CHECK:                 flexattn.ring.copy %[[DO]][%[[B]], %[[H]], %[[R1]]] into %[[STRB]][%[[NEXT]]] if %[[ANY]]
// Sᵀ = K Qᵀ and dPᵀ = V doutᵀ from the owned band.
// CHECK:                 flexattn.mma %{{.+}}[%{{.+}}], %[[QS]] {transpose_b} : !flexattn.smem_tile<64x64xbf16>, !flexattn.smem_tile<64x64xbf16> -> vector<32xf32>
// CHECK:                 flexattn.mma %{{.+}}[%{{.+}}], %[[DOT]] {transpose_b}
// Per element: the query's base (log2(e) lse: without a score_mod no
// select for -inf) and delta once per column; P = exp2(fma(x, scale
// log2(e), -base)), 0 past M x N (a tile crosses them here); dS = P (dP -
// delta), unscaled; no mask, no capture.
// CHECK:                 %[[LSEQ:.+]] = memref.load %[[LSE]]
// CHECK:                 %[[L2:.+]] = arith.mulf %[[LSEQ]], %{{.+}} : f32
// CHECK:                 %[[DELTAQ:.+]] = memref.load %[[DELTA]]
// CHECK:                 %[[NB:.+]] = arith.negf %[[L2]] : f32
// CHECK:                 %[[ARG:.+]] = math.fma %{{.+}}, %{{.+}}, %[[NB]] : f32
// CHECK:                 %[[E:.+]] = math.exp2 %[[ARG]] : f32
// CHECK:                 %[[P:.+]] = arith.select %{{.+}}, %[[E]], %{{.+}} : f32
// CHECK:                 %[[DPD:.+]] = arith.subf %{{.+}}, %[[DELTAQ]] : f32
// CHECK:                 arith.mulf %[[P]], %[[DPD]] : f32
// CHECK-NOT:             flexattn.apply_mods_vjp
// CHECK-NOT:             memref.atomic_rmw
// dV += Pᵀ dout, dK += dXᵀ Q (register A)
// CHECK:                 %[[PT:.+]] = vector.from_elements {{.*}} : vector<32xbf16>
// CHECK:                 %[[DXT:.+]] = vector.from_elements {{.*}} : vector<32xbf16>
// CHECK:                 %[[OLDV:.+]] = memref.load %[[DVACC]][]
// CHECK:                 flexattn.mma %[[PT]], %[[DOT]], %[[OLDV]] : vector<32xbf16>, !flexattn.smem_tile<64x64xbf16>, vector<32xf32> -> vector<32xf32>
// CHECK:                 %[[OLDK:.+]] = memref.load %[[DKACC]][]
// CHECK:                 flexattn.mma %[[DXT]], %[[QS]], %[[OLDK]]
// CHECK:                 flexattn.ring.release %[[STRA]]
// The stores: dK times the scale once (dV as summed), each 4 pairs of
// columns transposed across the quad (two rounds of shuffles, in every
// lane), then 16-byte stores of 8 columns, rows inside dk.
// CHECK:             %[[DKSUM:.+]] = memref.load %[[DKACC]][]
// CHECK:             %[[DKS:.+]] = arith.mulf %[[DKSUM]], %{{.+}} : vector<32xf32>
// CHECK:             vector.extract %[[DKS]]
// CHECK:             arith.truncf %{{.+}} : f32 to bf16
// CHECK:             vector.bitcast %{{.+}} : vector<2xbf16> to vector<1xi32>
// CHECK-COUNT-2:     gpu.shuffle  xor %{{.+}}, %{{.+}}, %{{.+}} : i32
// CHECK-COUNT-2:     gpu.shuffle  xor %{{.+}}, %{{.+}}, %{{.+}} : i32
// CHECK:             scf.if
// CHECK:               %[[EIGHT:.+]] = vector.bitcast %{{.+}} : vector<4xi32> to vector<8xbf16>
// CHECK:               vector.store %[[EIGHT]], %[[DK]][%{{.+}}] {alignment = 16 : i64} : memref<1x1x100x64xbf16>, vector<8xbf16>
// CHECK:             %[[DVSUM:.+]] = memref.load %[[DVACC]][]
// CHECK-NOT:         arith.mulf %[[DVSUM]]
// CHECK:             vector.store %{{.+}}, %[[DV]][%{{.+}}] {alignment = 16 : i64} : memref<1x1x100x64xbf16>, vector<8xbf16>
// CHECK:           } else {
// dq CTA: Q and dout once, then per KV tile K and V; the mods with their
// derivative and mask; the weight's gradient by f32 atomics.
// CHECK:             flexattn.ring.copy %[[Q]][%{{.+}}] into %[[OWNA]]
// CHECK:             flexattn.ring.copy %[[DO]][%{{.+}}] into %[[OWNB]]
// CHECK:             flexattn.ring.copy %[[K]][%{{.+}}] into %[[STRA]]
// CHECK:             flexattn.ring.copy %[[V]][%{{.+}}] into %[[STRB]]
// CHECK:             scf.for
// The owned rows' lse and delta once per step, before its chunks (their
// loads' latency off the chunks' path). With a score_mod, base(log2(e) lse)
// is 0 where lse = -inf.
// CHECK:               %[[ROWLSE:.+]] = memref.load %[[LSE]][
// CHECK:               %[[DQL2:.+]] = arith.mulf %[[ROWLSE]], %{{.+}} : f32
// CHECK:               %[[EMPTY:.+]] = arith.cmpf oeq, %[[DQL2]], %{{.+}} : f32
// CHECK:               arith.select %[[EMPTY]], %{{.+}}, %[[DQL2]] : f32
// CHECK:               scf.for
// CHECK-NOT:             memref.load %[[LSE]]
// CHECK:                 flexattn.ring.wait %[[STRA]]
// CHECK:                 %[[KT:.+]] = flexattn.ring.slot %[[STRA]]
// CHECK:                 flexattn.ring.copy %[[K]][%{{.+}}] into %[[STRA]][%{{.+}}] if
// CHECK:                 flexattn.ring.copy %[[V]][%{{.+}}] into %[[STRB]][%{{.+}}] if
// CHECK:                 flexattn.mma %{{.+}}[%{{.+}}], %[[KT]] {transpose_b}
// The weight's gradient: a running sum per thread (one index), added with
// an f32 atomic when the index changes and at the tile's end.
// CHECK:               flexattn.apply_mods_vjp
// CHECK:               math.fma
// CHECK:               scf.if
// CHECK:                 arith.cmpi eq
// CHECK:                 scf.if
// CHECK:                   arith.addf
// CHECK:                 } else {
// CHECK:                   memref.atomic_rmw addf %{{.+}}, %[[DW]]
// (P's fragment, unused here, first.)
// CHECK:               vector.from_elements {{.*}} : vector<32xbf16>
// CHECK:               %[[DX:.+]] = vector.from_elements {{.*}} : vector<32xbf16>
// CHECK:               %[[OLDQ:.+]] = memref.load %[[DQACC]][]
// CHECK:               flexattn.mma %[[DX]], %[[KT]], %[[OLDQ]]
// CHECK:             %[[DQSUM:.+]] = memref.load %[[DQACC]][]
// CHECK:             arith.mulf %[[DQSUM]], %{{.+}} : vector<32xf32>
// CHECK:             vector.store %{{.+}}, %[[DQ]][%{{.+}}] {alignment = 16 : i64} : memref<1x2x100x64xbf16>, vector<8xbf16>
// CHECK:             memref.atomic_rmw addf %{{.+}}, %[[DW]]
func.func @two_nests(%q: memref<1x2x100x64xbf16>, %k: memref<1x1x100x64xbf16>, %v: memref<1x1x100x64xbf16>,
                     %do: memref<1x2x100x64xbf16>, %lse: memref<1x2x100xf32>, %delta: memref<1x2x100xf32>,
                     %dq: memref<1x2x100x64xbf16>, %dk: memref<1x1x100x64xbf16>, %dv: memref<1x1x100x64xbf16>,
                     %w: memref<2xf32>, %dw: memref<2xf32>) attributes {flexattn.zero_init = array<i64: 10>} {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %c6 = arith.constant 6 : index
  %c64 = arith.constant 64 : index
  %zero = arith.constant 0.0 : f32
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c6, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c64, %sy = %c1, %sz = %c1) {
    %first = arith.cmpi ult, %bx, %c2 : index
    scf.if %first {
      memref.alloca_scope {
        %kv0 = arith.muli %bx, %c64 : index
        %dk_acc = memref.alloca() : memref<64x64xf32>
        linalg.fill ins(%zero : f32) outs(%dk_acc : memref<64x64xf32>)
        %dv_acc = memref.alloca() : memref<64x64xf32>
        linalg.fill ins(%zero : f32) outs(%dv_acc : memref<64x64xf32>)
        scf.for %h = %c0 to %c2 step %c1 {
          scf.for %qt = %c0 to %c2 step %c1 {
            %q0 = arith.muli %qt, %c64 : index
            flexattn.backward_step ins(%q, %k, %v, %do : memref<1x2x100x64xbf16>, memref<1x1x100x64xbf16>, memref<1x1x100x64xbf16>, memref<1x2x100x64xbf16>)
                stats(%lse, %delta : memref<1x2x100xf32>, memref<1x2x100xf32>)
                dk(%dk_acc : memref<64x64xf32>) dv(%dv_acc : memref<64x64xf32>) at(%c0, %h, %c0, %q0, %kv0)
                attributes {scale = 0.125 : f32, tile_size = array<i64: 64, 64>}
          }
        }
        flexattn.store_tile %dk_acc : memref<64x64xf32> into %dk : memref<1x1x100x64xbf16> at(%c0, %c0, %kv0)
        flexattn.store_tile %dv_acc : memref<64x64xf32> into %dv : memref<1x1x100x64xbf16> at(%c0, %c0, %kv0)
      }
    } else {
      %t = arith.subi %bx, %c2 : index
      %qt = arith.remui %t, %c2 : index
      %h = arith.divui %t, %c2 : index
      memref.alloca_scope {
        %q0 = arith.muli %qt, %c64 : index
        %dq_acc = memref.alloca() : memref<64x64xf32>
        linalg.fill ins(%zero : f32) outs(%dq_acc : memref<64x64xf32>)
        scf.for %j = %c0 to %c2 step %c1 {
          %kv0 = arith.muli %j, %c64 : index
          flexattn.backward_step ins(%q, %k, %v, %do : memref<1x2x100x64xbf16>, memref<1x1x100x64xbf16>, memref<1x1x100x64xbf16>, memref<1x2x100x64xbf16>)
              stats(%lse, %delta : memref<1x2x100xf32>, memref<1x2x100xf32>)
              dq(%dq_acc : memref<64x64xf32>) at(%c0, %h, %c0, %q0, %kv0)
              captures(%w : memref<2xf32>) capture_grads(%dw : memref<2xf32>)
              attributes {masked, scale = 0.125 : f32, tile_size = array<i64: 64, 64>, grad_captures = array<i64: 0>, vjp_loads = array<i64: 0>}
            score_mod_vjp {
            ^bb0(%s: f32, %bb: index, %hh: index, %x: index, %y: index, %c: memref<2xf32>, %dy: f32):
              %wh = memref.load %c[%hh] : memref<2xf32>
              %r = arith.addf %s, %wh : f32
              flexattn.yield %r, %dy, %dy, %hh : f32, f32, f32, index
            } mask_mod {
            ^bb0(%bb: index, %hh: index, %x: index, %y: index, %c: memref<2xf32>):
              %keep = arith.cmpi sge, %x, %y : index
              flexattn.yield %keep : i1
            }
        }
        flexattn.store_tile %dq_acc : memref<64x64xf32> into %dq : memref<1x2x100x64xbf16> at(%c0, %h, %q0)
      }
    }
    gpu.terminator
  }
  return
}

// -----

// What the tensor-core kernel does not cover is an error (Python sends it
// to flexattn-lower-backward-rows): here a 64 x 32 tile.

func.func @not_square(%q: memref<1x1x64x64xbf16>, %k: memref<1x1x64x64xbf16>, %v: memref<1x1x64x64xbf16>,
                      %do: memref<1x1x64x64xbf16>, %lse: memref<1x1x64xf32>, %delta: memref<1x1x64xf32>,
                      %dq: memref<1x1x64x64xbf16>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c64 = arith.constant 64 : index
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c1, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c64, %sy = %c1, %sz = %c1) {
    %dq_acc = memref.alloca() : memref<64x64xf32>
    // expected-error @below {{flexattn-lower-backward-mma needs square tiles of 64 or 128, got [64, 32]}}
    flexattn.backward_step ins(%q, %k, %v, %do : memref<1x1x64x64xbf16>, memref<1x1x64x64xbf16>, memref<1x1x64x64xbf16>, memref<1x1x64x64xbf16>)
        stats(%lse, %delta : memref<1x1x64xf32>, memref<1x1x64xf32>)
        dq(%dq_acc : memref<64x64xf32>) at(%c0, %c0, %c0, %c0, %c0)
        attributes {scale = 0.125 : f32, tile_size = array<i64: 64, 32>}
    flexattn.store_tile %dq_acc : memref<64x64xf32> into %dq : memref<1x1x64x64xbf16> at(%c0, %c0, %c0)
    gpu.terminator
  }
  return
}

// -----

// The deterministic mode: the weight's gradient has a trailing dim of 512
// partial slots (B x Hq x ceil(M / 64) Q tiles x 128 threads); each thread
// adds its running sum into its own slot ((b Hq + h) 2 + q0 / 64) 128 + tid
// with a plain load and store: no atomics.
// CHECK-LABEL: func.func @deterministic(
// CHECK-SAME:    %[[DW:[^:]+]]: memref<2x512xf32>)
// CHECK-NOT:     memref.atomic_rmw
// CHECK:         flexattn.apply_mods_vjp
// CHECK:         } else {
// CHECK:           scf.if
// CHECK:             %[[OLD:.+]] = memref.load %[[DW]][%{{.+}}, %[[SLOT:[0-9a-z_]+]]] : memref<2x512xf32>
// CHECK:             %[[NEW:.+]] = arith.addf %[[OLD]], %{{.+}} : f32
// CHECK:             memref.store %[[NEW]], %[[DW]][%{{.+}}, %[[SLOT]]] : memref<2x512xf32>
// The tile's end: the last running sum.
// CHECK:         vector.store
// CHECK:         memref.load %[[DW]]
// CHECK:         memref.store %{{.+}}, %[[DW]]
// CHECK-NOT:     memref.atomic_rmw
func.func @deterministic(%q: memref<1x2x100x64xbf16>, %k: memref<1x1x100x64xbf16>, %v: memref<1x1x100x64xbf16>,
                    %do: memref<1x2x100x64xbf16>, %lse: memref<1x2x100xf32>, %delta: memref<1x2x100xf32>,
                    %dq: memref<1x2x100x64xbf16>, %w: memref<2xf32>, %dw: memref<2x512xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %c4 = arith.constant 4 : index
  %c64 = arith.constant 64 : index
  %zero = arith.constant 0.0 : f32
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c4, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c64, %sy = %c1, %sz = %c1) {
    %qt = arith.remui %bx, %c2 : index
    %h = arith.divui %bx, %c2 : index
    memref.alloca_scope {
      %q0 = arith.muli %qt, %c64 : index
      %dq_acc = memref.alloca() : memref<64x64xf32>
      linalg.fill ins(%zero : f32) outs(%dq_acc : memref<64x64xf32>)
      scf.for %j = %c0 to %c2 step %c1 {
        %kv0 = arith.muli %j, %c64 : index
        flexattn.backward_step ins(%q, %k, %v, %do : memref<1x2x100x64xbf16>, memref<1x1x100x64xbf16>, memref<1x1x100x64xbf16>, memref<1x2x100x64xbf16>)
            stats(%lse, %delta : memref<1x2x100xf32>, memref<1x2x100xf32>)
            dq(%dq_acc : memref<64x64xf32>) at(%c0, %h, %c0, %q0, %kv0)
            captures(%w : memref<2xf32>) capture_grads(%dw : memref<2x512xf32>)
            attributes {scale = 0.125 : f32, tile_size = array<i64: 64, 64>, grad_captures = array<i64: 0>, vjp_loads = array<i64: 0>}
          score_mod_vjp {
          ^bb0(%s: f32, %bb: index, %hh: index, %x: index, %y: index, %c: memref<2xf32>, %dy: f32):
            %wh = memref.load %c[%hh] : memref<2xf32>
            %r = arith.addf %s, %wh : f32
            flexattn.yield %r, %dy, %dy, %hh : f32, f32, f32, index
          }
      }
      flexattn.store_tile %dq_acc : memref<64x64xf32> into %dq : memref<1x2x100x64xbf16> at(%c0, %h, %q0)
    }
    gpu.terminator
  }
  return
}

// -----

// Too few partial slots for the kernel's threads is an error.
func.func @too_few_partials(%q: memref<1x2x100x64xbf16>, %k: memref<1x1x100x64xbf16>, %v: memref<1x1x100x64xbf16>,
                    %do: memref<1x2x100x64xbf16>, %lse: memref<1x2x100xf32>, %delta: memref<1x2x100xf32>,
                    %dq: memref<1x2x100x64xbf16>, %w: memref<2xf32>, %dw: memref<2x256xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %c4 = arith.constant 4 : index
  %c64 = arith.constant 64 : index
  %zero = arith.constant 0.0 : f32
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c4, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c64, %sy = %c1, %sz = %c1) {
    %qt = arith.remui %bx, %c2 : index
    %h = arith.divui %bx, %c2 : index
    memref.alloca_scope {
      %q0 = arith.muli %qt, %c64 : index
      %dq_acc = memref.alloca() : memref<64x64xf32>
      linalg.fill ins(%zero : f32) outs(%dq_acc : memref<64x64xf32>)
      scf.for %j = %c0 to %c2 step %c1 {
        %kv0 = arith.muli %j, %c64 : index
        // expected-error @below {{flexattn-lower-backward-mma: partial capture gradients need a trailing dim of at least 512 slots (B x Hq x ceil(M / 64) x 128 threads) on every gradient, got 'memref<2x256xf32>'}}
        flexattn.backward_step ins(%q, %k, %v, %do : memref<1x2x100x64xbf16>, memref<1x1x100x64xbf16>, memref<1x1x100x64xbf16>, memref<1x2x100x64xbf16>)
            stats(%lse, %delta : memref<1x2x100xf32>, memref<1x2x100xf32>)
            dq(%dq_acc : memref<64x64xf32>) at(%c0, %h, %c0, %q0, %kv0)
            captures(%w : memref<2xf32>) capture_grads(%dw : memref<2x256xf32>)
            attributes {scale = 0.125 : f32, tile_size = array<i64: 64, 64>, grad_captures = array<i64: 0>, vjp_loads = array<i64: 0>}
          score_mod_vjp {
          ^bb0(%s: f32, %bb: index, %hh: index, %x: index, %y: index, %c: memref<2xf32>, %dy: f32):
            %wh = memref.load %c[%hh] : memref<2xf32>
            %r = arith.addf %s, %wh : f32
            flexattn.yield %r, %dy, %dy, %hh : f32, f32, f32, index
          }
      }
      flexattn.store_tile %dq_acc : memref<64x64xf32> into %dq : memref<1x2x100x64xbf16> at(%c0, %h, %q0)
    }
    gpu.terminator
  }
  return
}

// -----

// dX leaves the scale to the accumulator's store, so the steps of one
// accumulator must agree on it.

func.func @two_scales(%q: memref<1x1x64x64xbf16>, %k: memref<1x1x64x64xbf16>, %v: memref<1x1x64x64xbf16>,
                      %do: memref<1x1x64x64xbf16>, %lse: memref<1x1x64xf32>, %delta: memref<1x1x64xf32>,
                      %dq: memref<1x1x64x64xbf16>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c64 = arith.constant 64 : index
  %zero = arith.constant 0.0 : f32
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c1, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c64, %sy = %c1, %sz = %c1) {
    %dq_acc = memref.alloca() : memref<64x64xf32>
    linalg.fill ins(%zero : f32) outs(%dq_acc : memref<64x64xf32>)
    flexattn.backward_step ins(%q, %k, %v, %do : memref<1x1x64x64xbf16>, memref<1x1x64x64xbf16>, memref<1x1x64x64xbf16>, memref<1x1x64x64xbf16>)
        stats(%lse, %delta : memref<1x1x64xf32>, memref<1x1x64xf32>)
        dq(%dq_acc : memref<64x64xf32>) at(%c0, %c0, %c0, %c0, %c0)
        attributes {scale = 0.125 : f32, tile_size = array<i64: 64, 64>}
    // expected-error @below {{flexattn-lower-backward-mma: the steps of an accumulator must share one scale}}
    flexattn.backward_step ins(%q, %k, %v, %do : memref<1x1x64x64xbf16>, memref<1x1x64x64xbf16>, memref<1x1x64x64xbf16>, memref<1x1x64x64xbf16>)
        stats(%lse, %delta : memref<1x1x64xf32>, memref<1x1x64xf32>)
        dq(%dq_acc : memref<64x64xf32>) at(%c0, %c0, %c0, %c0, %c0)
        attributes {scale = 0.25 : f32, tile_size = array<i64: 64, 64>}
    flexattn.store_tile %dq_acc : memref<64x64xf32> into %dq : memref<1x1x64x64xbf16> at(%c0, %c0, %c0)
    gpu.terminator
  }
  return
}

// -----

// The next step's first chunk is copied ahead of it, so a step's
// coordinates are computed again for the next iteration: only from loads
// and pure ops, here an scf.if is an error.

func.func @coordinates_from_a_region(%q: memref<1x1x128x64xbf16>, %k: memref<1x1x128x64xbf16>, %v: memref<1x1x128x64xbf16>,
                                     %do: memref<1x1x128x64xbf16>, %lse: memref<1x1x128xf32>, %delta: memref<1x1x128xf32>,
                                     %dk: memref<1x1x128x64xbf16>, %dv: memref<1x1x128x64xbf16>, %flip: i1) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %c64 = arith.constant 64 : index
  %zero = arith.constant 0.0 : f32
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c1, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c64, %sy = %c1, %sz = %c1) {
    %dk_acc = memref.alloca() : memref<64x64xf32>
    linalg.fill ins(%zero : f32) outs(%dk_acc : memref<64x64xf32>)
    %dv_acc = memref.alloca() : memref<64x64xf32>
    linalg.fill ins(%zero : f32) outs(%dv_acc : memref<64x64xf32>)
    scf.for %qt = %c0 to %c2 step %c1 {
      // expected-error @below {{flexattn-lower-backward-mma recomputes values of a loop body for a later iteration; they must come from loads and pure ops without regions}}
      %q0 = scf.if %flip -> (index) {
        %r = arith.muli %qt, %c64 : index
        scf.yield %r : index
      } else {
        scf.yield %c0 : index
      }
      flexattn.backward_step ins(%q, %k, %v, %do : memref<1x1x128x64xbf16>, memref<1x1x128x64xbf16>, memref<1x1x128x64xbf16>, memref<1x1x128x64xbf16>)
          stats(%lse, %delta : memref<1x1x128xf32>, memref<1x1x128xf32>)
          dk(%dk_acc : memref<64x64xf32>) dv(%dv_acc : memref<64x64xf32>) at(%c0, %c0, %c0, %q0, %c0)
          attributes {scale = 0.125 : f32, tile_size = array<i64: 64, 64>}
    }
    flexattn.store_tile %dk_acc : memref<64x64xf32> into %dk : memref<1x1x128x64xbf16> at(%c0, %c0, %c0)
    flexattn.store_tile %dv_acc : memref<64x64xf32> into %dv : memref<1x1x128x64xbf16> at(%c0, %c0, %c0)
    gpu.terminator
  }
  return
}

// -----

// A dk/dv step with dq_sum (flexattn-atomic-dq), 128 x 128 tiles at D = 128:
// each group stores its dXᵀ transposed into its slot of a 2 x 64 x 64 ring;
// thread 0 waits until its previous bulk reduction has read the staging
// tile; after a barrier each group issues dV, dK and its dQ column panel
// (its group number) over both bands of keys (dX, shared, 64 queries x 64
// keys, times K's panel rows) together and waits for them at once, stages
// scale x the dQ fragment row-major in one 64 x 128 f32 tile, and after a
// second barrier thread 0 adds the chunk's rows into dq_sum with one bulk
// reduction.
// CHECK-LABEL: func.func @dq_sum(
// CHECK-SAME:    %[[DQ:[^:]+]]: memref<1x1x128x128xf32>
// CHECK:         %[[DX:.+]] = flexattn.ring.alloc consumers(256) : !flexattn.ring<2 x 64x64xbf16>
// CHECK:         %[[ST:.+]] = flexattn.ring.alloc consumers(256) : !flexattn.ring<1 x 64x128xf32>
// CHECK:         scf.for
// CHECK:           %[[SLOT:.+]] = flexattn.ring.slot %[[DX]]
// CHECK:           flexattn.frag.store %{{.*}}, %[[SLOT]] {transpose} : vector<32xbf16>, !flexattn.smem_tile<64x64xbf16>
// CHECK:           scf.if %[[FIRST:.+]] {
// CHECK-NEXT:        flexattn.bulk.wait_read
// CHECK:           gpu.barrier
// CHECK:           %[[STAGE:.+]] = flexattn.ring.slot %[[ST]]
// CHECK:           %[[DV:.+]] = flexattn.mma %{{.*}}, %{{.*}}, %{{.*}} : vector<32xbf16>, !flexattn.smem_tile<64x128xbf16>, vector<64xf32> -> vector<64xf32>
// CHECK:           %[[DK:.+]] = flexattn.mma %{{.*}}, %{{.*}}, %{{.*}} : vector<32xbf16>, !flexattn.smem_tile<64x128xbf16>, vector<64xf32> -> vector<64xf32>
// CHECK:           %[[P0:.+]] = flexattn.smem_tile.panel %{{.*}}[%{{.*}}, %[[G:.+]]] : !flexattn.smem_tile<128x128xbf16> to !flexattn.smem_tile<64x64xbf16>
// CHECK:           %[[A0:.+]] = flexattn.mma %{{.*}}[%{{.*}}], %[[P0]] : !flexattn.smem_tile<64x64xbf16>, !flexattn.smem_tile<64x64xbf16> -> vector<32xf32>
// CHECK:           %[[P1:.+]] = flexattn.smem_tile.panel %{{.*}}[%{{.*}}, %[[G]]]
// CHECK:           %[[A1:.+]] = flexattn.mma %{{.*}}[%{{.*}}], %[[P1]], %[[A0]]
// CHECK:           %[[W:.+]]:3 = flexattn.mma.wait pending(0) %[[DV]], %[[DK]], %[[A1]] : vector<64xf32>, vector<64xf32>, vector<32xf32>
// CHECK:           %[[S:.+]] = arith.mulf %[[W]]#2, %{{.*}} : vector<32xf32>
// CHECK:           flexattn.frag.stage %[[S]], %[[STAGE]][%{{.*}}] : vector<32xf32>, !flexattn.smem_tile<64x128xf32>
// CHECK:           gpu.barrier
// CHECK:           scf.if %[[FIRST]] {
// CHECK:             flexattn.bulk.reduce_add %[[STAGE]], %[[DQ]][%{{.*}}, %{{.*}}, %{{.*}}] rows(%{{.*}}) : !flexattn.smem_tile<64x128xf32>, memref<1x1x128x128xf32>
// CHECK:           flexattn.ring.release
func.func @dq_sum(%q: memref<1x1x128x128xbf16>, %k: memref<1x1x128x128xbf16>, %v: memref<1x1x128x128xbf16>,
                  %do: memref<1x1x128x128xbf16>, %lse: memref<1x1x128xf32>, %delta: memref<1x1x128xf32>,
                  %dq: memref<1x1x128x128xf32>, %dk: memref<1x1x128x128xbf16>, %dv: memref<1x1x128x128xbf16>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c128 = arith.constant 128 : index
  %zero = arith.constant 0.0 : f32
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c1, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c128, %sy = %c1, %sz = %c1) {
    %dk_acc = memref.alloca() : memref<128x128xf32>
    linalg.fill ins(%zero : f32) outs(%dk_acc : memref<128x128xf32>)
    %dv_acc = memref.alloca() : memref<128x128xf32>
    linalg.fill ins(%zero : f32) outs(%dv_acc : memref<128x128xf32>)
    flexattn.backward_step ins(%q, %k, %v, %do : memref<1x1x128x128xbf16>, memref<1x1x128x128xbf16>, memref<1x1x128x128xbf16>, memref<1x1x128x128xbf16>)
        stats(%lse, %delta : memref<1x1x128xf32>, memref<1x1x128xf32>)
        dk(%dk_acc : memref<128x128xf32>) dv(%dv_acc : memref<128x128xf32>)
        dq_sum(%dq : memref<1x1x128x128xf32>) at(%c0, %c0, %c0, %c0, %c0)
        attributes {scale = 0.125 : f32, tile_size = array<i64: 128, 128>}
    flexattn.store_tile %dk_acc : memref<128x128xf32> into %dk : memref<1x1x128x128xbf16> at(%c0, %c0, %c0)
    flexattn.store_tile %dv_acc : memref<128x128xf32> into %dv : memref<1x1x128x128xbf16> at(%c0, %c0, %c0)
    gpu.terminator
  }
  return
}
