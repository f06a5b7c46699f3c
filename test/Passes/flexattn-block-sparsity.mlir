// RUN: flexattn-opt %s -split-input-file -flexattn-block-sparsity | FileCheck %s

// No block mask: every KV tile, kv0 = j * BN for j in [0, ceil(N / BN)), with
// mask_mod applied (`masked`) on each.

// CHECK-LABEL: func.func @dense(
// CHECK-SAME:    %[[Q:[^:]+]]: memref<1x4x200x64xf32>, %[[K:[^:]+]]: memref<1x2x200x64xf32>, %[[V:[^:]+]]: memref<1x2x200x32xf32>, %[[ACC:[^:]+]]: memref<64x32xf32>, %[[M:[^:]+]]: memref<64xf32>, %[[L:[^:]+]]: memref<64xf32>, %[[B:[^:]+]]: index, %[[H:[^:]+]]: index, %[[HKV:[^:]+]]: index, %[[Q0:[^:]+]]: index)
// CHECK-DAG:     %[[N:.+]] = arith.constant 200 : index
// CHECK-DAG:     %[[BN:.+]] = arith.constant 48 : index
// CHECK-DAG:     %[[C0:.+]] = arith.constant 0 : index
// CHECK-DAG:     %[[C1:.+]] = arith.constant 1 : index
// CHECK-DAG:     %[[NT:.+]] = arith.ceildivui %[[N]], %[[BN]] : index
// CHECK:         scf.for %[[J:.+]] = %[[C0]] to %[[NT]] step %[[C1]] {
// CHECK-NEXT:      %[[KV0:.+]] = arith.muli %[[J]], %[[BN]] : index
// CHECK-NEXT:      flexattn.tile_step ins(%[[Q]], %[[K]], %[[V]] : memref<1x4x200x64xf32>, memref<1x2x200x64xf32>, memref<1x2x200x32xf32>)
// CHECK-SAME:        state(%[[ACC]], %[[M]], %[[L]] : memref<64x32xf32>, memref<64xf32>, memref<64xf32>)
// CHECK-SAME:        at(%[[B]], %[[H]], %[[HKV]], %[[Q0]], %[[KV0]])
// CHECK-SAME:        attributes {masked, scale = 1.250000e-01 : f32, tile_size = array<i64: 64, 48>} mask_mod {
// CHECK-NEXT:      ^bb0(%{{[^:]+}}: index, %{{[^:]+}}: index, %[[QI:[^:]+]]: index, %[[KI:[^:]+]]: index):
// CHECK-NEXT:        %[[KEEP:.+]] = arith.cmpi sge, %[[QI]], %[[KI]] : index
// CHECK-NEXT:        flexattn.yield %[[KEEP]] : i1
// CHECK-NEXT:      }
// CHECK-NEXT:    }
// CHECK-NEXT:    return
// CHECK-NOT:     flexattn.kv_loop
func.func @dense(%q: memref<1x4x200x64xf32>, %k: memref<1x2x200x64xf32>, %v: memref<1x2x200x32xf32>,
                 %acc: memref<64x32xf32>, %m: memref<64xf32>, %l: memref<64xf32>,
                 %b: index, %h: index, %hkv: index, %q0: index) {
  flexattn.kv_loop ins(%q, %k, %v : memref<1x4x200x64xf32>, memref<1x2x200x64xf32>, memref<1x2x200x32xf32>)
      state(%acc, %m, %l : memref<64x32xf32>, memref<64xf32>, memref<64xf32>)
      at(%b, %h, %hkv, %q0) attributes {scale = 0.125 : f32, tile_size = array<i64: 64, 48>}
    mask_mod {
    ^bb0(%bb: index, %hh: index, %qi: index, %ki: index):
      %keep = arith.cmpi sge, %qi, %ki : index
      flexattn.yield %keep : i1
    }
  return
}

// -----

// No mask_mod: nothing to apply, the steps are not `masked`. A dynamic N
// comes from memref.dim.

// CHECK-LABEL: func.func @dense_no_mods_dynamic(
// CHECK-SAME:    %[[Q:[^:]+]]: memref<?x?x?x?xf16>, %[[K:[^:]+]]: memref<?x?x?x?xf16>
// CHECK-DAG:     %[[N:.+]] = memref.dim %[[K]], %{{.+}} : memref<?x?x?x?xf16>
// CHECK-DAG:     %[[BN:.+]] = arith.constant 16 : index
// CHECK-DAG:     %[[NT:.+]] = arith.ceildivui %[[N]], %[[BN]] : index
// CHECK:         scf.for %[[J:.+]] = %{{.+}} to %[[NT]] step
// CHECK-NEXT:      %[[KV0:.+]] = arith.muli %[[J]], %[[BN]] : index
// CHECK-NEXT:      flexattn.tile_step {{.*}} at(%{{.+}}, %{{.+}}, %{{.+}}, %{{.+}}, %[[KV0]]) attributes {scale = 1.000000e+00 : f32, tile_size = array<i64: 32, 16>}{{ *$}}
// CHECK-NEXT:    }
func.func @dense_no_mods_dynamic(%q: memref<?x?x?x?xf16>, %k: memref<?x?x?x?xf16>, %v: memref<?x?x?x?xf16>,
                                 %acc: memref<32x?xf32>, %m: memref<32xf32>, %l: memref<32xf32>,
                                 %b: index, %h: index, %hkv: index, %q0: index) {
  flexattn.kv_loop ins(%q, %k, %v : memref<?x?x?x?xf16>, memref<?x?x?x?xf16>, memref<?x?x?x?xf16>)
      state(%acc, %m, %l : memref<32x?xf32>, memref<32xf32>, memref<32xf32>)
      at(%b, %h, %hkv, %q0) attributes {scale = 1.0 : f32, tile_size = array<i64: 32, 16>}
  return
}

// -----

// Block mask with full blocks. Query block qb = q0 / block_size[0]. Partial
// blocks first: count = clamp(kv_num_blocks[b, h, qb], 0, width of
// kv_indices), kv0 = kv_indices[b, h, qb, j] * BN, mask_mod applied. Then
// the full blocks, the same way from full_kv_num_blocks / full_kv_indices,
// without mask_mod; score_mod stays on both. The full-block arrays broadcast
// (1x1xQB): their batch and head indices are the constant 0.

// CHECK-LABEL: func.func @block_mask(
// CHECK-SAME:    %[[B:[^:]+]]: index, %[[H:[^:]+]]: index, %[[HKV:[^:]+]]: index, %[[Q0:[^:]+]]: index, %[[KVN:[^:]+]]: memref<2x4x2xi32>, %[[KVI:[^:]+]]: memref<2x4x2x4xi32>, %[[FKVN:[^:]+]]: memref<1x1x2xi32>, %[[FKVI:[^:]+]]: memref<1x1x2x4xi32>)
// CHECK:         %[[QBS:.+]] = arith.constant 128 : index
// CHECK-NEXT:    %[[QB:.+]] = arith.divui %[[Q0]], %[[QBS]] : index
//
// Partial blocks.
// CHECK-NEXT:    %[[CNT:.+]] = memref.load %[[KVN]][%[[B]], %[[H]], %[[QB]]] : memref<2x4x2xi32>
// CHECK-NEXT:    %[[CNTI:.+]] = arith.index_cast %[[CNT]] : i32 to index
// CHECK-NEXT:    %[[W:.+]] = arith.constant 4 : index
// CHECK-NEXT:    %[[CLAMP:.+]] = arith.minsi %[[CNTI]], %[[W]] : index
// CHECK-NEXT:    %[[Z:.+]] = arith.constant 0 : index
// CHECK-NEXT:    %[[UB:.+]] = arith.maxsi %[[CLAMP]], %[[Z]] : index
// CHECK-NEXT:    %[[BN:.+]] = arith.constant 64 : index
// CHECK:         scf.for %[[J:.+]] = %{{.+}} to %[[UB]] step %{{.+}} {
// CHECK-NEXT:      %[[BLK:.+]] = memref.load %[[KVI]][%[[B]], %[[H]], %[[QB]], %[[J]]] : memref<2x4x2x4xi32>
// CHECK-NEXT:      %[[BLKI:.+]] = arith.index_cast %[[BLK]] : i32 to index
// CHECK-NEXT:      %[[KV0:.+]] = arith.muli %[[BLKI]], %[[BN]] : index
// CHECK-NEXT:      flexattn.tile_step {{.*}} at(%[[B]], %[[H]], %[[HKV]], %[[Q0]], %[[KV0]]) attributes {masked, scale = 1.250000e-01 : f32, tile_size = array<i64: 64, 64>} score_mod {
// CHECK:           } mask_mod {
// CHECK:           }
// CHECK-NEXT:    }
//
// Full blocks: broadcast indices, no `masked`, no mask_mod region.
// CHECK-DAG:     %[[FB:.+]] = arith.constant 0 : index
// CHECK-DAG:     %[[FH:.+]] = arith.constant 0 : index
// CHECK:         %[[FCNT:.+]] = memref.load %[[FKVN]][%[[FB]], %[[FH]], %[[QB]]] : memref<1x1x2xi32>
// CHECK-NEXT:    %[[FCNTI:.+]] = arith.index_cast %[[FCNT]] : i32 to index
// CHECK-NEXT:    %[[FW:.+]] = arith.constant 4 : index
// CHECK-NEXT:    %[[FCLAMP:.+]] = arith.minsi %[[FCNTI]], %[[FW]] : index
// CHECK:         %[[FUB:.+]] = arith.maxsi %[[FCLAMP]], %{{.+}} : index
// CHECK-DAG:     %[[FBI:.+]] = arith.constant 0 : index
// CHECK-DAG:     %[[FHI:.+]] = arith.constant 0 : index
// CHECK:         scf.for %[[FJ:.+]] = %{{.+}} to %[[FUB]] step %{{.+}} {
// CHECK-NEXT:      %[[FBLK:.+]] = memref.load %[[FKVI]][%[[FBI]], %[[FHI]], %[[QB]], %[[FJ]]] : memref<1x1x2x4xi32>
// CHECK-NEXT:      %[[FBLKI:.+]] = arith.index_cast %[[FBLK]] : i32 to index
// CHECK-NEXT:      %[[FKV0:.+]] = arith.muli %[[FBLKI]], %{{.+}} : index
// CHECK-NEXT:      flexattn.tile_step {{.*}} at(%[[B]], %[[H]], %[[HKV]], %[[Q0]], %[[FKV0]]) attributes {scale = 1.250000e-01 : f32, tile_size = array<i64: 64, 64>} score_mod {
// CHECK-NEXT:      ^bb0(%[[S:[^:]+]]: f32, %{{[^:]+}}: index, %{{[^:]+}}: index, %{{[^:]+}}: index, %{{[^:]+}}: index):
// CHECK-NEXT:        flexattn.yield %[[S]] : f32
// CHECK-NEXT:      }{{ *$}}
// CHECK-NEXT:    }
// CHECK-NEXT:    return
func.func @block_mask(%q: memref<2x4x256x64xf32>, %k: memref<2x2x256x64xf32>, %v: memref<2x2x256x64xf32>,
                      %acc: memref<64x64xf32>, %m: memref<64xf32>, %l: memref<64xf32>,
                      %b: index, %h: index, %hkv: index, %q0: index,
                      %kvn: memref<2x4x2xi32>, %kvi: memref<2x4x2x4xi32>,
                      %fkvn: memref<1x1x2xi32>, %fkvi: memref<1x1x2x4xi32>) {
  flexattn.kv_loop ins(%q, %k, %v : memref<2x4x256x64xf32>, memref<2x2x256x64xf32>, memref<2x2x256x64xf32>)
      state(%acc, %m, %l : memref<64x64xf32>, memref<64xf32>, memref<64xf32>)
      at(%b, %h, %hkv, %q0)
      block_mask(%kvn, %kvi : memref<2x4x2xi32>, memref<2x4x2x4xi32>)
      full_blocks(%fkvn, %fkvi : memref<1x1x2xi32>, memref<1x1x2x4xi32>)
      attributes {scale = 0.125 : f32, tile_size = array<i64: 64, 64>, block_size = array<i64: 128, 64>}
    score_mod {
    ^bb0(%s: f32, %bb: index, %hh: index, %qi: index, %ki: index):
      flexattn.yield %s : f32
    } mask_mod {
    ^bb0(%bb: index, %hh: index, %qi: index, %ki: index):
      %keep = arith.cmpi sge, %qi, %ki : index
      flexattn.yield %keep : i1
    }
  return
}

// -----

// A block mask without full blocks: one loop only. Broadcast over the batch
// only (1xHxQB): batch index 0, head index h.

// CHECK-LABEL: func.func @block_mask_only(
// CHECK-SAME:    %[[B:[^:]+]]: index, %[[H:[^:]+]]: index, %[[HKV:[^:]+]]: index, %[[Q0:[^:]+]]: index, %[[KVN:[^:]+]]: memref<1x4x4xi32>, %[[KVI:[^:]+]]: memref<1x4x4x8xi32>)
// CHECK:         %[[QB:.+]] = arith.divui %[[Q0]], %{{.+}} : index
// CHECK-NEXT:    %[[B0:.+]] = arith.constant 0 : index
// CHECK-NEXT:    %[[CNT:.+]] = memref.load %[[KVN]][%[[B0]], %[[H]], %[[QB]]] : memref<1x4x4xi32>
// CHECK:         arith.minsi %{{.+}}, %{{.+}} : index
// CHECK:         %[[BN:.+]] = arith.constant 32 : index
// CHECK:         %[[B1:.+]] = arith.constant 0 : index
// CHECK:         scf.for %[[J:.+]] =
// CHECK-NEXT:      memref.load %[[KVI]][%[[B1]], %[[H]], %[[QB]], %[[J]]] : memref<1x4x4x8xi32>
// CHECK:           flexattn.tile_step
// CHECK-SAME:        attributes {masked, scale = 1.250000e-01 : f32, tile_size = array<i64: 32, 32>} mask_mod {
// CHECK:         }
// CHECK-NOT:     scf.for
// CHECK-NOT:     flexattn.tile_step
// CHECK:         return
func.func @block_mask_only(%q: memref<2x4x128x16xf32>, %k: memref<2x4x256x16xf32>, %v: memref<2x4x256x16xf32>,
                           %acc: memref<32x16xf32>, %m: memref<32xf32>, %l: memref<32xf32>,
                           %b: index, %h: index, %hkv: index, %q0: index,
                           %kvn: memref<1x4x4xi32>, %kvi: memref<1x4x4x8xi32>) {
  flexattn.kv_loop ins(%q, %k, %v : memref<2x4x128x16xf32>, memref<2x4x256x16xf32>, memref<2x4x256x16xf32>)
      state(%acc, %m, %l : memref<32x16xf32>, memref<32xf32>, memref<32xf32>)
      at(%b, %h, %hkv, %q0)
      block_mask(%kvn, %kvi : memref<1x4x4xi32>, memref<1x4x4x8xi32>)
      attributes {scale = 0.125 : f32, tile_size = array<i64: 32, 32>, block_size = array<i64: 32, 32>}
    mask_mod {
    ^bb0(%bb: index, %hh: index, %qi: index, %ki: index):
      %keep = arith.cmpi sge, %qi, %ki : index
      flexattn.yield %keep : i1
    }
  return
}

// -----

// KV tiles narrower than the KV block (flexattn-tile{block-tiles}): each
// listed 128-column block is r = 2 tiles of 64, walked as one flat loop over
// j in [0, 2 n): block kv_indices[.., j / 2], kv0 = blk * 128 + (j % 2) * 64,
// with its block's masking (partial: mask_mod; full: none).

// CHECK-LABEL: func.func @block_tiles(
// CHECK-SAME:    %[[B:[^:]+]]: index, %[[H:[^:]+]]: index, %[[HKV:[^:]+]]: index, %[[Q0:[^:]+]]: index, %[[KVN:[^:]+]]: memref<1x1x2xi32>, %[[KVI:[^:]+]]: memref<1x1x2x2xi32>, %[[FKVN:[^:]+]]: memref<1x1x2xi32>, %[[FKVI:[^:]+]]: memref<1x1x2x2xi32>)
// CHECK:         %[[QB:.+]] = arith.divui %[[Q0]], %{{.+}} : index
// CHECK:         %[[N:.+]] = arith.maxsi %{{.+}}, %{{.+}} : index
// CHECK-DAG:     %[[R:.+]] = arith.constant 2 : index
// CHECK-DAG:     %[[BS:.+]] = arith.constant 128 : index
// CHECK-DAG:     %[[BN:.+]] = arith.constant 64 : index
// CHECK:         %[[T:.+]] = arith.muli %[[N]], %[[R]] : index
// CHECK:         scf.for %[[J:.+]] = %{{.+}} to %[[T]] step %{{.+}} {
// CHECK-NEXT:      %[[JB:.+]] = arith.divui %[[J]], %[[R]] : index
// CHECK-NEXT:      %[[BLK:.+]] = memref.load %[[KVI]][%{{.+}}, %{{.+}}, %[[QB]], %[[JB]]] : memref<1x1x2x2xi32>
// CHECK-NEXT:      %[[BLKI:.+]] = arith.index_cast %[[BLK]] : i32 to index
// CHECK-NEXT:      %[[SUB:.+]] = arith.remui %[[J]], %[[R]] : index
// CHECK-NEXT:      %[[OFF:.+]] = arith.muli %[[SUB]], %[[BN]] : index
// CHECK-NEXT:      %[[START:.+]] = arith.muli %[[BLKI]], %[[BS]] : index
// CHECK-NEXT:      %[[KV0:.+]] = arith.addi %[[START]], %[[OFF]] : index
// CHECK-NEXT:      flexattn.tile_step {{.*}} at(%[[B]], %[[H]], %[[HKV]], %[[Q0]], %[[KV0]]) attributes {masked, scale = 1.250000e-01 : f32, tile_size = array<i64: 64, 64>} mask_mod {
// CHECK:         }
// CHECK:         memref.load %[[FKVN]]
// CHECK:         %[[FT:.+]] = arith.muli %{{.+}}, %{{.+}} : index
// CHECK:         scf.for %[[FJ:.+]] = %{{.+}} to %[[FT]] step %{{.+}} {
// CHECK-NEXT:      arith.divui %[[FJ]], %{{.+}} : index
// CHECK-NEXT:      memref.load %[[FKVI]]
// CHECK:           flexattn.tile_step {{.*}} attributes {scale = 1.250000e-01 : f32, tile_size = array<i64: 64, 64>}{{ *$}}
// CHECK-NEXT:    }
// CHECK-NEXT:    return
func.func @block_tiles(%q: memref<2x4x256x64xf32>, %k: memref<2x2x256x64xf32>, %v: memref<2x2x256x64xf32>,
                       %acc: memref<64x64xf32>, %m: memref<64xf32>, %l: memref<64xf32>,
                       %b: index, %h: index, %hkv: index, %q0: index,
                       %kvn: memref<1x1x2xi32>, %kvi: memref<1x1x2x2xi32>,
                       %fkvn: memref<1x1x2xi32>, %fkvi: memref<1x1x2x2xi32>) {
  flexattn.kv_loop ins(%q, %k, %v : memref<2x4x256x64xf32>, memref<2x2x256x64xf32>, memref<2x2x256x64xf32>)
      state(%acc, %m, %l : memref<64x64xf32>, memref<64xf32>, memref<64xf32>)
      at(%b, %h, %hkv, %q0)
      block_mask(%kvn, %kvi : memref<1x1x2xi32>, memref<1x1x2x2xi32>)
      full_blocks(%fkvn, %fkvi : memref<1x1x2xi32>, memref<1x1x2x2xi32>)
      attributes {scale = 0.125 : f32, tile_size = array<i64: 64, 64>, block_size = array<i64: 128, 128>}
    mask_mod {
    ^bb0(%bb: index, %hh: index, %qi: index, %ki: index):
      %keep = arith.cmpi sge, %qi, %ki : index
      flexattn.yield %keep : i1
    }
  return
}

// -----

// Dynamic block-mask dims: whether a dim broadcasts is decided at run time
// (index 0 where the dim is 1), and the count is clamped to the dynamic width.

// CHECK-LABEL: func.func @block_mask_dynamic(
// CHECK-SAME:    %[[B:[^:]+]]: index, %[[H:[^:]+]]: index, %[[HKV:[^:]+]]: index, %[[Q0:[^:]+]]: index, %[[KVN:[^:]+]]: memref<?x?x?xi32>, %[[KVI:[^:]+]]: memref<?x?x?x?xi32>)
// CHECK:         %[[BD:.+]] = memref.dim %[[KVN]], %{{.+}} : memref<?x?x?xi32>
// CHECK-NEXT:    %[[ONE:.+]] = arith.constant 1 : index
// CHECK-NEXT:    %[[BIS1:.+]] = arith.cmpi eq, %[[BD]], %[[ONE]] : index
// CHECK-NEXT:    %[[ZERO:.+]] = arith.constant 0 : index
// CHECK-NEXT:    %[[BI:.+]] = arith.select %[[BIS1]], %[[ZERO]], %[[B]] : index
// CHECK:         %[[HI:.+]] = arith.select %{{.+}}, %{{.+}}, %[[H]] : index
// CHECK-NEXT:    %[[CNT:.+]] = memref.load %[[KVN]][%[[BI]], %[[HI]], %{{.+}}] : memref<?x?x?xi32>
// CHECK-NEXT:    %[[CNTI:.+]] = arith.index_cast %[[CNT]] : i32 to index
// CHECK-NEXT:    %[[C3:.+]] = arith.constant 3 : index
// CHECK-NEXT:    %[[W:.+]] = memref.dim %[[KVI]], %[[C3]] : memref<?x?x?x?xi32>
// CHECK-NEXT:    arith.minsi %[[CNTI]], %[[W]] : index
// CHECK:         scf.for
// CHECK:           memref.load %[[KVI]]
// CHECK:           flexattn.tile_step
func.func @block_mask_dynamic(%q: memref<?x?x?x?xf32>, %k: memref<?x?x?x?xf32>, %v: memref<?x?x?x?xf32>,
                              %acc: memref<64x?xf32>, %m: memref<64xf32>, %l: memref<64xf32>,
                              %b: index, %h: index, %hkv: index, %q0: index,
                              %kvn: memref<?x?x?xi32>, %kvi: memref<?x?x?x?xi32>) {
  flexattn.kv_loop ins(%q, %k, %v : memref<?x?x?x?xf32>, memref<?x?x?x?xf32>, memref<?x?x?x?xf32>)
      state(%acc, %m, %l : memref<64x?xf32>, memref<64xf32>, memref<64xf32>)
      at(%b, %h, %hkv, %q0)
      block_mask(%kvn, %kvi : memref<?x?x?xi32>, memref<?x?x?x?xi32>)
      attributes {scale = 0.125 : f32, tile_size = array<i64: 64, 64>, block_size = array<i64: 64, 64>}
  return
}

// -----

// A packed tile (decoding): its block mask is its own row, read at query
// block 0, and its steps stay packed.

// CHECK-LABEL: func.func @packed(
// CHECK-SAME:    %[[Q0:[^:]+]]: index, %[[M:[^:]+]]: index, %[[KVN:[^:]+]]: memref<1x1x1xi32>, %[[KVI:[^:]+]]: memref<1x1x1x?xi32>)
// CHECK-DAG:     %[[Z:.+]] = arith.constant 0 : index
// CHECK:         memref.load %[[KVN]][%{{.+}}, %{{.+}}, %[[Z]]] : memref<1x1x1xi32>
// CHECK:         scf.for
// CHECK:           memref.load %[[KVI]][%{{.+}}, %{{.+}}, %[[Z]], %{{.+}}] : memref<1x1x1x?xi32>
// CHECK:           flexattn.tile_step {{.*}} at(%{{.+}}, %{{.+}}, %{{.+}}, %[[Q0]], %{{.+}}) packed(%[[M]])
func.func @packed(%q: memref<1x2x8x64xf32>, %k: memref<1x2x256x64xf32>, %v: memref<1x2x256x64xf32>,
                  %acc: memref<8x64xf32>, %m: memref<8xf32>, %l: memref<8xf32>,
                  %b: index, %h: index, %hkv: index, %q0: index, %rows: index,
                  %kvn: memref<1x1x1xi32>, %kvi: memref<1x1x1x?xi32>) {
  flexattn.kv_loop ins(%q, %k, %v : memref<1x2x8x64xf32>, memref<1x2x256x64xf32>, memref<1x2x256x64xf32>)
      state(%acc, %m, %l : memref<8x64xf32>, memref<8xf32>, memref<8xf32>)
      at(%b, %h, %hkv, %q0) packed(%rows)
      block_mask(%kvn, %kvi : memref<1x1x1xi32>, memref<1x1x1x?xi32>)
      attributes {scale = 0.125 : f32, tile_size = array<i64: 8, 64>, block_size = array<i64: 128, 64>}
  return
}

// -----

// Split s of n, dense: the KV tiles [lo, hi) with chunk = ceil(T / n),
// lo = clamp(s * chunk, 0, T), hi = clamp(lo + chunk, 0, T).

// CHECK-LABEL: func.func @split_dense(
// CHECK-SAME:    %[[S:[^:]+]]: index, %[[N:[^:]+]]: index)
// CHECK-DAG:     %[[BN:.+]] = arith.constant 64 : index
// CHECK-DAG:     %[[T:.+]] = arith.ceildivui %{{.+}}, %[[BN]] : index
// CHECK:         %[[CHUNK:.+]] = arith.ceildivui %[[T]], %[[N]] : index
// CHECK-NEXT:    %[[LO0:.+]] = arith.muli %[[S]], %[[CHUNK]] : index
// CHECK-NEXT:    %[[HI0:.+]] = arith.addi %[[LO0]], %[[CHUNK]] : index
// CHECK:         %[[LO:.+]] = arith.minsi %{{.+}}, %[[T]] : index
// CHECK:         %[[HI:.+]] = arith.minsi %{{.+}}, %[[T]] : index
// CHECK:         scf.for %[[J:.+]] = %[[LO]] to %[[HI]] step
// CHECK-NEXT:      %[[KV0:.+]] = arith.muli %[[J]], %[[BN]] : index
// CHECK-NEXT:      flexattn.tile_step {{.*}} %[[KV0]])
func.func @split_dense(%q: memref<1x2x8x64xf32>, %k: memref<1x2x256x64xf32>, %v: memref<1x2x256x64xf32>,
                       %acc: memref<8x64xf32>, %m: memref<8xf32>, %l: memref<8xf32>,
                       %b: index, %h: index, %hkv: index, %q0: index, %s: index, %n: index) {
  flexattn.kv_loop ins(%q, %k, %v : memref<1x2x8x64xf32>, memref<1x2x256x64xf32>, memref<1x2x256x64xf32>)
      state(%acc, %m, %l : memref<8x64xf32>, memref<8xf32>, memref<8xf32>)
      at(%b, %h, %hkv, %q0) split(%s of %n)
      attributes {scale = 0.125 : f32, tile_size = array<i64: 8, 64>}
  return
}

// -----

// Split with a block mask: the partial then the full blocks as one list of
// np + nf; the split's range [lo, hi) takes partial blocks [lo, min(hi, np))
// and full blocks [clamp(lo - np), clamp(hi - np)).

// CHECK-LABEL: func.func @split_lists(
// CHECK:         %[[NP:.+]] = arith.maxsi %{{.+}}, %{{.+}} : index
// CHECK:         %[[NF:.+]] = arith.maxsi %{{.+}}, %{{.+}} : index
// CHECK:         %[[TOTAL:.+]] = arith.addi %[[NP]], %[[NF]] : index
// CHECK:         arith.ceildivui %[[TOTAL]], %{{.+}} : index
// CHECK:         %[[PHI:.+]] = arith.minsi %[[HI:.+]], %[[NP]] : index
// CHECK:         scf.for %{{.+}} = %[[LO:.+]] to %[[PHI]] step
// CHECK:           flexattn.tile_step {{.*}} attributes {masked,
// CHECK:         arith.subi %[[LO]], %[[NP]] : index
// CHECK:         arith.subi %[[HI]], %[[NP]] : index
// CHECK:         scf.for
// CHECK:           flexattn.tile_step {{.*}} attributes {scale
func.func @split_lists(%q: memref<1x2x8x64xf32>, %k: memref<1x2x256x64xf32>, %v: memref<1x2x256x64xf32>,
                       %acc: memref<8x64xf32>, %m: memref<8xf32>, %l: memref<8xf32>,
                       %b: index, %h: index, %hkv: index, %q0: index, %s: index, %n: index,
                       %kvn: memref<1x2x1xi32>, %kvi: memref<1x2x1x4xi32>,
                       %fkvn: memref<1x2x1xi32>, %fkvi: memref<1x2x1x4xi32>) {
  flexattn.kv_loop ins(%q, %k, %v : memref<1x2x8x64xf32>, memref<1x2x256x64xf32>, memref<1x2x256x64xf32>)
      state(%acc, %m, %l : memref<8x64xf32>, memref<8xf32>, memref<8xf32>)
      at(%b, %h, %hkv, %q0) split(%s of %n)
      block_mask(%kvn, %kvi : memref<1x2x1xi32>, memref<1x2x1x4xi32>)
      full_blocks(%fkvn, %fkvi : memref<1x2x1xi32>, memref<1x2x1x4xi32>)
      attributes {scale = 0.125 : f32, tile_size = array<i64: 8, 64>, block_size = array<i64: 128, 64>}
    mask_mod {
    ^bb0(%bb: index, %hh: index, %qi: index, %ki: index):
      %keep = arith.cmpi sge, %qi, %ki : index
      flexattn.yield %keep : i1
    }
  return
}
