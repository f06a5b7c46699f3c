// RUN: flexattn-opt %s -split-input-file --flexattn-lower-fragments --canonicalize --cse | FileCheck %s

// Fragment layout: element e = 4 j + 2 h + q is (row + 8 h, col + 8 j + q).

// CHECK-LABEL: func.func @softmax_mods(
// CHECK-SAME:    %[[S:[^:]+]]: vector<8xf32>, %[[M:[^:]+]]: vector<2xf32>, %[[L:[^:]+]]: vector<2xf32>, %[[BIAS:[^:]+]]: memref<90xf32>, %[[B:[^:]+]]: index, %[[H:[^:]+]]: index, %[[ROW:[^:]+]]: index, %[[COL:[^:]+]]: index)
// M = 100 is not a multiple of the 64-row tile: q indices clamped to 99.
// CHECK:         %[[R0:.*]] = arith.index_cast %[[ROW]] : index to i32
// CHECK:         %[[R0C:.*]] = arith.minui %[[R0]], %[[C99:.*]] : i32
// CHECK:         %[[QI0:.*]] = arith.index_cast %[[R0C]] : i32 to index
// CHECK:         %[[R1:.*]] = arith.addi %[[R0]], %{{.*}} : i32
// CHECK:         %[[R1C:.*]] = arith.minui %[[R1]], %[[C99]] : i32
// CHECK:         %[[QI1:.*]] = arith.index_cast %[[R1C]] : i32 to index
// CHECK:         %[[K0:.*]] = arith.index_cast %[[COL]] : index to i32
// CHECK:         %[[S0:.*]] = vector.extract %[[S]][0] : f32 from vector<8xf32>
// u = log2(e) * mods(scale * s), kv index clamped to 89 for the mods, -inf past N = 90
// CHECK:         %[[K0C:.*]] = arith.minui %[[K0]], %{{.*}} : i32
// CHECK:         %[[X0:.*]] = arith.mulf %[[S0]], %{{.*}} : f32
// CHECK:         %[[K0I:.*]] = arith.index_cast %[[K0C]] : i32 to index
// CHECK:         %[[MOD0:.*]] = flexattn.apply_mods %[[X0]] at(%[[B]], %[[H]], %[[QI0]], %[[K0I]]) captures(%[[BIAS]] : memref<90xf32>) attributes {masked} score_mod {
// CHECK:         } mask_mod {
// CHECK:         } : f32
// CHECK:         %[[U0L:.*]] = arith.mulf %[[MOD0]], %[[LOG2E:.*]] : f32
// CHECK:         %[[IN0:.*]] = arith.cmpi ult, %[[K0]], %{{.*}} : i32
// CHECK:         %[[U0:.*]] = arith.select %[[IN0]], %[[U0L]], %[[NINF:.*]] : f32
// Element 2 is row + 8 (h = 1).
// CHECK:         flexattn.apply_mods %{{.*}} at(%[[B]], %[[H]], %[[QI1]], %[[K0I]])
// CHECK-COUNT-5: flexattn.apply_mods
// m_new = max(m, rowmax(u)): the thread's elements of the row, then the 4
// threads that share it.
// CHECK:         %[[MO0:.*]] = vector.extract %[[M]][0] : f32 from vector<2xf32>
// CHECK:         %[[MX0:.*]] = arith.maxnumf %[[U0]], %[[NINF]] : f32
// CHECK-COUNT-3: arith.maxnumf
// CHECK-NEXT:    %[[SH1:.*]], %{{.*}} = gpu.shuffle  xor %[[X1:.*]], %{{.*}}, %{{.*}} : f32
// CHECK-NEXT:    %[[X2:.*]] = arith.maxnumf %[[X1]], %[[SH1]] : f32
// CHECK-NEXT:    %[[SH2:.*]], %{{.*}} = gpu.shuffle  xor %[[X2]], %{{.*}}, %{{.*}} : f32
// CHECK-NEXT:    %[[X3:.*]] = arith.maxnumf %[[X2]], %[[SH2]] : f32
// CHECK-NEXT:    %[[MN0:.*]] = arith.maxnumf %[[MO0]], %[[X3]] : f32
// base = m_new, or 0 where m_new = -inf; alpha = exp2(m - base)
// CHECK:         %[[EMPTY0:.*]] = arith.cmpf oeq, %[[MN0]], %[[NINF]] : f32
// CHECK-NEXT:    %[[BASE0:.*]] = arith.select %[[EMPTY0]], %{{.*}}, %[[MN0]] : f32
// CHECK-NEXT:    %[[D0:.*]] = arith.subf %[[MO0]], %[[BASE0]] : f32
// CHECK-NEXT:    %[[A0:.*]] = math.exp2 %[[D0]] : f32
// P = exp2(u - base): with mods the scale is already in u, a subtraction
// CHECK:         %[[PD0:.*]] = arith.subf %[[U0]], %[[BASE0]] : f32
// CHECK-NEXT:    %[[P0:.*]] = math.exp2 %[[PD0]] : f32
// l = alpha * l + rowsum(P)
// CHECK:         %[[LO0:.*]] = vector.extract %[[L]][0] : f32 from vector<2xf32>
// CHECK:         %[[AL0:.*]] = arith.mulf %[[A0]], %[[LO0]] : f32
// CHECK:         %[[SUM0:.*]] = arith.addf %[[P0]], %{{.*}} : f32
// P rounded in pairs (the MMA's 16-bit register operand)
// CHECK:         %[[PAIR0:.*]] = vector.from_elements %[[P0]], %{{.*}} : vector<2xf32>
// CHECK-NEXT:    %[[H0:.*]] = arith.truncf %[[PAIR0]] : vector<2xf32> to vector<2xbf16>
// CHECK-NEXT:    vector.insert_strided_slice %[[H0]], %{{.*}} {offsets = [0], strides = [1]} : vector<2xbf16> into vector<8xbf16>
// CHECK-COUNT-3: vector.insert_strided_slice
// CHECK-NEXT:    return
// A KV tile of 16 keys (8 score elements per thread) with a score_mod and a
// mask_mod on a partial block, M = 100, N = 90 (both tails).
func.func @softmax_mods(%s: vector<8xf32>, %m: vector<2xf32>, %l: vector<2xf32>, %bias: memref<90xf32>,
                        %b: index, %h: index, %row: index, %col: index) -> (vector<8xbf16>, vector<2xf32>, vector<2xf32>, vector<2xf32>) {
  %p, %m1, %l1, %alpha = flexattn.frag.softmax %s state(%m, %l) at(%b, %h, %row, %col)
      captures(%bias : memref<90xf32>)
      attributes {masked, scale = 0.125 : f32, seq_lens = array<i64: 100, 90>, tile_size = array<i64: 64, 16>}
    score_mod {
    ^bb0(%sc: f32, %bb: i32, %hh: i32, %qi: i32, %kj: i32, %bs: memref<90xf32>):
      %k = arith.index_cast %kj : i32 to index
      %x = memref.load %bs[%k] : memref<90xf32>
      %r = arith.addf %sc, %x : f32
      flexattn.yield %r : f32
    } mask_mod {
    ^bb0(%bb: i32, %hh: i32, %qi: i32, %kj: i32, %bs: memref<90xf32>):
      %keep = arith.cmpi sge, %qi, %kj : i32
      flexattn.yield %keep : i1
    } : vector<8xf32>, vector<2xf32> -> vector<8xbf16>
  return %p, %m1, %l1, %alpha : vector<8xbf16>, vector<2xf32>, vector<2xf32>, vector<2xf32>
}

// -----

// No mods, M and N multiples of the tile: no clamps, no -inf selects; the max
// is taken over the raw scores and scale * log2(e) = 0.1803 applied once per
// row, then inside each exponent: P = exp2(fma(s, c, -base)).
// CHECK-LABEL: func.func @softmax_plain(
// CHECK-NOT:     arith.minui
// CHECK-NOT:     arith.select %{{.*}}, %{{.*}}, %{{.*}} : f32
// CHECK:         %[[C:.*]] = arith.constant 0.180336878 : f32
// CHECK:         gpu.shuffle  xor
// CHECK:         gpu.shuffle  xor
// CHECK-NEXT:    %[[MX:.*]] = arith.maxnumf
// CHECK-NEXT:    %[[MXC:.*]] = arith.mulf %[[MX]], %[[C]] : f32
// CHECK:         %[[NB:.*]] = arith.negf %{{.*}} : f32
// CHECK-NEXT:    %[[E:.*]] = math.fma %{{.*}}, %[[C]], %[[NB]] : f32
// CHECK-NEXT:    math.exp2 %[[E]] : f32
// CHECK:         arith.truncf %{{.*}} : vector<2xf32> to vector<2xf16>
func.func @softmax_plain(%s: vector<8xf32>, %m: vector<2xf32>, %l: vector<2xf32>,
                         %b: index, %h: index, %row: index, %col: index) -> (vector<8xf16>, vector<2xf32>, vector<2xf32>, vector<2xf32>) {
  %p, %m1, %l1, %alpha = flexattn.frag.softmax %s state(%m, %l) at(%b, %h, %row, %col)
      attributes {scale = 0.125 : f32, seq_lens = array<i64: 128, 128>, tile_size = array<i64: 64, 16>}
      : vector<8xf32>, vector<2xf32> -> vector<8xf16>
  return %p, %m1, %l1, %alpha : vector<8xf16>, vector<2xf32>, vector<2xf32>, vector<2xf32>
}

// -----

// A mask_mod alone on a partial block, in a kernel marked
// flexattn.masked_raw_max (the decode kernel): it applies to the raw score
// (no multiply before it), so the max stays raw and P's exponent one FMA per
// element, as without mods: P = exp2(fma(select(keep, s, -inf), c, -base)).
// CHECK-LABEL: func.func @softmax_mask_only(
// CHECK-SAME:    %[[S:[^:]+]]: vector<8xf32>
// CHECK:         %[[C:.*]] = arith.constant 0.180336878 : f32
// CHECK:         %[[S0:.*]] = vector.extract %[[S]][0] : f32 from vector<8xf32>
// CHECK-NOT:     arith.mulf
// CHECK:         %[[MOD0:.*]] = flexattn.apply_mods %[[S0]] at(
// CHECK-SAME:      attributes {masked} mask_mod {
// CHECK-COUNT-7: flexattn.apply_mods
// CHECK:         gpu.shuffle  xor
// CHECK:         gpu.shuffle  xor
// CHECK-NEXT:    %[[MX:.*]] = arith.maxnumf
// CHECK-NEXT:    %[[MXC:.*]] = arith.mulf %[[MX]], %[[C]] : f32
// CHECK:         %[[NB:.*]] = arith.negf %{{.*}} : f32
// CHECK-NEXT:    %[[E:.*]] = math.fma %[[MOD0]], %[[C]], %[[NB]] : f32
// CHECK-NEXT:    math.exp2 %[[E]] : f32
func.func @softmax_mask_only(%s: vector<8xf32>, %m: vector<2xf32>, %l: vector<2xf32>,
                             %b: index, %h: index, %row: index, %col: index) -> (vector<8xf16>, vector<2xf32>, vector<2xf32>, vector<2xf32>)
    attributes {flexattn.masked_raw_max} {
  %p, %m1, %l1, %alpha = flexattn.frag.softmax %s state(%m, %l) at(%b, %h, %row, %col)
      attributes {masked, scale = 0.125 : f32, seq_lens = array<i64: 128, 128>, tile_size = array<i64: 64, 16>}
    mask_mod {
    ^bb0(%bb: i32, %hh: i32, %qi: i32, %kj: i32):
      %keep = arith.cmpi sge, %qi, %kj : i32
      flexattn.yield %keep : i1
    } : vector<8xf32>, vector<2xf32> -> vector<8xf16>
  return %p, %m1, %l1, %alpha : vector<8xf16>, vector<2xf32>, vector<2xf32>, vector<2xf32>
}

// -----

// A score_mod in a kernel marked flexattn.natural_scores (sm_90a's, the
// decode kernel): u = mods(scale s) stays in natural units (the scale's
// multiply may contract with the score_mod's add, marked contract), log2(e) joins P's
// exponent fma and the row max once: no multiply of every score by log2(e).
// CHECK-LABEL: func.func @softmax_mods_natural(
// CHECK-SAME:    %[[S:[^:]+]]: vector<8xf32>
// CHECK-DAG:     %[[LOG2E:.*]] = arith.constant 1.44269502 : f32
// CHECK:         %[[S0:.*]] = vector.extract %[[S]][0] : f32 from vector<8xf32>
// CHECK:         %[[X0:.*]] = arith.mulf %[[S0]], %{{.*}} fastmath<contract> : f32
// CHECK:         %[[MOD0:.*]] = flexattn.apply_mods %[[X0]] at(
// CHECK:           arith.addf %{{.*}}, %{{.*}} fastmath<contract> : f32
// CHECK-NOT:     arith.mulf %[[MOD0]]
// CHECK:         %[[MX:.*]] = arith.maxnumf
// CHECK:         arith.mulf %{{.*}}, %[[LOG2E]] : f32
// CHECK:         %[[E:.*]] = math.fma %[[MOD0]], %[[LOG2E]], %{{.*}} : f32
// CHECK-NEXT:    math.exp2 %[[E]] : f32
func.func @softmax_mods_natural(%s: vector<8xf32>, %m: vector<2xf32>, %l: vector<2xf32>, %bias: memref<128xf32>,
                                %b: index, %h: index, %row: index, %col: index) -> (vector<8xbf16>, vector<2xf32>, vector<2xf32>, vector<2xf32>)
    attributes {flexattn.natural_scores} {
  %p, %m1, %l1, %alpha = flexattn.frag.softmax %s state(%m, %l) at(%b, %h, %row, %col)
      captures(%bias : memref<128xf32>)
      attributes {scale = 0.125 : f32, seq_lens = array<i64: 128, 128>, tile_size = array<i64: 64, 16>}
    score_mod {
    ^bb0(%sc: f32, %bb: i32, %hh: i32, %qi: i32, %kj: i32, %bs: memref<128xf32>):
      %k = arith.index_cast %kj : i32 to index
      %x = memref.load %bs[%k] : memref<128xf32>
      %r = arith.addf %sc, %x : f32
      flexattn.yield %r : f32
    } : vector<8xf32>, vector<2xf32> -> vector<8xbf16>
  return %p, %m1, %l1, %alpha : vector<8xbf16>, vector<2xf32>, vector<2xf32>, vector<2xf32>
}

// -----

// The same without the mark (the prefill kernels): the mask_mod applies to
// scale S, then log2(e), and P's exponent is a subtraction.
// CHECK-LABEL: func.func @softmax_mask_only_unmarked(
// CHECK-SAME:    %[[S:[^:]+]]: vector<8xf32>
// CHECK:         %[[S0:.*]] = vector.extract %[[S]][0] : f32 from vector<8xf32>
// CHECK:         %[[X0:.*]] = arith.mulf %[[S0]], %{{.*}} : f32
// CHECK:         %[[MOD0:.*]] = flexattn.apply_mods %[[X0]] at(
// CHECK:         %[[U0:.*]] = arith.mulf %[[MOD0]], %{{.*}} : f32
// CHECK-NOT:     math.fma
// CHECK:         %[[PD0:.*]] = arith.subf %[[U0]], %{{.*}} : f32
// CHECK-NEXT:    math.exp2 %[[PD0]] : f32
func.func @softmax_mask_only_unmarked(%s: vector<8xf32>, %m: vector<2xf32>, %l: vector<2xf32>,
                                      %b: index, %h: index, %row: index, %col: index) -> (vector<8xf16>, vector<2xf32>, vector<2xf32>, vector<2xf32>) {
  %p, %m1, %l1, %alpha = flexattn.frag.softmax %s state(%m, %l) at(%b, %h, %row, %col)
      attributes {masked, scale = 0.125 : f32, seq_lens = array<i64: 128, 128>, tile_size = array<i64: 64, 16>}
    mask_mod {
    ^bb0(%bb: i32, %hh: i32, %qi: i32, %kj: i32):
      %keep = arith.cmpi sge, %qi, %kj : i32
      flexattn.yield %keep : i1
    } : vector<8xf32>, vector<2xf32> -> vector<8xf16>
  return %p, %m1, %l1, %alpha : vector<8xf16>, vector<2xf32>, vector<2xf32>, vector<2xf32>
}

// -----

// CHECK-LABEL: func.func @rescale_finalize(
// CHECK-SAME:    %[[ACC:[^:]+]]: vector<8xf32>, %[[ALPHA:[^:]+]]: vector<2xf32>, %[[M:[^:]+]]: vector<2xf32>, %[[L:[^:]+]]: vector<2xf32>, %[[OUT:[^:]+]]: memref<1x2x100x16xbf16>, %[[LSE:[^:]+]]: memref<1x2x100xf32>, %[[B:[^:]+]]: index, %[[H:[^:]+]]: index, %[[ROW:[^:]+]]: index, %[[COL:[^:]+]]: index)
// acc = alpha * acc: element e scaled by alpha[(e / 2) % 2]
// CHECK-DAG:     %[[A0:.*]] = vector.extract %[[ALPHA]][0]
// CHECK-DAG:     %[[A1:.*]] = vector.extract %[[ALPHA]][1]
// CHECK-DAG:     %[[E0:.*]] = vector.extract %[[ACC]][0]
// CHECK-DAG:     %[[E2:.*]] = vector.extract %[[ACC]][2]
// CHECK-DAG:     %[[O0:.*]] = arith.mulf %[[A0]], %[[E0]] : f32
// CHECK-DAG:     %[[O2:.*]] = arith.mulf %[[A1]], %[[E2]] : f32
// Row sums completed over the quad; out = acc * (1 / l), 0 where l = 0.
// CHECK-DAG:     memref.extract_aligned_pointer_as_index %[[OUT]]
// CHECK-DAG:     %[[L0:.*]] = vector.extract %[[L]][0]
// CHECK:         gpu.shuffle  xor %[[L0]]
// CHECK:         gpu.shuffle  xor
// CHECK-NEXT:    %[[LS:.*]] = arith.addf %{{.*}}, %{{.*}} : f32
// CHECK:         %[[EMPTY:.*]] = arith.cmpf oeq, %[[LS]], %{{.*}} : f32
// CHECK-NEXT:    %[[INV0:.*]] = arith.divf %{{.*}}, %[[LS]] : f32
// CHECK-NEXT:    %[[INV:.*]] = arith.select %[[EMPTY]], %{{.*}}, %[[INV0]] : f32
// Rows inside M only; two elements per 32-bit store.
// CHECK:         %[[INSIDE:.*]] = arith.cmpi ult, %[[ROW]], %{{.*}} : index
// CHECK:         scf.if %[[INSIDE]] {
// CHECK:           %[[LO:.*]] = arith.mulf %[[O0]], %[[INV]] : f32
// CHECK:           %[[PK:.*]] = vector.bitcast %{{.*}} : vector<2xbf16> to vector<1xi32>
// CHECK:           llvm.store %{{.*}}, %{{.*}} {alignment = 4 : i64} : i32, !llvm.ptr<1>
// lse = ln(2) (m + log2 l), -inf where l = 0, by the row's first thread.
// CHECK:           %[[FIRST:.*]] = arith.cmpi eq, %[[COL]], %{{.*}} : index
// CHECK:           scf.if %[[FIRST]] {
// CHECK:             %[[LG:.*]] = math.log2 %[[LS]] : f32
// CHECK:             memref.store %{{.*}}, %[[LSE]][%[[B]], %[[H]], %[[ROW]]] : memref<1x2x100xf32>
func.func @rescale_finalize(%acc: vector<8xf32>, %alpha: vector<2xf32>, %m: vector<2xf32>, %l: vector<2xf32>,
                            %out: memref<1x2x100x16xbf16>, %lse: memref<1x2x100xf32>,
                            %b: index, %h: index, %row: index, %col: index) {
  %acc1 = flexattn.frag.rescale %acc, %alpha : vector<8xf32>, vector<2xf32>
  flexattn.frag.finalize %acc1 state(%m, %l) outs(%out : memref<1x2x100x16xbf16>) lse(%lse : memref<1x2x100xf32>)
      at(%b, %h, %row, %col) : vector<8xf32>, vector<2xf32>
  return
}

// -----

// Two m16 tiles per warp (row values vector<4xf32>): element E i + 4 j +
// 2 h + q (E = 4 here) belongs to row value 2 i + h, row + 16 i + 8 h.
// CHECK-LABEL: func.func @two_tiles(
// CHECK-SAME:    %[[ACC:[^:]+]]: vector<8xf32>, %[[ALPHA:[^:]+]]: vector<4xf32>, %[[M:[^:]+]]: vector<4xf32>, %[[L:[^:]+]]: vector<4xf32>, %[[OUT:[^:]+]]: memref<1x2x100x8xbf16>, %[[B:[^:]+]]: index, %[[H:[^:]+]]: index, %[[ROW:[^:]+]]: index, %[[COL:[^:]+]]: index)
// CHECK-DAG:     %[[A3:.*]] = vector.extract %[[ALPHA]][3]
// CHECK-DAG:     %[[E6:.*]] = vector.extract %[[ACC]][6]
// CHECK-DAG:     %[[O6:.*]] = arith.mulf %[[A3]], %[[E6]] : f32
// CHECK-DAG:     %[[C8:.*]] = arith.constant 8 : index
// CHECK-DAG:     %[[C16:.*]] = arith.constant 16 : index
// CHECK-DAG:     %[[C24:.*]] = arith.constant 24 : index
// CHECK:         arith.cmpi ult, %[[ROW]]
// CHECK:         %[[R1:.*]] = arith.addi %[[ROW]], %[[C8]] : index
// CHECK:         arith.cmpi ult, %[[R1]]
// CHECK:         %[[R2:.*]] = arith.addi %[[ROW]], %[[C16]] : index
// CHECK:         arith.cmpi ult, %[[R2]]
// CHECK:         %[[R3:.*]] = arith.addi %[[ROW]], %[[C24]] : index
// CHECK:         arith.cmpi ult, %[[R3]]
// CHECK:         scf.if
// CHECK:           arith.mulf %[[O6]], %{{.*}} : f32
// CHECK-NOT:     scf.if
func.func @two_tiles(%acc: vector<8xf32>, %alpha: vector<4xf32>, %m: vector<4xf32>, %l: vector<4xf32>,
                     %out: memref<1x2x100x8xbf16>, %b: index, %h: index, %row: index, %col: index) {
  %acc1 = flexattn.frag.rescale %acc, %alpha : vector<8xf32>, vector<4xf32>
  flexattn.frag.finalize %acc1 state(%m, %l) outs(%out : memref<1x2x100x8xbf16>)
      at(%b, %h, %row, %col) : vector<8xf32>, vector<4xf32>
  return
}

// -----

// fp32 q/k/v (tf32 MMAs): P stays f32 (no rounding: the P.V mma splits it
// into tf32 parts), and the output's pairs are one 8-byte store each.
// CHECK-LABEL: func.func @f32_softmax_finalize(
// CHECK-NOT:     arith.truncf
// CHECK:         math.exp2
// CHECK:         scf.if
// CHECK:           %[[LO:.*]] = arith.mulf %{{.*}}, %{{.*}} : f32
// CHECK-NEXT:      %[[HI:.*]] = arith.mulf %{{.*}}, %{{.*}} : f32
// CHECK:           %[[PAIR:.*]] = vector.from_elements %[[LO]], %[[HI]] : vector<2xf32>
// CHECK-NEXT:      llvm.store %[[PAIR]], %{{.*}} {alignment = 8 : i64} : vector<2xf32>, !llvm.ptr<1>
// CHECK-NOT:     arith.truncf
func.func @f32_softmax_finalize(%s: vector<8xf32>, %m: vector<2xf32>, %l: vector<2xf32>,
                                %out: memref<1x2x128x16xf32>, %b: index, %h: index,
                                %row: index, %col: index) -> vector<8xf32> {
  %p, %m1, %l1, %alpha = flexattn.frag.softmax %s state(%m, %l) at(%b, %h, %row, %col)
      attributes {scale = 0.125 : f32, seq_lens = array<i64: 128, 128>, tile_size = array<i64: 64, 16>}
      : vector<8xf32>, vector<2xf32> -> vector<8xf32>
  flexattn.frag.finalize %s state(%m1, %l1) outs(%out : memref<1x2x128x16xf32>)
      at(%b, %h, %row, %col) : vector<8xf32>, vector<2xf32>
  return %p : vector<8xf32>
}

// -----

// A packed decode tile (packed(%m): rows of the query heads from %h, m rows
// each): the mods of packed row r get head h + r / m and query r mod m.

// CHECK-LABEL: func.func @softmax_packed(
// CHECK-SAME:    %[[B:[^:]+]]: index, %[[H:[^:]+]]: index, %[[ROW:[^:]+]]: index, %[[COL:[^:]+]]: index, %[[PM:[^:]+]]: index)
// CHECK:         %[[R0:.*]] = arith.index_cast %[[ROW]] : index to i32
// CHECK:         %[[PM32:.*]] = arith.index_cast %[[PM]] : index to i32
// CHECK-NEXT:    %[[G0:.*]] = arith.divui %[[R0]], %[[PM32]] : i32
// CHECK-NEXT:    %[[G0I:.*]] = arith.index_cast %[[G0]] : i32 to index
// CHECK-NEXT:    %[[H0:.*]] = arith.addi %[[H]], %[[G0I]] : index
// CHECK-NEXT:    %[[Q0:.*]] = arith.remui %[[R0]], %[[PM32]] : i32
// CHECK-NEXT:    %[[QI0:.*]] = arith.index_cast %[[Q0]] : i32 to index
// Row value 1 is packed row row + 8.
// CHECK-NEXT:    %[[R1:.*]] = arith.addi %[[R0]], %{{.*}} : i32
// CHECK-NEXT:    %[[G1:.*]] = arith.divui %[[R1]], %[[PM32]] : i32
// CHECK-NEXT:    %[[G1I:.*]] = arith.index_cast %[[G1]] : i32 to index
// CHECK-NEXT:    %[[H1:.*]] = arith.addi %[[H]], %[[G1I]] : index
// CHECK-NEXT:    %[[Q1:.*]] = arith.remui %[[R1]], %[[PM32]] : i32
// CHECK-NEXT:    %[[QI1:.*]] = arith.index_cast %[[Q1]] : i32 to index
// CHECK:         flexattn.apply_mods %{{.*}} at(%[[B]], %[[H0]], %[[QI0]], %{{.*}})
// CHECK:         flexattn.apply_mods %{{.*}} at(%[[B]], %[[H0]], %[[QI0]], %{{.*}})
// CHECK:         flexattn.apply_mods %{{.*}} at(%[[B]], %[[H1]], %[[QI1]], %{{.*}})
func.func @softmax_packed(%s: vector<8xf32>, %m: vector<2xf32>, %l: vector<2xf32>, %slopes: memref<8xf32>,
                          %b: index, %h: index, %row: index, %col: index, %pm: index)
    -> (vector<8xbf16>, vector<2xf32>, vector<2xf32>, vector<2xf32>) {
  %p, %m1, %l1, %alpha = flexattn.frag.softmax %s state(%m, %l) at(%b, %h, %row, %col) packed(%pm)
      captures(%slopes : memref<8xf32>)
      attributes {scale = 0.125 : f32, seq_lens = array<i64: 64, 128>, tile_size = array<i64: 64, 16>}
    score_mod {
    ^bb0(%sc: f32, %bb: i32, %hh: i32, %qi: i32, %kj: i32, %sl: memref<8xf32>):
      %hi = arith.index_cast %hh : i32 to index
      %slope = memref.load %sl[%hi] : memref<8xf32>
      %r = arith.addf %sc, %slope : f32
      flexattn.yield %r : f32
    } : vector<8xf32>, vector<2xf32> -> vector<8xbf16>
  return %p, %m1, %l1, %alpha : vector<8xbf16>, vector<2xf32>, vector<2xf32>, vector<2xf32>
}

// -----

// A split's partial rows (flexattn-split-kv): f32 out, a view at an offset
// into the scratch. Two f32 per 8-byte store, from the view's offset.

// CHECK-LABEL: func.func @finalize_partial(
// CHECK-SAME:    %[[OUT:[^:]+]]: memref<1x2x64x16xf32, strided<[2048, 1024, 16, 1], offset: ?>>
// CHECK:         %[[BASE:.*]] = memref.extract_aligned_pointer_as_index %[[OUT]]
// CHECK:         %{{.*}}, %[[OFF:.*]], %{{.*}}:4, %{{.*}}:4 = memref.extract_strided_metadata %[[OUT]]
// CHECK:         %[[OFFB:.*]] = arith.muli %[[OFF]], %[[C4:.*]] : index
// CHECK:         arith.addi %[[BASE]], %[[OFFB]] : index
// CHECK:         scf.if
// CHECK-NOT:       arith.truncf
// CHECK:           llvm.store %{{.*}}, %{{.*}} {alignment = 8 : i64} : vector<2xf32>, !llvm.ptr<1>
func.func @finalize_partial(%acc: vector<8xf32>, %m: vector<2xf32>, %l: vector<2xf32>,
                            %out: memref<1x2x64x16xf32, strided<[2048, 1024, 16, 1], offset: ?>>,
                            %lse: memref<1x2x64xf32, strided<[128, 64, 1], offset: ?>>,
                            %b: index, %h: index, %row: index, %col: index) {
  flexattn.frag.finalize %acc state(%m, %l) outs(%out : memref<1x2x64x16xf32, strided<[2048, 1024, 16, 1], offset: ?>>)
      lse(%lse : memref<1x2x64xf32, strided<[128, 64, 1], offset: ?>>)
      at(%b, %h, %row, %col) : vector<8xf32>, vector<2xf32>
  return
}

// -----

// 16-bit out of whole 32-column groups (contiguous): each row's 4 pairs are
// transposed across the quad, xor 1 then xor 2 (in every lane, before the
// row's branch), and lane q stores columns 8 q .. 8 q + 7 (4 col) with one
// 16-byte store.
// CHECK-LABEL: func.func @wide_finalize(
// CHECK-SAME:    %[[COL:[^:]+]]: index)
// CHECK:         arith.andi %[[COL]], %c2 : index
// CHECK-COUNT-2: gpu.shuffle  xor %{{.*}}, %c1_i32, %c32_i32 : i32
// CHECK:         arith.andi %[[COL]], %c4 : index
// CHECK-COUNT-2: gpu.shuffle  xor %{{.*}}, %c2_i32, %c32_i32 : i32
// CHECK:         scf.if
// CHECK:           %[[V:.*]] = vector.from_elements %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} : vector<4xi32>
// CHECK:           arith.muli %[[COL]], %c8 : index
// CHECK:           llvm.store %[[V]], %{{.*}} {alignment = 16 : i64} : vector<4xi32>, !llvm.ptr<1>
// The second row (+ 8) the same way: two stores in all.
// CHECK-COUNT-4: gpu.shuffle  xor %{{.*}} : i32
// CHECK:         scf.if
// CHECK:           llvm.store %{{.*}}, %{{.*}} {alignment = 16 : i64} : vector<4xi32>, !llvm.ptr<1>
// CHECK-NOT:     llvm.store
func.func @wide_finalize(%acc: vector<16xf32>, %m: vector<2xf32>, %l: vector<2xf32>,
                         %out: memref<1x2x100x32xbf16>, %b: index, %h: index, %row: index, %col: index) {
  flexattn.frag.finalize %acc state(%m, %l) outs(%out : memref<1x2x100x32xbf16>)
      at(%b, %h, %row, %col) : vector<16xf32>, vector<2xf32>
  return
}

// -----

// A score_mod that converts an index to a float, without tails, in a kernel
// marked flexattn.exact_index_floats: q_idx and
// the thread's first column are clamped to the lengths (no-ops: the last
// element's column is the first + 9, so the first is at most 128 - 1 - 9)
// for flexattn-exact-int-to-float's range analysis.

// CHECK-LABEL: func.func @softmax_index_float(
// CHECK-SAME:    %{{[^:]+}}: index, %{{[^:]+}}: index, %[[ROW:[^:]+]]: index, %[[COL:[^:]+]]: index)
// CHECK-DAG:     %[[R:.*]] = arith.index_cast %[[ROW]] : index to i32
// CHECK-DAG:     arith.minui %[[R]], %c127_i32 : i32
// CHECK-DAG:     %[[C:.*]] = arith.index_cast %[[COL]] : index to i32
// CHECK-DAG:     arith.minui %[[C]], %c118_i32 : i32
// CHECK:         arith.sitofp
func.func @softmax_index_float(%s: vector<8xf32>, %m: vector<2xf32>, %l: vector<2xf32>,
                               %b: index, %h: index, %row: index, %col: index)
    -> (vector<8xf16>, vector<2xf32>, vector<2xf32>, vector<2xf32>) attributes {flexattn.exact_index_floats} {
  %p, %m1, %l1, %alpha = flexattn.frag.softmax %s state(%m, %l) at(%b, %h, %row, %col)
      attributes {scale = 0.125 : f32, seq_lens = array<i64: 128, 128>, tile_size = array<i64: 64, 16>}
    score_mod {
    ^bb0(%sc: f32, %bb: i32, %hh: i32, %qi: i32, %kj: i32):
      %d = arith.subi %qi, %kj : i32
      %df = arith.sitofp %d : i32 to f32
      %r = arith.addf %sc, %df : f32
      flexattn.yield %r : f32
    } : vector<8xf32>, vector<2xf32> -> vector<8xf16>
  return %p, %m1, %l1, %alpha : vector<8xf16>, vector<2xf32>, vector<2xf32>, vector<2xf32>
}

// -----

// Unmarked (sm_80's prefill kernels): no clamp without a tail.

// CHECK-LABEL: func.func @softmax_index_float_unmarked(
// CHECK-NOT:     arith.minui
// CHECK:         arith.sitofp
func.func @softmax_index_float_unmarked(%s: vector<8xf32>, %m: vector<2xf32>, %l: vector<2xf32>,
                                        %b: index, %h: index, %row: index, %col: index)
    -> (vector<8xf16>, vector<2xf32>, vector<2xf32>, vector<2xf32>) {
  %p, %m1, %l1, %alpha = flexattn.frag.softmax %s state(%m, %l) at(%b, %h, %row, %col)
      attributes {scale = 0.125 : f32, seq_lens = array<i64: 128, 128>, tile_size = array<i64: 64, 16>}
    score_mod {
    ^bb0(%sc: f32, %bb: i32, %hh: i32, %qi: i32, %kj: i32):
      %d = arith.subi %qi, %kj : i32
      %df = arith.sitofp %d : i32 to f32
      %r = arith.addf %sc, %df : f32
      flexattn.yield %r : f32
    } : vector<8xf32>, vector<2xf32> -> vector<8xf16>
  return %p, %m1, %l1, %alpha : vector<8xf16>, vector<2xf32>, vector<2xf32>, vector<2xf32>
}

// -----

// flexattn.reduce_chains = 2 (flexattn-schedule-consumers sets 4): a row's
// 4 elements of this thread (elements 0, 1, 4, 5 of row `row`) are reduced
// as two chains combined at the end, for the max and for the sum.
// CHECK-LABEL: func.func @softmax_chains(
// CHECK-SAME:    %[[S:[^:]+]]: vector<8xf32>
// CHECK-DAG:     %[[E0:.*]] = vector.extract %[[S]][0] : f32 from vector<8xf32>
// CHECK-DAG:     %[[E1:.*]] = vector.extract %[[S]][1] : f32 from vector<8xf32>
// CHECK-DAG:     %[[E4:.*]] = vector.extract %[[S]][4] : f32 from vector<8xf32>
// CHECK-DAG:     %[[E5:.*]] = vector.extract %[[S]][5] : f32 from vector<8xf32>
// CHECK:         %[[A:.*]] = arith.maxnumf %[[E0]], %[[E4]] : f32
// CHECK-NEXT:    %[[B:.*]] = arith.maxnumf %[[E1]], %[[E5]] : f32
// CHECK-NEXT:    %[[AB:.*]] = arith.maxnumf %[[A]], %[[B]] : f32
// CHECK-NEXT:    gpu.shuffle  xor %[[AB]]
// After the two alphas, P of elements 0 .. 7.
// CHECK:         math.exp2
// CHECK:         math.exp2
// CHECK:         %[[P0:.*]] = math.exp2
// CHECK:         %[[P1:.*]] = math.exp2
// CHECK:         math.exp2
// CHECK:         math.exp2
// CHECK:         %[[P4:.*]] = math.exp2
// CHECK:         %[[P5:.*]] = math.exp2
// CHECK:         %[[SA:.*]] = arith.addf %[[P0]], %[[P4]] : f32
// CHECK-NEXT:    %[[SB:.*]] = arith.addf %[[P1]], %[[P5]] : f32
// CHECK-NEXT:    %[[SAB:.*]] = arith.addf %[[SA]], %[[SB]] : f32
// CHECK-NEXT:    arith.addf %{{.*}}, %[[SAB]] : f32
func.func @softmax_chains(%s: vector<8xf32>, %m: vector<2xf32>, %l: vector<2xf32>,
                          %b: index, %h: index, %row: index, %col: index) -> (vector<8xf32>, vector<2xf32>, vector<2xf32>, vector<2xf32>) {
  %p, %m1, %l1, %alpha = flexattn.frag.softmax %s state(%m, %l) at(%b, %h, %row, %col)
      attributes {flexattn.reduce_chains = 2 : i64, scale = 0.125 : f32, seq_lens = array<i64: 128, 128>, tile_size = array<i64: 64, 16>}
      : vector<8xf32>, vector<2xf32> -> vector<8xf32>
  return %p, %m1, %l1, %alpha : vector<8xf32>, vector<2xf32>, vector<2xf32>, vector<2xf32>
}

// -----

// flexattn.max_chains = 2 (flexattn-schedule-consumers sets 4 with
// pv-wait=alpha): the row max as two chains, the sum as one chain per row
// (from 0, the rows' adds interleaved), as without the attribute.
// CHECK-LABEL: func.func @softmax_max_chains(
// CHECK-SAME:    %[[S:[^:]+]]: vector<8xf32>
// CHECK-DAG:     %[[E0:.*]] = vector.extract %[[S]][0] : f32 from vector<8xf32>
// CHECK-DAG:     %[[E1:.*]] = vector.extract %[[S]][1] : f32 from vector<8xf32>
// CHECK-DAG:     %[[E4:.*]] = vector.extract %[[S]][4] : f32 from vector<8xf32>
// CHECK-DAG:     %[[E5:.*]] = vector.extract %[[S]][5] : f32 from vector<8xf32>
// CHECK:         %[[A:.*]] = arith.maxnumf %[[E0]], %[[E4]] : f32
// CHECK-NEXT:    %[[B:.*]] = arith.maxnumf %[[E1]], %[[E5]] : f32
// CHECK-NEXT:    %[[AB:.*]] = arith.maxnumf %[[A]], %[[B]] : f32
// CHECK-NEXT:    gpu.shuffle  xor %[[AB]]
// After the two alphas, P of elements 0, 1 (row `row`) and 2 (row `row + 8`).
// CHECK:         math.exp2
// CHECK:         math.exp2
// CHECK:         %[[P0:.*]] = math.exp2
// CHECK:         %[[P1:.*]] = math.exp2
// CHECK:         %[[P2:.*]] = math.exp2
// CHECK:         %[[SA:.*]] = arith.addf %[[P0]], %[[Z:.*]] : f32
// CHECK-NEXT:    arith.addf %[[SA]], %[[P1]] : f32
// CHECK-NEXT:    arith.addf %[[P2]], %[[Z]] : f32
func.func @softmax_max_chains(%s: vector<8xf32>, %m: vector<2xf32>, %l: vector<2xf32>,
                              %b: index, %h: index, %row: index, %col: index) -> (vector<8xf32>, vector<2xf32>, vector<2xf32>, vector<2xf32>) {
  %p, %m1, %l1, %alpha = flexattn.frag.softmax %s state(%m, %l) at(%b, %h, %row, %col)
      attributes {flexattn.max_chains = 2 : i64, scale = 0.125 : f32, seq_lens = array<i64: 128, 128>, tile_size = array<i64: 64, 16>}
      : vector<8xf32>, vector<2xf32> -> vector<8xf32>
  return %p, %m1, %l1, %alpha : vector<8xf32>, vector<2xf32>, vector<2xf32>, vector<2xf32>
}
