// RUN: flexattn-opt %s -split-input-file -flexattn-tile | FileCheck %s
// RUN: flexattn-opt %s -split-input-file \
// RUN:   --pass-pipeline='builtin.module(flexattn-tile{tile-q=32 tile-kv=16})' | FileCheck %s --check-prefix=OPT
// RUN: flexattn-opt %s -split-input-file \
// RUN:   --pass-pipeline='builtin.module(flexattn-tile{tile-kv=32 block-tiles=true})' | FileCheck %s --check-prefix=BLOCKS
// RUN: flexattn-opt %s -split-input-file \
// RUN:   --pass-pipeline='builtin.module(flexattn-tile{tile-kv=48 block-tiles=true})' | FileCheck %s --check-prefix=NODIV
// RUN: not flexattn-opt %s -split-input-file \
// RUN:   --pass-pipeline='builtin.module(flexattn-tile{tile-q=0})' 2>&1 | FileCheck %s --check-prefix=ZERO

// ZERO: error: 'flexattn.attention' op tile sizes must be positive, got 0 x 64

// Dense GQA attention (8 query heads over 2 key/value heads) with lse: one
// parallel iteration per (batch, query head, Q tile), each owning its state.

// CHECK-LABEL: func.func @dense_gqa(
// CHECK-SAME:    %[[Q:[^:]+]]: memref<3x8x100x64xf32>, %[[K:[^:]+]]: memref<3x2x80x64xf32>, %[[V:[^:]+]]: memref<3x2x80x32xf32>, %[[O:[^:]+]]: memref<3x8x100x32xf32>, %[[LSE:[^:]+]]: memref<3x8x100xf32>)
// CHECK-DAG:     %[[C0:.+]] = arith.constant 0 : index
// CHECK-DAG:     %[[C1:.+]] = arith.constant 1 : index
// CHECK-DAG:     %[[B:.+]] = arith.constant 3 : index
// CHECK-DAG:     %[[HQ:.+]] = arith.constant 8 : index
// CHECK-DAG:     %[[M:.+]] = arith.constant 100 : index
// CHECK-DAG:     %[[HKV:.+]] = arith.constant 2 : index
// CHECK-DAG:     %[[BM:.+]] = arith.constant 64 : index
// Query heads per key/value head: G = Hq / Hkv; ceil(M / BM) Q tiles.
// CHECK-DAG:     %[[G:.+]] = arith.divui %[[HQ]], %[[HKV]] : index
// CHECK-DAG:     %[[QT:.+]] = arith.ceildivui %[[M]], %[[BM]] : index
// CHECK:         scf.parallel (%[[BI:.+]], %[[HI:.+]], %[[TI:.+]]) = (%[[C0]], %[[C0]], %[[C0]]) to (%[[B]], %[[HQ]], %[[QT]]) step (%[[C1]], %[[C1]], %[[C1]]) {
// CHECK-NEXT:      memref.alloca_scope {
// hkv = h / G, q0 = tile * BM.
// CHECK-NEXT:        %[[HKVI:.+]] = arith.divui %[[HI]], %[[G]] : index
// CHECK-NEXT:        %[[Q0:.+]] = arith.muli %[[TI]], %[[BM]] : index
// The online-softmax state: acc [BM, Dv], max [BM], sum [BM], all f32.
// CHECK-NEXT:        %[[ACC:.+]] = memref.alloca() : memref<64x32xf32>
// CHECK-NEXT:        %[[MAX:.+]] = memref.alloca() : memref<64xf32>
// CHECK-NEXT:        %[[SUM:.+]] = memref.alloca() : memref<64xf32>
// acc = 0, max = -inf, sum = 0.
// CHECK-NEXT:        %[[Z0:.+]] = arith.constant 0.000000e+00 : f32
// CHECK-NEXT:        linalg.fill ins(%[[Z0]] : f32) outs(%[[ACC]] : memref<64x32xf32>)
// CHECK-NEXT:        %[[NINF:.+]] = arith.constant 0xFF800000 : f32
// CHECK-NEXT:        linalg.fill ins(%[[NINF]] : f32) outs(%[[MAX]] : memref<64xf32>)
// CHECK-NEXT:        %[[Z1:.+]] = arith.constant 0.000000e+00 : f32
// CHECK-NEXT:        linalg.fill ins(%[[Z1]] : f32) outs(%[[SUM]] : memref<64xf32>)
// CHECK-NEXT:        flexattn.kv_loop ins(%[[Q]], %[[K]], %[[V]] : memref<3x8x100x64xf32>, memref<3x2x80x64xf32>, memref<3x2x80x32xf32>)
// CHECK-SAME:          state(%[[ACC]], %[[MAX]], %[[SUM]] : memref<64x32xf32>, memref<64xf32>, memref<64xf32>)
// CHECK-SAME:          at(%[[BI]], %[[HI]], %[[HKVI]], %[[Q0]])
// CHECK-SAME:          attributes {scale = 1.250000e-01 : f32, tile_size = array<i64: 64, 64>}{{ *$}}
// CHECK-NEXT:        flexattn.finalize state(%[[ACC]], %[[MAX]], %[[SUM]] : memref<64x32xf32>, memref<64xf32>, memref<64xf32>)
// CHECK-SAME:          outs(%[[O]] : memref<3x8x100x32xf32>) lse(%[[LSE]] : memref<3x8x100xf32>) at(%[[BI]], %[[HI]], %[[Q0]])
// CHECK-NEXT:      }
// CHECK-NEXT:      scf.reduce
// CHECK-NOT:     flexattn.attention

// OPT-LABEL: func.func @dense_gqa(
// OPT-DAG:     %[[BM:.+]] = arith.constant 32 : index
// OPT:         arith.ceildivui %{{.+}}, %[[BM]] : index
// OPT:         memref.alloca_scope {
// OPT:           arith.muli %{{.+}}, %[[BM]] : index
// OPT-NEXT:      memref.alloca() : memref<32x32xf32>
// OPT-NEXT:      memref.alloca() : memref<32xf32>
// OPT-NEXT:      memref.alloca() : memref<32xf32>
// OPT:           flexattn.kv_loop
// OPT-SAME:        tile_size = array<i64: 32, 16>
func.func @dense_gqa(%q: memref<3x8x100x64xf32>, %k: memref<3x2x80x64xf32>, %v: memref<3x2x80x32xf32>,
                     %o: memref<3x8x100x32xf32>, %lse: memref<3x8x100xf32>) {
  flexattn.attention ins(%q, %k, %v : memref<3x8x100x64xf32>, memref<3x2x80x64xf32>, memref<3x2x80x32xf32>)
      outs(%o : memref<3x8x100x32xf32>) lse(%lse : memref<3x8x100xf32>) attributes {scale = 0.125 : f32}
  return
}

// -----

// Dynamic shapes: the bounds come from memref.dim, the accumulator takes Dv
// from v.

// CHECK-LABEL: func.func @dynamic(
// CHECK-SAME:    %[[Q:[^:]+]]: memref<?x?x?x?xf16>, %[[K:[^:]+]]: memref<?x?x?x?xf16>, %[[V:[^:]+]]: memref<?x?x?x?xf16>, %[[O:[^:]+]]: memref<?x?x?x?xf16>)
// CHECK-DAG:     %[[B:.+]] = memref.dim %[[Q]], %{{.+}} : memref<?x?x?x?xf16>
// CHECK-DAG:     %[[HQ:.+]] = memref.dim %[[Q]], %{{.+}} : memref<?x?x?x?xf16>
// CHECK-DAG:     %[[M:.+]] = memref.dim %[[Q]], %{{.+}} : memref<?x?x?x?xf16>
// CHECK-DAG:     %[[HKV:.+]] = memref.dim %[[K]], %{{.+}} : memref<?x?x?x?xf16>
// CHECK-DAG:     %[[DV:.+]] = memref.dim %[[V]], %{{.+}} : memref<?x?x?x?xf16>
// CHECK-DAG:     %[[G:.+]] = arith.divui %[[HQ]], %[[HKV]] : index
// CHECK-DAG:     %[[QT:.+]] = arith.ceildivui %[[M]], %{{.+}} : index
// CHECK:         scf.parallel (%{{.+}}, %[[HI:.+]], %{{.+}}) = ({{.*}}) to (%[[B]], %[[HQ]], %[[QT]])
// CHECK-NEXT:      memref.alloca_scope {
// CHECK-NEXT:        arith.divui %[[HI]], %[[G]] : index
// CHECK:             %[[ACC:.+]] = memref.alloca(%[[DV]]) : memref<64x?xf32>
// CHECK:             flexattn.kv_loop ins(%[[Q]], %[[K]], %[[V]] : {{[^)]*}}) state(%[[ACC]], {{[^:]*}} : memref<64x?xf32>, memref<64xf32>, memref<64xf32>)
// CHECK:             flexattn.finalize state(%[[ACC]], {{[^)]*}}) outs(%[[O]] : memref<?x?x?x?xf16>) at(
func.func @dynamic(%q: memref<?x?x?x?xf16>, %k: memref<?x?x?x?xf16>, %v: memref<?x?x?x?xf16>,
                   %o: memref<?x?x?x?xf16>) {
  flexattn.attention ins(%q, %k, %v : memref<?x?x?x?xf16>, memref<?x?x?x?xf16>, memref<?x?x?x?xf16>)
      outs(%o : memref<?x?x?x?xf16>) attributes {scale = 0.125 : f32}
  return
}

// -----

// A block mask fixes the KV tile to block_size[1] (whatever tile-kv says);
// the Q tile (64, or 32 with the options) divides block_size[0] = 128 and is
// kept. The mask, the full blocks, the captures and both mods move to the
// kv_loop unchanged.

// CHECK-LABEL: func.func @block_mask_mods(
// CHECK-SAME:    %[[KVN:[^:]+]]: memref<1x1x2xi32>, %[[KVI:[^:]+]]: memref<1x1x2x4xi32>, %[[FKVN:[^:]+]]: memref<1x1x2xi32>, %[[FKVI:[^:]+]]: memref<1x1x2x4xi32>, %[[BIAS:[^:]+]]: memref<256xf32>)
// CHECK:         %[[BM:.+]] = arith.constant 64 : index
// CHECK:         scf.parallel
// CHECK:           memref.alloca() : memref<64x16xf32>
// CHECK:           flexattn.kv_loop ins({{[^)]*}}) state({{[^)]*}}) at({{[^)]*}})
// CHECK-SAME:        block_mask(%[[KVN]], %[[KVI]] : memref<1x1x2xi32>, memref<1x1x2x4xi32>)
// CHECK-SAME:        full_blocks(%[[FKVN]], %[[FKVI]] : memref<1x1x2xi32>, memref<1x1x2x4xi32>)
// CHECK-SAME:        captures(%[[BIAS]] : memref<256xf32>)
// CHECK-SAME:        attributes {block_size = array<i64: 128, 64>, scale = 1.250000e-01 : f32, tile_size = array<i64: 64, 64>} score_mod {
// CHECK-NEXT:      ^bb0(%[[S:[^:]+]]: f32, %{{[^:]+}}: i32, %{{[^:]+}}: i32, %{{[^:]+}}: i32, %[[KI:[^:]+]]: i32, %[[BA:[^:]+]]: memref<256xf32>):
// CHECK-NEXT:        %[[KX:.+]] = arith.index_cast %[[KI]] : i32 to index
// CHECK-NEXT:        %[[X:.+]] = memref.load %[[BA]][%[[KX]]] : memref<256xf32>
// CHECK-NEXT:        %[[R:.+]] = arith.addf %[[S]], %[[X]] : f32
// CHECK-NEXT:        flexattn.yield %[[R]] : f32
// CHECK-NEXT:      } mask_mod {
// CHECK-NEXT:      ^bb0(%{{[^:]+}}: i32, %{{[^:]+}}: i32, %[[QI:[^:]+]]: i32, %[[KI2:[^:]+]]: i32, %{{[^:]+}}: memref<256xf32>):
// CHECK-NEXT:        %[[KEEP:.+]] = arith.cmpi sge, %[[QI]], %[[KI2]] : i32
// CHECK-NEXT:        flexattn.yield %[[KEEP]] : i1
// CHECK-NEXT:      }
// CHECK-NEXT:      flexattn.finalize

// OPT-LABEL: func.func @block_mask_mods(
// OPT:         memref.alloca() : memref<32x16xf32>
// OPT:         flexattn.kv_loop
// OPT-SAME:      attributes {block_size = array<i64: 128, 64>, scale = 1.250000e-01 : f32, tile_size = array<i64: 32, 64>}

// With block-tiles, a tile-kv that divides the KV block is kept (each block
// is then walked as block / tile-kv tiles by flexattn-block-sparsity); one
// that does not divide it gives the block.
// BLOCKS-LABEL: func.func @block_mask_mods(
// BLOCKS:         flexattn.kv_loop
// BLOCKS-SAME:      attributes {block_size = array<i64: 128, 64>, scale = 1.250000e-01 : f32, tile_size = array<i64: 64, 32>}
// NODIV-LABEL: func.func @block_mask_mods(
// NODIV:         flexattn.kv_loop
// NODIV-SAME:      attributes {block_size = array<i64: 128, 64>, scale = 1.250000e-01 : f32, tile_size = array<i64: 64, 64>}
func.func @block_mask_mods(%q: memref<1x4x256x64xf32>, %k: memref<1x4x256x64xf32>, %v: memref<1x4x256x16xf32>,
                           %o: memref<1x4x256x16xf32>,
                           %kvn: memref<1x1x2xi32>, %kvi: memref<1x1x2x4xi32>,
                           %fkvn: memref<1x1x2xi32>, %fkvi: memref<1x1x2x4xi32>,
                           %bias: memref<256xf32>) {
  flexattn.attention ins(%q, %k, %v : memref<1x4x256x64xf32>, memref<1x4x256x64xf32>, memref<1x4x256x16xf32>)
      outs(%o : memref<1x4x256x16xf32>)
      block_mask(%kvn, %kvi : memref<1x1x2xi32>, memref<1x1x2x4xi32>)
      full_blocks(%fkvn, %fkvi : memref<1x1x2xi32>, memref<1x1x2x4xi32>)
      captures(%bias : memref<256xf32>)
      attributes {scale = 0.125 : f32, block_size = array<i64: 128, 64>}
    score_mod {
    ^bb0(%s: f32, %b: i32, %h: i32, %qi: i32, %ki: i32, %bb: memref<256xf32>):
      %kx = arith.index_cast %ki : i32 to index
      %x = memref.load %bb[%kx] : memref<256xf32>
      %r = arith.addf %s, %x : f32
      flexattn.yield %r : f32
    } mask_mod {
    ^bb0(%b: i32, %h: i32, %qi: i32, %ki: i32, %bb: memref<256xf32>):
      %keep = arith.cmpi sge, %qi, %ki : i32
      flexattn.yield %keep : i1
    }
  return
}

// -----

// A Q tile that does not divide block_size[0] is shrunk to the Q block:
// BM = 64 (or 32) does not fit block_size [16, 32], so BM = 16, BN = 32.

// CHECK-LABEL: func.func @block_mask_shrinks_q_tile(
// CHECK:         %[[BM:.+]] = arith.constant 16 : index
// CHECK:         arith.ceildivui %{{.+}}, %[[BM]] : index
// CHECK:         memref.alloca() : memref<16x8xf32>
// CHECK:         flexattn.kv_loop
// CHECK-SAME:      tile_size = array<i64: 16, 32>

// OPT-LABEL: func.func @block_mask_shrinks_q_tile(
// OPT:         flexattn.kv_loop
// OPT-SAME:      tile_size = array<i64: 16, 32>
func.func @block_mask_shrinks_q_tile(%q: memref<1x1x64x8xbf16>, %k: memref<1x1x64x8xbf16>, %v: memref<1x1x64x8xbf16>,
                                     %o: memref<1x1x64x8xbf16>,
                                     %kvn: memref<1x1x4xi32>, %kvi: memref<1x1x4x2xi32>) {
  flexattn.attention ins(%q, %k, %v : memref<1x1x64x8xbf16>, memref<1x1x64x8xbf16>, memref<1x1x64x8xbf16>)
      outs(%o : memref<1x1x64x8xbf16>)
      block_mask(%kvn, %kvi : memref<1x1x4xi32>, memref<1x1x4x2xi32>)
      attributes {scale = 1.0 : f32, block_size = array<i64: 16, 32>}
  return
}

// -----

// K/V of batch 1 shared by 3 query batches: each is read through a view of
// batch stride 0 (no copy), which the tile ops index with the query's b.

// CHECK-LABEL: func.func @kv_batch_broadcast(
// CHECK-SAME:    %[[Q:[^:]+]]: memref<3x4x64x16xf32>, %[[K:[^:]+]]: memref<1x2x64x16xf32>, %[[V:[^:]+]]: memref<1x2x64x8xf32>
// CHECK:         %[[KB:.+]] = memref.reinterpret_cast %[[K]] to offset: [0], sizes: [3, 2, 64, 16], strides: [0, 1024, 16, 1] : memref<1x2x64x16xf32> to memref<3x2x64x16xf32, strided<[0, 1024, 16, 1]>>
// CHECK:         %[[VB:.+]] = memref.reinterpret_cast %[[V]] to offset: [0], sizes: [3, 2, 64, 8], strides: [0, 512, 8, 1] : memref<1x2x64x8xf32> to memref<3x2x64x8xf32, strided<[0, 512, 8, 1]>>
// CHECK:         scf.parallel (%[[B:.+]], %[[H:.+]], %{{.+}}) =
// CHECK:         flexattn.kv_loop ins(%[[Q]], %[[KB]], %[[VB]] : memref<3x4x64x16xf32>, memref<3x2x64x16xf32, strided<[0, 1024, 16, 1]>>, memref<3x2x64x8xf32, strided<[0, 512, 8, 1]>>)
// CHECK-SAME:      at(%[[B]], %[[H]],

// Dynamic shapes: the query's batch and the strides K/V have at run time.
// CHECK-LABEL: func.func @kv_batch_broadcast_dynamic(
// CHECK-SAME:    %[[Q:[^:]+]]: memref<?x4x?x16xf32>, %[[K:[^:]+]]: memref<1x2x?x16xf32>
// CHECK:         %[[B:.+]] = memref.dim %[[Q]], %{{.+}} : memref<?x4x?x16xf32>
// CHECK:         %{{.+}}, %{{.+}}, %{{.+}}:4, %[[S:.+]]:4 = memref.extract_strided_metadata %[[K]]
// CHECK:         %[[N:.+]] = memref.dim %[[K]], %{{.+}} : memref<1x2x?x16xf32>
// CHECK:         memref.reinterpret_cast %[[K]] to offset: [0], sizes: [%[[B]], 2, %[[N]], 16], strides: [0, %[[S]]#1, 16, 1] : memref<1x2x?x16xf32> to memref<?x2x?x16xf32, strided<[0, ?, 16, 1]>>
func.func @kv_batch_broadcast(%q: memref<3x4x64x16xf32>, %k: memref<1x2x64x16xf32>,
                              %v: memref<1x2x64x8xf32>, %o: memref<3x4x64x8xf32>) {
  flexattn.attention ins(%q, %k, %v : memref<3x4x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x8xf32>)
      outs(%o : memref<3x4x64x8xf32>) attributes {scale = 0.25 : f32}
  return
}
func.func @kv_batch_broadcast_dynamic(%q: memref<?x4x?x16xf32>, %k: memref<1x2x?x16xf32>,
                                      %v: memref<1x2x?x8xf32>, %o: memref<?x4x?x8xf32>) {
  flexattn.attention ins(%q, %k, %v : memref<?x4x?x16xf32>, memref<1x2x?x16xf32>, memref<1x2x?x8xf32>)
      outs(%o : memref<?x4x?x8xf32>) attributes {scale = 0.25 : f32}
  return
}
