// RUN: flexattn-opt %s -split-input-file -verify-diagnostics --pass-pipeline='builtin.module(flexattn-tile{pack-heads=true})' \
// RUN:   | FileCheck %s

// Decoding with GQA 8:2 (G = 4), one query row: q, out and lse are viewed
// as [B, Hkv, G * M, ...], the loop runs over (batch, K/V head, tile of
// packed rows), the mods' first head is hkv * G and the kv_loop is
// packed(M). finalize writes the packed views at the K/V head.

// CHECK-LABEL: func.func @dense_gqa(
// CHECK-SAME:    %[[Q:[^:]+]]: memref<2x8x1x64xf32>, %[[K:[^:]+]]: memref<2x2x300x64xf32>, %[[V:[^:]+]]: memref<2x2x300x32xf32>, %[[O:[^:]+]]: memref<2x8x1x32xf32>, %[[LSE:[^:]+]]: memref<2x8x1xf32>)
// CHECK-DAG:     %[[G:.+]] = arith.constant 4 : index
// CHECK:         %[[QE:.+]] = memref.expand_shape %[[Q]] {{\[}}[0], [1, 2], [3], [4]] output_shape [2, 2, 4, 1, 64] : memref<2x8x1x64xf32> into memref<2x2x4x1x64xf32>
// CHECK-NEXT:    %[[QP:.+]] = memref.collapse_shape %[[QE]] {{\[}}[0], [1], [2, 3], [4]] : memref<2x2x4x1x64xf32> into memref<2x2x4x64xf32>
// CHECK-NEXT:    %[[OE:.+]] = memref.expand_shape %[[O]]
// CHECK-NEXT:    %[[OP:.+]] = memref.collapse_shape %[[OE]] {{\[}}[0], [1], [2, 3], [4]] : memref<2x2x4x1x32xf32> into memref<2x2x4x32xf32>
// CHECK-NEXT:    %[[LE:.+]] = memref.expand_shape %[[LSE]] {{\[}}[0], [1, 2], [3]] output_shape [2, 2, 4, 1] : memref<2x8x1xf32> into memref<2x2x4x1xf32>
// CHECK-NEXT:    %[[LP:.+]] = memref.collapse_shape %[[LE]] {{\[}}[0], [1], [2, 3]] : memref<2x2x4x1xf32> into memref<2x2x4xf32>
// CHECK:         scf.parallel (%[[BI:.+]], %[[HKV:.+]], %[[TI:.+]]) = ({{.+}}) to ({{.+}}) step
// CHECK-NEXT:      memref.alloca_scope {
// CHECK-NEXT:        %[[H:.+]] = arith.muli %[[HKV]], %[[G]] : index
// CHECK-NEXT:        %[[Q0:.+]] = arith.muli %[[TI]], %{{.+}} : index
// CHECK:             flexattn.kv_loop ins(%[[QP]], %[[K]], %[[V]] : memref<2x2x4x64xf32>, memref<2x2x300x64xf32>, memref<2x2x300x32xf32>)
// CHECK-SAME:          at(%[[BI]], %[[H]], %[[HKV]], %[[Q0]]) packed(%{{c1.*}})
// CHECK-NEXT:        flexattn.finalize {{.*}} outs(%[[OP]] : memref<2x2x4x32xf32>) lse(%[[LP]] : memref<2x2x4xf32>) at(%[[BI]], %[[HKV]], %[[Q0]])
func.func @dense_gqa(%q: memref<2x8x1x64xf32>, %k: memref<2x2x300x64xf32>, %v: memref<2x2x300x32xf32>,
                     %o: memref<2x8x1x32xf32>, %lse: memref<2x8x1xf32>) {
  flexattn.attention ins(%q, %k, %v : memref<2x8x1x64xf32>, memref<2x2x300x64xf32>, memref<2x2x300x32xf32>)
      outs(%o : memref<2x8x1x32xf32>) lse(%lse : memref<2x8x1xf32>) attributes {scale = 0.125 : f32}
  return
}

// -----

// With a block mask (dynamic M and N): each tile builds its own mask row,
// the union of the rows of the heads and query blocks it holds. seen[j] and
// full[j] count the rows listing block j; blocks at or past ceil(N / 64) are
// skipped; a block every row lists as full stays full, any other seen block
// is partial; the kv_loop reads the union lists (one row) and a packed tile
// is not shrunk to the mask's Q block.

// CHECK-LABEL: func.func @block_mask(
// CHECK-SAME:    %[[Q:[^:]+]]: memref<?x4x?x64xf32>, %[[K:[^:]+]]: memref<?x1x?x64xf32>, %{{[^:]+}}: memref<?x1x?x64xf32>, %{{[^:]+}}: memref<?x4x?x64xf32>, %[[KVN:[^:]+]]: memref<?x?x?xi32>, %[[KVI:[^:]+]]: memref<?x?x?x?xi32>, %[[FKVN:[^:]+]]: memref<?x?x?xi32>, %[[FKVI:[^:]+]]: memref<?x?x?x?xi32>)
// CHECK:         %[[M:.+]] = memref.dim %[[Q]], %c2 : memref<?x4x?x64xf32>
// CHECK:         scf.parallel (%[[BI:.+]], %[[HKV:.+]], %[[TI:.+]]) =
// CHECK:           %[[H:.+]] = arith.muli %[[HKV]], %{{.+}} : index
// CHECK-NEXT:      %[[Q0:.+]] = arith.muli %[[TI]], %[[BM:.+]] : index
// CHECK:           %[[END0:.+]] = arith.addi %[[Q0]], %[[BM]] : index
// CHECK:           %[[END:.+]] = arith.minui %[[END0]], %{{.+}} : index
// CHECK:           %[[NKB:.+]] = arith.ceildivui %{{.+}}, %{{.+}} : index
// Heads and query blocks of the tile's first and last rows.
// CHECK:           %[[LAST:.+]] = arith.subi %[[END]], %{{.+}} : index
// CHECK:           arith.divui %[[Q0]], %[[M]] : index
// CHECK:           arith.divui %[[LAST]], %[[M]] : index
// CHECK:           %[[SEEN:.+]] = memref.alloca(%[[NKB]]) : memref<?xi32>
// CHECK-NEXT:      %[[FULL:.+]] = memref.alloca(%[[NKB]]) : memref<?xi32>
// CHECK:           scf.for %{{.+}} = %{{.+}} to %[[NKB]] step
// CHECK:             memref.store %{{.+}}, %[[SEEN]]
// CHECK:             memref.store %{{.+}}, %[[FULL]]
// CHECK:           scf.for %[[HH:.+]] = %{{.+}} to %{{.+}} step
// CHECK:             scf.for %[[QB:.+]] = %{{.+}} to %{{.+}} step
// CHECK:               memref.load %[[KVN]][%{{.+}}, %{{.+}}, %[[QB]]] : memref<?x?x?xi32>
// CHECK:               scf.for
// CHECK:                 memref.load %[[KVI]]
// CHECK:                 %[[IN:.+]] = arith.cmpi ult, %{{.+}}, %[[NKB]] : index
// CHECK-NEXT:            scf.if %[[IN]] {
// CHECK:                   memref.store %{{.+}}, %[[SEEN]]
// CHECK:               memref.load %[[FKVN]]
// CHECK:               scf.for
// CHECK:                 memref.load %[[FKVI]]
// CHECK:                   memref.store %{{.+}}, %[[SEEN]]
// CHECK:                   memref.load %[[FULL]]
// CHECK:                   memref.store %{{.+}}, %[[FULL]]
// CHECK:           %[[NUM:.+]] = memref.alloca() : memref<1x1x1xi32>
// CHECK-NEXT:      %[[IDX:.+]] = memref.alloca(%[[NKB]]) : memref<1x1x1x?xi32>
// CHECK-NEXT:      %[[FNUM:.+]] = memref.alloca() : memref<1x1x1xi32>
// CHECK-NEXT:      %[[FIDX:.+]] = memref.alloca(%[[NKB]]) : memref<1x1x1x?xi32>
// CHECK:           %[[LISTS:.+]]:2 = scf.for %{{.+}} = %{{.+}} to %[[NKB]] step %{{.+}} iter_args(
// CHECK:           memref.store %{{.+}}, %[[NUM]]
// CHECK:           memref.store %{{.+}}, %[[FNUM]]
// CHECK:           flexattn.kv_loop ins(%{{.+}}) state({{.+}}) at(%[[BI]], %[[H]], %[[HKV]], %[[Q0]]) packed(%[[M]])
// CHECK-SAME:        block_mask(%[[NUM]], %[[IDX]] : memref<1x1x1xi32>, memref<1x1x1x?xi32>)
// CHECK-SAME:        full_blocks(%[[FNUM]], %[[FIDX]] : memref<1x1x1xi32>, memref<1x1x1x?xi32>)
// CHECK-SAME:        block_size = array<i64: 128, 64>, scale = 1.250000e-01 : f32, tile_size = array<i64: 64, 64>
func.func @block_mask(%q: memref<?x4x?x64xf32>, %k: memref<?x1x?x64xf32>, %v: memref<?x1x?x64xf32>,
                      %o: memref<?x4x?x64xf32>,
                      %kvn: memref<?x?x?xi32>, %kvi: memref<?x?x?x?xi32>,
                      %fkvn: memref<?x?x?xi32>, %fkvi: memref<?x?x?x?xi32>) {
  flexattn.attention ins(%q, %k, %v : memref<?x4x?x64xf32>, memref<?x1x?x64xf32>, memref<?x1x?x64xf32>)
      outs(%o : memref<?x4x?x64xf32>)
      block_mask(%kvn, %kvi : memref<?x?x?xi32>, memref<?x?x?x?xi32>)
      full_blocks(%fkvn, %fkvi : memref<?x?x?xi32>, memref<?x?x?x?xi32>)
      attributes {scale = 0.125 : f32, block_size = array<i64: 128, 64>}
  return
}

// -----

// A mask of one row per batch (head dim and query-block dim 1, statically:
// what create_block_mask(H=None) makes for a decode step) is already every
// packed tile's union: the kv_loop reads it in place, nothing is built.

// CHECK-LABEL: func.func @row_per_batch_mask(
// CHECK-SAME:    %{{[^:]+}}: memref<2x8x1x64xbf16>, %{{[^:]+}}: memref<2x2x512x64xbf16>, %{{[^:]+}}: memref<2x2x512x64xbf16>, %{{[^:]+}}: memref<2x8x1x64xbf16>, %[[KVN:[^:]+]]: memref<2x1x1xi32>, %[[KVI:[^:]+]]: memref<2x1x1x4xi32>)
// CHECK-NOT:     memref.alloca({{.*}}) : memref<{{.*}}xi32>
// CHECK:         flexattn.kv_loop
// CHECK-SAME:      packed(
// CHECK-SAME:      block_mask(%[[KVN]], %[[KVI]] : memref<2x1x1xi32>, memref<2x1x1x4xi32>)
func.func @row_per_batch_mask(%q: memref<2x8x1x64xbf16>, %k: memref<2x2x512x64xbf16>,
                              %v: memref<2x2x512x64xbf16>, %o: memref<2x8x1x64xbf16>,
                              %kvn: memref<2x1x1xi32>, %kvi: memref<2x1x1x4xi32>) {
  flexattn.attention ins(%q, %k, %v : memref<2x8x1x64xbf16>, memref<2x2x512x64xbf16>, memref<2x2x512x64xbf16>)
      outs(%o : memref<2x8x1x64xbf16>)
      block_mask(%kvn, %kvi : memref<2x1x1xi32>, memref<2x1x1x4xi32>)
      attributes {scale = 0.125 : f32, block_size = array<i64: 128, 128>}
  return
}

// -----

// q viewed with strides cannot be packed by a view.

func.func @strided(%q: memref<1x4x1x64xf32, strided<[512, 64, 64, 1]>>, %k: memref<1x1x64x64xf32>,
                   %v: memref<1x1x64x64xf32>, %o: memref<1x4x1x64xf32>) {
  // expected-error @+1 {{pack-heads views q, out and lse as [B, Hkv, G * M, ...]: they must be contiguous (identity layout), got 'memref<1x4x1x64xf32, strided<[512, 64, 64, 1]>>'}}
  flexattn.attention ins(%q, %k, %v : memref<1x4x1x64xf32, strided<[512, 64, 64, 1]>>, memref<1x1x64x64xf32>, memref<1x1x64x64xf32>)
      outs(%o : memref<1x4x1x64xf32>) attributes {scale = 0.125 : f32}
  return
}

// -----

func.func @dynamic_heads(%q: memref<1x?x1x64xf32>, %k: memref<1x1x64x64xf32>,
                         %v: memref<1x1x64x64xf32>, %o: memref<1x?x1x64xf32>) {
  // expected-error @+1 {{pack-heads needs static head counts}}
  flexattn.attention ins(%q, %k, %v : memref<1x?x1x64xf32>, memref<1x1x64x64xf32>, memref<1x1x64x64xf32>)
      outs(%o : memref<1x?x1x64xf32>) attributes {scale = 0.125 : f32}
  return
}

// -----

// Sinks and max_scores are per query head: not packed yet.

func.func @sinks(%q: memref<1x4x1x64xf32>, %k: memref<1x1x64x64xf32>,
                 %v: memref<1x1x64x64xf32>, %s: memref<4xf32>, %o: memref<1x4x1x64xf32>) {
  // expected-error @+1 {{pack-heads does not take attention sinks or max_scores yet (their rows are per query head)}}
  flexattn.attention ins(%q, %k, %v : memref<1x4x1x64xf32>, memref<1x1x64x64xf32>, memref<1x1x64x64xf32>)
      sinks(%s : memref<4xf32>) outs(%o : memref<1x4x1x64xf32>) attributes {scale = 0.125 : f32}
  return
}
