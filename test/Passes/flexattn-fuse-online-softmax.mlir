// RUN: flexattn-opt %s -split-input-file -flexattn-fuse-online-softmax | FileCheck %s
// RUN: flexattn-opt %s -split-input-file -flexattn-fuse-online-softmax | FileCheck %s --check-prefix=MEM

// The online-softmax step on a BM x BN = 32 x 16 tile of an M x N = 100 x 80
// problem, no mods: log2(e) folds into the scale, one multiply.

// MEM-LABEL: func.func @step_no_mods(
// The only buffers are the BM x BN score tile and two [BM] rows; nothing of
// M x N, nothing on the heap.
// MEM-NOT:     memref.alloc(
// MEM-NOT:     memref<100x80
// MEM:         memref.alloca() : memref<32x16xf32>
// MEM-NOT:     memref.alloc
// MEM:         memref.alloca() : memref<32xf32>
// MEM-NOT:     memref.alloc
// MEM:         memref.alloca() : memref<32xf32>
// MEM-NOT:     memref.alloc
// MEM-NOT:     memref<100x80
// MEM:         return

// CHECK-LABEL: func.func @step_no_mods(
// CHECK-SAME:    %[[Q:[^:]+]]: memref<1x2x100x16xf32>, %[[K:[^:]+]]: memref<1x2x80x16xf32>, %[[V:[^:]+]]: memref<1x2x80x8xf32>, %[[ACC:[^:]+]]: memref<32x8xf32>, %[[M:[^:]+]]: memref<32xf32>, %[[L:[^:]+]]: memref<32xf32>, %[[B:[^:]+]]: index, %[[H:[^:]+]]: index, %[[HKV:[^:]+]]: index, %[[Q0:[^:]+]]: index, %[[KV0:[^:]+]]: index)
// CHECK:         memref.alloca_scope {
// The live part of the tile: rows = clamp(M - q0, 0, BM), cols = clamp(N - kv0, 0, BN).
// CHECK:           %[[MR:.+]] = arith.subi %{{.+}}, %[[Q0]] : index
// CHECK-NEXT:      %[[BMC:.+]] = arith.constant 32 : index
// CHECK-NEXT:      %[[ROWS0:.+]] = arith.minsi %[[BMC]], %[[MR]] : index
// CHECK:           %[[ROWS:.+]] = arith.maxsi %[[ROWS0]], %{{.+}} : index
// CHECK:           %[[NR:.+]] = arith.subi %{{.+}}, %[[KV0]] : index
// CHECK-NEXT:      %[[BNC:.+]] = arith.constant 16 : index
// CHECK-NEXT:      %[[COLS0:.+]] = arith.minsi %[[BNC]], %[[NR]] : index
// CHECK:           %[[COLS:.+]] = arith.maxsi %[[COLS0]], %{{.+}} : index
// CHECK-NEXT:      %[[QT:.+]] = memref.subview %[[Q]][%[[B]], %[[H]], %[[Q0]], 0] [1, 1, %[[ROWS]], 16] [1, 1, 1, 1]
// CHECK-NEXT:      %[[KT:.+]] = memref.subview %[[K]][%[[B]], %[[HKV]], %[[KV0]], 0] [1, 1, %[[COLS]], 16] [1, 1, 1, 1]
// CHECK-NEXT:      %[[VT:.+]] = memref.subview %[[V]][%[[B]], %[[HKV]], %[[KV0]], 0] [1, 1, %[[COLS]], 8] [1, 1, 1, 1]
// CHECK:           %[[ACCW:.+]] = memref.subview %[[ACC]][0, 0] [%[[ROWS]], %{{.+}}] [1, 1]
// CHECK-NEXT:      %[[MW:.+]] = memref.subview %[[M]][0] [%[[ROWS]]] [1]
// CHECK-NEXT:      %[[LW:.+]] = memref.subview %[[L]][0] [%[[ROWS]]] [1]
// CHECK-NEXT:      %[[SBUF:.+]] = memref.alloca() : memref<32x16xf32>
// CHECK-NEXT:      %[[S:.+]] = memref.subview %[[SBUF]][0, 0] [%[[ROWS]], %[[COLS]]] [1, 1]
// CHECK-NEXT:      %[[MNEWBUF:.+]] = memref.alloca() : memref<32xf32>
// CHECK-NEXT:      %[[MNEW:.+]] = memref.subview %[[MNEWBUF]][0] [%[[ROWS]]] [1]
// CHECK-NEXT:      %[[ALPHABUF:.+]] = memref.alloca() : memref<32xf32>
// CHECK-NEXT:      %[[ALPHA:.+]] = memref.subview %[[ALPHABUF]][0] [%[[ROWS]]] [1]
//
// S = Q_tile . K_tileᵀ  (f32 accumulation)
// CHECK-NEXT:      %[[ZERO:.+]] = arith.constant 0.000000e+00 : f32
// CHECK-NEXT:      linalg.fill ins(%[[ZERO]] : f32) outs(%[[S]] :
// CHECK-NEXT:      linalg.generic {{.*}} iterator_types = ["parallel", "parallel", "reduction"]} ins(%[[QT]], %[[KT]] : {{.*}}) outs(%[[S]] :
// CHECK-NEXT:      ^bb0(%[[QE:[^:]+]]: f32, %[[KE:[^:]+]]: f32, %[[SE:[^:]+]]: f32):
// CHECK-NEXT:        %[[P:.+]] = arith.mulf %[[QE]], %[[KE]] : f32
// CHECK-NEXT:        %[[SUM:.+]] = arith.addf %[[SE]], %[[P]] : f32
// CHECK-NEXT:        linalg.yield %[[SUM]] : f32
// CHECK-NEXT:      }
//
// S = log2(e) * mods(scale * S): no mods, one multiply by scale * log2(e)
// = 0.25 * 1.4426950408889634.
// CHECK-NEXT:      linalg.generic {{.*}} iterator_types = ["parallel", "parallel"]} outs(%[[S]] :
// CHECK-NEXT:      ^bb0(%[[SE:[^:]+]]: f32):
// CHECK-NEXT:        %[[SCALE:.+]] = arith.constant 0.360673755 : f32
// CHECK-NEXT:        %[[SS:.+]] = arith.mulf %[[SE]], %[[SCALE]] : f32
// CHECK-NEXT:        linalg.yield %[[SS]] : f32
// CHECK-NEXT:      }
// CHECK-NOT:       flexattn.apply_mods
//
// m_new = max(m, rowmax(S))
// CHECK-NEXT:      linalg.copy ins(%[[MW]] : {{.*}}) outs(%[[MNEW]] :
// CHECK-NEXT:      linalg.generic {{.*}} iterator_types = ["parallel", "reduction"]} ins(%[[S]] : {{.*}}) outs(%[[MNEW]] :
// CHECK-NEXT:      ^bb0(%[[SE:[^:]+]]: f32, %[[ME:[^:]+]]: f32):
// CHECK-NEXT:        %[[MX:.+]] = arith.maximumf %[[SE]], %[[ME]] : f32
// CHECK-NEXT:        linalg.yield %[[MX]] : f32
// CHECK-NEXT:      }
//
// base  = m_new, or 0 where m_new = -inf         (empty rows stay finite)
// alpha = exp2(m - base)
// CHECK-NEXT:      linalg.generic {{.*}} iterator_types = ["parallel"]} ins(%[[MW]], %[[MNEW]] : {{.*}}) outs(%[[ALPHA]] :
// CHECK-NEXT:      ^bb0(%[[MO:[^:]+]]: f32, %[[MN:[^:]+]]: f32, %{{[^:]+}}: f32):
// CHECK-NEXT:        %[[NINF:.+]] = arith.constant 0xFF800000 : f32
// CHECK-NEXT:        %[[Z:.+]] = arith.constant 0.000000e+00 : f32
// CHECK-NEXT:        %[[EMPTY:.+]] = arith.cmpf oeq, %[[MN]], %[[NINF]] : f32
// CHECK-NEXT:        %[[BASE:.+]] = arith.select %[[EMPTY]], %[[Z]], %[[MN]] : f32
// CHECK-NEXT:        %[[D:.+]] = arith.subf %[[MO]], %[[BASE]] : f32
// CHECK-NEXT:        %[[E:.+]] = math.exp2 %[[D]] : f32
// CHECK-NEXT:        linalg.yield %[[E]] : f32
// CHECK-NEXT:      }
//
// P = exp2(S - base(m_new))   (in place of S)
// CHECK-NEXT:      linalg.generic {{.*}} iterator_types = ["parallel", "parallel"]} ins(%[[MNEW]] : {{.*}}) outs(%[[S]] :
// CHECK-NEXT:      ^bb0(%[[MN:[^:]+]]: f32, %[[SE:[^:]+]]: f32):
// CHECK-NEXT:        %[[NINF:.+]] = arith.constant 0xFF800000 : f32
// CHECK-NEXT:        %[[Z:.+]] = arith.constant 0.000000e+00 : f32
// CHECK-NEXT:        %[[EMPTY:.+]] = arith.cmpf oeq, %[[MN]], %[[NINF]] : f32
// CHECK-NEXT:        %[[BASE:.+]] = arith.select %[[EMPTY]], %[[Z]], %[[MN]] : f32
// CHECK-NEXT:        %[[D:.+]] = arith.subf %[[SE]], %[[BASE]] : f32
// CHECK-NEXT:        %[[E:.+]] = math.exp2 %[[D]] : f32
// CHECK-NEXT:        linalg.yield %[[E]] : f32
// CHECK-NEXT:      }
//
// l = alpha * l + rowsum(P)
// CHECK-NEXT:      linalg.generic {{.*}} iterator_types = ["parallel"]} ins(%[[ALPHA]] : {{.*}}) outs(%[[LW]] :
// CHECK-NEXT:      ^bb0(%[[A:[^:]+]]: f32, %[[LE:[^:]+]]: f32):
// CHECK-NEXT:        %[[R:.+]] = arith.mulf %[[A]], %[[LE]] : f32
// CHECK-NEXT:        linalg.yield %[[R]] : f32
// CHECK-NEXT:      }
// CHECK-NEXT:      linalg.generic {{.*}} iterator_types = ["parallel", "reduction"]} ins(%[[S]] : {{.*}}) outs(%[[LW]] :
// CHECK-NEXT:      ^bb0(%[[PE:[^:]+]]: f32, %[[LE:[^:]+]]: f32):
// CHECK-NEXT:        %[[R:.+]] = arith.addf %[[PE]], %[[LE]] : f32
// CHECK-NEXT:        linalg.yield %[[R]] : f32
// CHECK-NEXT:      }
//
// acc = alpha * acc + P . V_tile
// CHECK-NEXT:      linalg.generic {{.*}} iterator_types = ["parallel", "parallel"]} ins(%[[ALPHA]] : {{.*}}) outs(%[[ACCW]] :
// CHECK-NEXT:      ^bb0(%[[A:[^:]+]]: f32, %[[AE:[^:]+]]: f32):
// CHECK-NEXT:        %[[R:.+]] = arith.mulf %[[A]], %[[AE]] : f32
// CHECK-NEXT:        linalg.yield %[[R]] : f32
// CHECK-NEXT:      }
// CHECK-NEXT:      linalg.generic {{.*}} iterator_types = ["parallel", "parallel", "reduction"]} ins(%[[S]], %[[VT]] : {{.*}}) outs(%[[ACCW]] :
// CHECK-NEXT:      ^bb0(%[[PE:[^:]+]]: f32, %[[VE:[^:]+]]: f32, %[[AE:[^:]+]]: f32):
// CHECK-NEXT:        %[[PV:.+]] = arith.mulf %[[PE]], %[[VE]] : f32
// CHECK-NEXT:        %[[R:.+]] = arith.addf %[[AE]], %[[PV]] : f32
// CHECK-NEXT:        linalg.yield %[[R]] : f32
// CHECK-NEXT:      }
//
// m = m_new
// CHECK-NEXT:      linalg.copy ins(%[[MNEW]] : {{.*}}) outs(%[[MW]] :
// CHECK-NEXT:    }
// CHECK-NEXT:    return
func.func @step_no_mods(%q: memref<1x2x100x16xf32>, %k: memref<1x2x80x16xf32>, %v: memref<1x2x80x8xf32>,
                        %acc: memref<32x8xf32>, %m: memref<32xf32>, %l: memref<32xf32>,
                        %b: index, %h: index, %hkv: index, %q0: index, %kv0: index) {
  flexattn.tile_step ins(%q, %k, %v : memref<1x2x100x16xf32>, memref<1x2x80x16xf32>, memref<1x2x80x8xf32>)
      state(%acc, %m, %l : memref<32x8xf32>, memref<32xf32>, memref<32xf32>)
      at(%b, %h, %hkv, %q0, %kv0) attributes {masked, scale = 0.25 : f32, tile_size = array<i64: 32, 16>}
  return
}

// -----

// bf16 inputs, a score_mod reading a captured buffer and a mask_mod on a
// partial (`masked`) tile: the mods stay a flexattn.apply_mods on one score,
// between the scale and the log2(e) multiplies. Inputs widen to f32.

// MEM-LABEL: func.func @step_mods_masked(
// MEM-NOT:     memref.alloc(
// MEM-NOT:     memref<100x80
// MEM:         memref.alloca() : memref<32x16xf32>
// MEM-NOT:     memref.alloc
// MEM:         memref.alloca() : memref<32xf32>
// MEM-NOT:     memref.alloc
// MEM:         memref.alloca() : memref<32xf32>
// MEM-NOT:     memref.alloc
// MEM-NOT:     memref<100x80
// MEM:         return

// CHECK-LABEL: func.func @step_mods_masked(
// CHECK-SAME:    %[[B:[^:]+]]: index, %[[H:[^:]+]]: index, %[[HKV:[^:]+]]: index, %[[Q0:[^:]+]]: index, %[[KV0:[^:]+]]: index, %[[BIAS:[^:]+]]: memref<80xf32>)
// S = Q_tile . K_tileᵀ  (f32 accumulation)
// CHECK:           linalg.generic
// CHECK-NEXT:      ^bb0(%[[QE:[^:]+]]: bf16, %[[KE:[^:]+]]: bf16, %[[SE:[^:]+]]: f32):
// CHECK-DAG:         %[[QF:.+]] = arith.extf %[[QE]] : bf16 to f32
// CHECK-DAG:         %[[KF:.+]] = arith.extf %[[KE]] : bf16 to f32
// CHECK:             arith.mulf %[[QF]], %[[KF]] : f32
//
// S = log2(e) * mods(scale * S)
// CHECK:           linalg.generic {{.*}} iterator_types = ["parallel", "parallel"]} outs(%{{.+}} :
// CHECK-NEXT:      ^bb0(%[[SE:[^:]+]]: f32):
// CHECK-NEXT:        %[[I:.+]] = linalg.index 0 : index
// CHECK-NEXT:        %[[J:.+]] = linalg.index 1 : index
// CHECK-NEXT:        %[[QI:.+]] = arith.addi %[[Q0]], %[[I]] : index
// CHECK-NEXT:        %[[KI:.+]] = arith.addi %[[KV0]], %[[J]] : index
// CHECK-NEXT:        %[[SCALE:.+]] = arith.constant 2.500000e-01 : f32
// CHECK-NEXT:        %[[X:.+]] = arith.mulf %[[SE]], %[[SCALE]] : f32
// CHECK-NEXT:        %[[MOD:.+]] = flexattn.apply_mods %[[X]] at(%[[B]], %[[H]], %[[QI]], %[[KI]]) captures(%[[BIAS]] : memref<80xf32>) attributes {masked} score_mod {
// CHECK-NEXT:        ^bb0(%[[SA:[^:]+]]: f32, %{{[^:]+}}: index, %{{[^:]+}}: index, %{{[^:]+}}: index, %[[KA:[^:]+]]: index, %[[CA:[^:]+]]: memref<80xf32>):
// CHECK-NEXT:          %[[BV:.+]] = memref.load %[[CA]][%[[KA]]] : memref<80xf32>
// CHECK-NEXT:          %[[R:.+]] = arith.addf %[[SA]], %[[BV]] : f32
// CHECK-NEXT:          flexattn.yield %[[R]] : f32
// CHECK-NEXT:        } mask_mod {
// CHECK-NEXT:        ^bb0(%{{[^:]+}}: index, %{{[^:]+}}: index, %[[QA:[^:]+]]: index, %[[KA:[^:]+]]: index, %{{[^:]+}}: memref<80xf32>):
// CHECK-NEXT:          %[[KEEP:.+]] = arith.cmpi sge, %[[QA]], %[[KA]] : index
// CHECK-NEXT:          flexattn.yield %[[KEEP]] : i1
// CHECK-NEXT:        } : f32
// CHECK-NEXT:        %[[LOG2E:.+]] = arith.constant 1.44269502 : f32
// CHECK-NEXT:        %[[RES:.+]] = arith.mulf %[[MOD]], %[[LOG2E]] : f32
// CHECK-NEXT:        linalg.yield %[[RES]] : f32
// CHECK-NEXT:      }
//
// m_new = max(m, rowmax(S))
// CHECK:           arith.maximumf
// alpha = exp2(m - base(m_new)); P = exp2(S - base(m_new))
// CHECK-COUNT-2:   math.exp2
//
// acc = alpha * acc + P . V_tile
// CHECK:           ^bb0(%[[PE:[^:]+]]: f32, %[[VE:[^:]+]]: bf16, %[[AE:[^:]+]]: f32):
// CHECK-NEXT:        %[[VF:.+]] = arith.extf %[[VE]] : bf16 to f32
// CHECK-NEXT:        arith.mulf %[[PE]], %[[VF]] : f32
// CHECK-NOT:       flexattn.tile_step
func.func @step_mods_masked(%q: memref<1x2x100x16xbf16>, %k: memref<1x2x80x16xbf16>, %v: memref<1x2x80x8xbf16>,
                            %acc: memref<32x8xf32>, %m: memref<32xf32>, %l: memref<32xf32>,
                            %b: index, %h: index, %hkv: index, %q0: index, %kv0: index,
                            %bias: memref<80xf32>) {
  flexattn.tile_step ins(%q, %k, %v : memref<1x2x100x16xbf16>, memref<1x2x80x16xbf16>, memref<1x2x80x8xbf16>)
      state(%acc, %m, %l : memref<32x8xf32>, memref<32xf32>, memref<32xf32>)
      at(%b, %h, %hkv, %q0, %kv0) captures(%bias : memref<80xf32>)
      attributes {masked, scale = 0.25 : f32, tile_size = array<i64: 32, 16>}
    score_mod {
    ^bb0(%s: f32, %bb: index, %hh: index, %qi: index, %ki: index, %c: memref<80xf32>):
      %x = memref.load %c[%ki] : memref<80xf32>
      %r = arith.addf %s, %x : f32
      flexattn.yield %r : f32
    } mask_mod {
    ^bb0(%bb: index, %hh: index, %qi: index, %ki: index, %c: memref<80xf32>):
      %keep = arith.cmpi sge, %qi, %ki : index
      flexattn.yield %keep : i1
    }
  return
}

// -----

// A full (not `masked`) tile with a score_mod: apply_mods without `masked`
// and without the mask_mod region, even though the tile_step carries one.

// CHECK-LABEL: func.func @step_score_mod_full_block(
// CHECK:         linalg.index 1 : index
// CHECK:         %[[X:.+]] = arith.mulf %{{.+}}, %{{.+}} : f32
// CHECK-NEXT:    %[[MOD:.+]] = flexattn.apply_mods %[[X]] at({{[^)]*}}) score_mod {
// CHECK-NEXT:    ^bb0(%[[SA:[^:]+]]: f32, %{{[^:]+}}: i32, %{{[^:]+}}: i32, %{{[^:]+}}: i32, %{{[^:]+}}: i32):
// CHECK-NEXT:      %[[T:.+]] = math.tanh %[[SA]] : f32
// CHECK-NEXT:      flexattn.yield %[[T]] : f32
// CHECK-NEXT:    } : f32
// CHECK-NEXT:    %[[LOG2E:.+]] = arith.constant 1.44269502 : f32
// CHECK-NEXT:    arith.mulf %[[MOD]], %[[LOG2E]] : f32
func.func @step_score_mod_full_block(%q: memref<1x1x64x8xf32>, %k: memref<1x1x64x8xf32>, %v: memref<1x1x64x8xf32>,
                                     %acc: memref<16x8xf32>, %m: memref<16xf32>, %l: memref<16xf32>,
                                     %b: index, %h: index, %hkv: index, %q0: index, %kv0: index) {
  flexattn.tile_step ins(%q, %k, %v : memref<1x1x64x8xf32>, memref<1x1x64x8xf32>, memref<1x1x64x8xf32>)
      state(%acc, %m, %l : memref<16x8xf32>, memref<16xf32>, memref<16xf32>)
      at(%b, %h, %hkv, %q0, %kv0) attributes {scale = 2.0 : f32, tile_size = array<i64: 16, 16>}
    score_mod {
    ^bb0(%s: f32, %bb: i32, %hh: i32, %qi: i32, %ki: i32):
      %t = math.tanh %s : f32
      flexattn.yield %t : f32
    } mask_mod {
    ^bb0(%bb: i32, %hh: i32, %qi: i32, %ki: i32):
      %keep = arith.cmpi sge, %qi, %ki : i32
      flexattn.yield %keep : i1
    }
  return
}

// -----

// A mask_mod on a tile that is not `masked` is not applied: no mods, so the
// folded multiply by scale * log2(e) = 2 * 1.4426950408889634.

// CHECK-LABEL: func.func @step_unmasked_mask_mod_ignored(
// CHECK-NOT:     flexattn.apply_mods
// CHECK:         ^bb0(%[[SE:[^:]+]]: f32):
// CHECK-NEXT:      %[[SCALE:.+]] = arith.constant 2.885390e+00 : f32
// CHECK-NEXT:      arith.mulf %[[SE]], %[[SCALE]] : f32
// CHECK-NOT:     flexattn.apply_mods
// CHECK:         return
func.func @step_unmasked_mask_mod_ignored(%q: memref<1x1x64x8xf32>, %k: memref<1x1x64x8xf32>, %v: memref<1x1x64x8xf32>,
                                          %acc: memref<16x8xf32>, %m: memref<16xf32>, %l: memref<16xf32>,
                                          %b: index, %h: index, %hkv: index, %q0: index, %kv0: index) {
  flexattn.tile_step ins(%q, %k, %v : memref<1x1x64x8xf32>, memref<1x1x64x8xf32>, memref<1x1x64x8xf32>)
      state(%acc, %m, %l : memref<16x8xf32>, memref<16xf32>, memref<16xf32>)
      at(%b, %h, %hkv, %q0, %kv0) attributes {scale = 2.0 : f32, tile_size = array<i64: 16, 16>}
    mask_mod {
    ^bb0(%bb: i32, %hh: i32, %qi: i32, %ki: i32):
      %keep = arith.cmpi sge, %qi, %ki : i32
      flexattn.yield %keep : i1
    }
  return
}

// -----

// finalize: the tile's live rows of out and lse.

// CHECK-LABEL: func.func @finalize_lse(
// CHECK-SAME:    %[[ACC:[^:]+]]: memref<32x8xf32>, %[[M:[^:]+]]: memref<32xf32>, %[[L:[^:]+]]: memref<32xf32>, %[[O:[^:]+]]: memref<1x2x100x8xbf16>, %[[LSE:[^:]+]]: memref<1x2x100xf32>, %[[B:[^:]+]]: index, %[[H:[^:]+]]: index, %[[Q0:[^:]+]]: index)
// CHECK:         %[[ROWS:.+]] = arith.maxsi
// CHECK:         %[[ACCW:.+]] = memref.subview %[[ACC]][0, 0] [%[[ROWS]], %{{.+}}] [1, 1]
// CHECK-NEXT:    %[[MW:.+]] = memref.subview %[[M]][0] [%[[ROWS]]] [1]
// CHECK-NEXT:    %[[LW:.+]] = memref.subview %[[L]][0] [%[[ROWS]]] [1]
// CHECK-NEXT:    %[[OW:.+]] = memref.subview %[[O]][%[[B]], %[[H]], %[[Q0]], 0] [1, 1, %[[ROWS]], 8] [1, 1, 1, 1]
//
// out = acc / l, or 0 where l = 0 (no visible key)
// CHECK-NEXT:    linalg.generic {{.*}} ins(%[[ACCW]], %[[LW]] : {{.*}}) outs(%[[OW]] :
// CHECK-NEXT:    ^bb0(%[[A:[^:]+]]: f32, %[[LE:[^:]+]]: f32, %{{[^:]+}}: bf16):
// CHECK-NEXT:      %[[Z:.+]] = arith.constant 0.000000e+00 : f32
// CHECK-NEXT:      %[[EMPTY:.+]] = arith.cmpf oeq, %[[LE]], %[[Z]] : f32
// CHECK-NEXT:      %[[DIV:.+]] = arith.divf %[[A]], %[[LE]] : f32
// CHECK-NEXT:      %[[Z2:.+]] = arith.constant 0.000000e+00 : f32
// CHECK-NEXT:      %[[SEL:.+]] = arith.select %[[EMPTY]], %[[Z2]], %[[DIV]] : f32
// CHECK-NEXT:      %[[T:.+]] = arith.truncf %[[SEL]] : f32 to bf16
// CHECK-NEXT:      linalg.yield %[[T]] : bf16
// CHECK-NEXT:    }
//
// lse = ln(2) * (m + log2(l)), or -inf where l = 0
// CHECK-NEXT:    %[[LSEW:.+]] = memref.subview %[[LSE]][%[[B]], %[[H]], %[[Q0]]] [1, 1, %[[ROWS]]] [1, 1, 1]
// CHECK-NEXT:    linalg.generic {{.*}} ins(%[[MW]], %[[LW]] : {{.*}}) outs(%[[LSEW]] :
// CHECK-NEXT:    ^bb0(%[[ME:[^:]+]]: f32, %[[LE:[^:]+]]: f32, %{{[^:]+}}: f32):
// CHECK-NEXT:      %[[Z:.+]] = arith.constant 0.000000e+00 : f32
// CHECK-NEXT:      %[[EMPTY:.+]] = arith.cmpf oeq, %[[LE]], %[[Z]] : f32
// CHECK-NEXT:      %[[LG:.+]] = math.log2 %[[LE]] : f32
// CHECK-NEXT:      %[[S:.+]] = arith.addf %[[ME]], %[[LG]] : f32
// CHECK-NEXT:      %[[LN2:.+]] = arith.constant 0.693147182 : f32
// CHECK-NEXT:      %[[R:.+]] = arith.mulf %[[S]], %[[LN2]] : f32
// CHECK-NEXT:      %[[NINF:.+]] = arith.constant 0xFF800000 : f32
// CHECK-NEXT:      %[[RES:.+]] = arith.select %[[EMPTY]], %[[NINF]], %[[R]] : f32
// CHECK-NEXT:      linalg.yield %[[RES]] : f32
// CHECK-NEXT:    }
// CHECK-NEXT:    return
func.func @finalize_lse(%acc: memref<32x8xf32>, %m: memref<32xf32>, %l: memref<32xf32>,
                        %o: memref<1x2x100x8xbf16>, %lse: memref<1x2x100xf32>,
                        %b: index, %h: index, %q0: index) {
  flexattn.finalize state(%acc, %m, %l : memref<32x8xf32>, memref<32xf32>, memref<32xf32>)
      outs(%o : memref<1x2x100x8xbf16>) lse(%lse : memref<1x2x100xf32>) at(%b, %h, %q0)
  return
}

// -----

// finalize without lse, f32 out: no truncation, no log2.

// CHECK-LABEL: func.func @finalize_no_lse(
// CHECK:         arith.divf
// CHECK-NOT:     arith.truncf
// CHECK:         linalg.yield %{{.+}} : f32
// CHECK-NEXT:    }
// CHECK-NOT:     math.log2
// CHECK-NEXT:    return
func.func @finalize_no_lse(%acc: memref<32x8xf32>, %m: memref<32xf32>, %l: memref<32xf32>,
                           %o: memref<1x2x100x8xf32>, %b: index, %h: index, %q0: index) {
  flexattn.finalize state(%acc, %m, %l : memref<32x8xf32>, memref<32xf32>, memref<32xf32>)
      outs(%o : memref<1x2x100x8xf32>) at(%b, %h, %q0)
  return
}

// -----

// A packed tile (decoding): q's rows are read at the K/V head (q is
// [B, Hkv, G * M, D]); packed row r reaches the mods as head h + r / M and
// query r mod M.

// CHECK-LABEL: func.func @step_packed(
// CHECK-SAME:    %[[Q:[^:]+]]: memref<1x2x8x16xf32>, %{{[^:]+}}: memref<1x2x80x16xf32>, %{{[^:]+}}: memref<1x2x80x8xf32>, %{{[^:]+}}: memref<8x8xf32>, %{{[^:]+}}: memref<8xf32>, %{{[^:]+}}: memref<8xf32>, %[[B:[^:]+]]: index, %[[H:[^:]+]]: index, %[[HKV:[^:]+]]: index, %[[Q0:[^:]+]]: index, %[[KV0:[^:]+]]: index, %[[M:[^:]+]]: index)
// CHECK:           memref.subview %[[Q]][%[[B]], %[[HKV]], %[[Q0]], 0]
// CHECK:           %[[I:.+]] = linalg.index 0 : index
// CHECK:           %[[R:.+]] = arith.addi %[[Q0]], %[[I]] : index
// CHECK:           %[[KI:.+]] = arith.addi %[[KV0]], %{{.+}} : index
// CHECK-NEXT:      %[[G:.+]] = arith.divui %[[R]], %[[M]] : index
// CHECK-NEXT:      %[[HEAD:.+]] = arith.addi %[[H]], %[[G]] : index
// CHECK-NEXT:      %[[QI:.+]] = arith.remui %[[R]], %[[M]] : index
// CHECK:           flexattn.apply_mods %{{.+}} at(%[[B]], %[[HEAD]], %[[QI]], %[[KI]])
func.func @step_packed(%q: memref<1x2x8x16xf32>, %k: memref<1x2x80x16xf32>, %v: memref<1x2x80x8xf32>,
                       %acc: memref<8x8xf32>, %m: memref<8xf32>, %l: memref<8xf32>,
                       %b: index, %h: index, %hkv: index, %q0: index, %kv0: index, %rows: index) {
  flexattn.tile_step ins(%q, %k, %v : memref<1x2x8x16xf32>, memref<1x2x80x16xf32>, memref<1x2x80x8xf32>)
      state(%acc, %m, %l : memref<8x8xf32>, memref<8xf32>, memref<8xf32>)
      at(%b, %h, %hkv, %q0, %kv0) packed(%rows)
      attributes {masked, scale = 0.25 : f32, tile_size = array<i64: 8, 16>}
    mask_mod {
    ^bb0(%bb: index, %hh: index, %qi: index, %ki: index):
      %keep = arith.cmpi sge, %qi, %ki : index
      flexattn.yield %keep : i1
    }
  return
}
