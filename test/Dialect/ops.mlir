// RUN: flexattn-opt %s | flexattn-opt | FileCheck %s
// RUN: flexattn-opt %s -mlir-print-op-generic | flexattn-opt | FileCheck %s

// Round trip of every flexattn op in every form its assembly allows.

//===----------------------------------------------------------------------===//
// flexattn.attention
//===----------------------------------------------------------------------===//

// CHECK-LABEL: func.func @attention_plain(
// CHECK-SAME:    %[[Q:[^:]+]]: memref<2x8x128x64xf32>, %[[K:[^:]+]]: memref<2x8x128x64xf32>, %[[V:[^:]+]]: memref<2x8x128x64xf32>, %[[O:[^:]+]]: memref<2x8x128x64xf32>)
// CHECK:         flexattn.attention ins(%[[Q]], %[[K]], %[[V]] : memref<2x8x128x64xf32>, memref<2x8x128x64xf32>, memref<2x8x128x64xf32>) outs(%[[O]] : memref<2x8x128x64xf32>) attributes {scale = 1.250000e-01 : f32}{{ *$}}
// CHECK-NEXT:    return
func.func @attention_plain(%q: memref<2x8x128x64xf32>, %k: memref<2x8x128x64xf32>,
                           %v: memref<2x8x128x64xf32>, %o: memref<2x8x128x64xf32>) {
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x8x128x64xf32>, memref<2x8x128x64xf32>)
      outs(%o : memref<2x8x128x64xf32>) attributes {scale = 0.125 : f32}
  return
}

// K/V of batch 1 are shared by every query batch (broadcast).
// CHECK-LABEL: func.func @attention_kv_batch_broadcast(
// CHECK:         flexattn.attention ins(%{{.+}}, %{{.+}}, %{{.+}} : memref<3x4x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x8xf32>) outs(%{{.+}} : memref<3x4x64x8xf32>)
func.func @attention_kv_batch_broadcast(%q: memref<3x4x64x16xf32>, %k: memref<1x2x64x16xf32>,
                                        %v: memref<1x2x64x8xf32>, %o: memref<3x4x64x8xf32>) {
  flexattn.attention ins(%q, %k, %v : memref<3x4x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x8xf32>)
      outs(%o : memref<3x4x64x8xf32>) attributes {scale = 0.25 : f32}
  return
}

// CHECK-LABEL: func.func @attention_lse_f16(
// CHECK-SAME:    %[[Q:[^:]+]]: memref<1x4x100x32xf16>, %[[K:[^:]+]]: memref<1x4x60x32xf16>, %[[V:[^:]+]]: memref<1x4x60x16xf16>, %[[O:[^:]+]]: memref<1x4x100x16xf16>, %[[L:[^:]+]]: memref<1x4x100xf32>)
// CHECK:         flexattn.attention ins(%[[Q]], %[[K]], %[[V]] : memref<1x4x100x32xf16>, memref<1x4x60x32xf16>, memref<1x4x60x16xf16>) outs(%[[O]] : memref<1x4x100x16xf16>) lse(%[[L]] : memref<1x4x100xf32>) attributes {scale = 1.000000e+00 : f32}{{ *$}}
func.func @attention_lse_f16(%q: memref<1x4x100x32xf16>, %k: memref<1x4x60x32xf16>,
                             %v: memref<1x4x60x16xf16>, %o: memref<1x4x100x16xf16>,
                             %lse: memref<1x4x100xf32>) {
  flexattn.attention ins(%q, %k, %v : memref<1x4x100x32xf16>, memref<1x4x60x32xf16>, memref<1x4x60x16xf16>)
      outs(%o : memref<1x4x100x16xf16>) lse(%lse : memref<1x4x100xf32>) attributes {scale = 1.0 : f32}
  return
}

// Attention sinks and max_scores.
// CHECK-LABEL: func.func @attention_sinks_max_scores(
// CHECK-SAME:    %[[Q:[^:]+]]: memref<1x4x100x32xf16>, %[[K:[^:]+]]: memref<1x2x60x32xf16>, %[[V:[^:]+]]: memref<1x2x60x16xf16>, %[[S:[^:]+]]: memref<4xf32>, %[[O:[^:]+]]: memref<1x4x100x16xf16>, %[[MX:[^:]+]]: memref<1x4x100xf32>)
// CHECK:         flexattn.attention ins(%[[Q]], %[[K]], %[[V]] : memref<1x4x100x32xf16>, memref<1x2x60x32xf16>, memref<1x2x60x16xf16>) sinks(%[[S]] : memref<4xf32>) outs(%[[O]] : memref<1x4x100x16xf16>) max_scores(%[[MX]] : memref<1x4x100xf32>) attributes {scale = 1.000000e+00 : f32}{{ *$}}
func.func @attention_sinks_max_scores(%q: memref<1x4x100x32xf16>, %k: memref<1x2x60x32xf16>,
                                      %v: memref<1x2x60x16xf16>, %s: memref<4xf32>,
                                      %o: memref<1x4x100x16xf16>, %mx: memref<1x4x100xf32>) {
  flexattn.attention ins(%q, %k, %v : memref<1x4x100x32xf16>, memref<1x2x60x32xf16>, memref<1x2x60x16xf16>)
      sinks(%s : memref<4xf32>) outs(%o : memref<1x4x100x16xf16>) max_scores(%mx : memref<1x4x100xf32>)
      attributes {scale = 1.0 : f32}
  return
}

// Score_mod only, i32 indices.
// CHECK-LABEL: func.func @attention_score_mod_only(
// CHECK:         flexattn.attention ins({{.*}}) outs({{.*}}) attributes {scale = 1.250000e-01 : f32} score_mod {
// CHECK-NEXT:    ^bb0(%[[S:[^:]+]]: f32, %{{[^:]+}}: i32, %{{[^:]+}}: i32, %[[QI:[^:]+]]: i32, %[[KVI:[^:]+]]: i32):
// CHECK-NEXT:      %[[D:.+]] = arith.subi %[[QI]], %[[KVI]] : i32
// CHECK-NEXT:      %[[DF:.+]] = arith.sitofp %[[D]] : i32 to f32
// CHECK-NEXT:      %[[R:.+]] = arith.addf %[[S]], %[[DF]] : f32
// CHECK-NEXT:      flexattn.yield %[[R]] : f32
// CHECK-NEXT:    }{{ *$}}
// CHECK-NOT:     mask_mod
// CHECK:         return
func.func @attention_score_mod_only(%q: memref<1x2x64x16xf32>, %k: memref<1x2x64x16xf32>,
                                    %v: memref<1x2x64x16xf32>, %o: memref<1x2x64x16xf32>) {
  flexattn.attention ins(%q, %k, %v : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>)
      outs(%o : memref<1x2x64x16xf32>) attributes {scale = 0.125 : f32}
    score_mod {
    ^bb0(%s: f32, %b: i32, %h: i32, %qi: i32, %kvi: i32):
      %d = arith.subi %qi, %kvi : i32
      %df = arith.sitofp %d : i32 to f32
      %r = arith.addf %s, %df : f32
      flexattn.yield %r : f32
    }
  return
}

// Mask_mod only, index-typed indices.
// CHECK-LABEL: func.func @attention_mask_mod_only_index(
// CHECK:         flexattn.attention ins({{.*}}) outs({{.*}}) attributes {scale = 1.250000e-01 : f32} mask_mod {
// CHECK-NEXT:    ^bb0(%{{[^:]+}}: index, %{{[^:]+}}: index, %[[QI:[^:]+]]: index, %[[KVI:[^:]+]]: index):
// CHECK-NEXT:      %[[KEEP:.+]] = arith.cmpi sge, %[[QI]], %[[KVI]] : index
// CHECK-NEXT:      flexattn.yield %[[KEEP]] : i1
// CHECK-NEXT:    }
func.func @attention_mask_mod_only_index(%q: memref<1x2x64x16xf32>, %k: memref<1x2x64x16xf32>,
                                         %v: memref<1x2x64x16xf32>, %o: memref<1x2x64x16xf32>) {
  flexattn.attention ins(%q, %k, %v : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>)
      outs(%o : memref<1x2x64x16xf32>) attributes {scale = 0.125 : f32}
    mask_mod {
    ^bb0(%b: index, %h: index, %qi: index, %kvi: index):
      %keep = arith.cmpi sge, %qi, %kvi : index
      flexattn.yield %keep : i1
    }
  return
}

// Both mods, i64 indices, no captures.
// CHECK-LABEL: func.func @attention_both_mods_i64(
// CHECK:         flexattn.attention ins({{.*}}) outs({{.*}}) attributes {scale = 5.000000e-01 : f32} score_mod {
// CHECK-NEXT:    ^bb0(%[[S:[^:]+]]: f32, %{{[^:]+}}: i64, %{{[^:]+}}: i64, %{{[^:]+}}: i64, %{{[^:]+}}: i64):
// CHECK-NEXT:      flexattn.yield %[[S]] : f32
// CHECK-NEXT:    } mask_mod {
// CHECK-NEXT:    ^bb0(%{{[^:]+}}: i64, %{{[^:]+}}: i64, %[[QI:[^:]+]]: i64, %[[KVI:[^:]+]]: i64):
// CHECK-NEXT:      %[[KEEP:.+]] = arith.cmpi ne, %[[QI]], %[[KVI]] : i64
// CHECK-NEXT:      flexattn.yield %[[KEEP]] : i1
// CHECK-NEXT:    }
func.func @attention_both_mods_i64(%q: memref<1x2x64x16xf32>, %k: memref<1x2x64x16xf32>,
                                   %v: memref<1x2x64x16xf32>, %o: memref<1x2x64x16xf32>) {
  flexattn.attention ins(%q, %k, %v : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>)
      outs(%o : memref<1x2x64x16xf32>) attributes {scale = 0.5 : f32}
    score_mod {
    ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %kvi: i64):
      flexattn.yield %s : f32
    } mask_mod {
    ^bb0(%b: i64, %h: i64, %qi: i64, %kvi: i64):
      %keep = arith.cmpi ne, %qi, %kvi : i64
      flexattn.yield %keep : i1
    }
  return
}

// Block mask without full blocks; GQA (8 query heads over 2 key/value heads).
// CHECK-LABEL: func.func @attention_block_mask(
// CHECK-SAME:    %[[KVN:[^:]+]]: memref<2x8x2xi32>, %[[KVI:[^:]+]]: memref<2x8x2x4xi32>)
// CHECK:         flexattn.attention ins({{.*}} : memref<2x8x256x64xbf16>, memref<2x2x512x64xbf16>, memref<2x2x512x64xbf16>) outs({{.*}}) block_mask(%[[KVN]], %[[KVI]] : memref<2x8x2xi32>, memref<2x8x2x4xi32>) attributes {block_size = array<i64: 128, 128>, scale = 1.250000e-01 : f32}{{ *$}}
func.func @attention_block_mask(%q: memref<2x8x256x64xbf16>, %k: memref<2x2x512x64xbf16>,
                                %v: memref<2x2x512x64xbf16>, %o: memref<2x8x256x64xbf16>,
                                %kvn: memref<2x8x2xi32>, %kvi: memref<2x8x2x4xi32>) {
  flexattn.attention ins(%q, %k, %v : memref<2x8x256x64xbf16>, memref<2x2x512x64xbf16>, memref<2x2x512x64xbf16>)
      outs(%o : memref<2x8x256x64xbf16>)
      block_mask(%kvn, %kvi : memref<2x8x2xi32>, memref<2x8x2x4xi32>)
      attributes {scale = 0.125 : f32, block_size = array<i64: 128, 128>}
  return
}

// Everything at once: lse, a broadcast block mask, full blocks, two captures,
// both mods (the example of the op's description).
// CHECK-LABEL: func.func @attention_everything(
// CHECK-SAME:    %[[L:[^:]+]]: memref<2x8x256xf32>, %[[KVN:[^:]+]]: memref<1x1x2xi32>, %[[KVI:[^:]+]]: memref<1x1x2x2xi32>, %[[FKVN:[^:]+]]: memref<2x8x2xi32>, %[[FKVI:[^:]+]]: memref<2x8x2x2xi32>, %[[SL:[^:]+]]: memref<8xf32>, %[[DOC:[^:]+]]: memref<256xi32>)
// CHECK:         flexattn.attention ins({{.*}}) outs({{.*}}) lse(%[[L]] : memref<2x8x256xf32>)
// CHECK-SAME:      block_mask(%[[KVN]], %[[KVI]] : memref<1x1x2xi32>, memref<1x1x2x2xi32>)
// CHECK-SAME:      full_blocks(%[[FKVN]], %[[FKVI]] : memref<2x8x2xi32>, memref<2x8x2x2xi32>)
// CHECK-SAME:      captures(%[[SL]], %[[DOC]] : memref<8xf32>, memref<256xi32>)
// CHECK-SAME:      attributes {block_size = array<i64: 128, 128>, scale = 1.250000e-01 : f32} score_mod {
// CHECK-NEXT:    ^bb0(%[[S:[^:]+]]: f32, %{{[^:]+}}: i32, %[[H:[^:]+]]: i32, %[[QI:[^:]+]]: i32, %[[KI:[^:]+]]: i32, %[[SLA:[^:]+]]: memref<8xf32>, %{{[^:]+}}: memref<256xi32>):
// CHECK-NEXT:      %[[HI:.+]] = arith.index_cast %[[H]] : i32 to index
// CHECK-NEXT:      %[[SLOPE:.+]] = memref.load %[[SLA]][%[[HI]]] : memref<8xf32>
// CHECK:           flexattn.yield %{{.+}} : f32
// CHECK-NEXT:    } mask_mod {
// CHECK-NEXT:    ^bb0(%{{[^:]+}}: i32, %{{[^:]+}}: i32, %{{[^:]+}}: i32, %{{[^:]+}}: i32, %{{[^:]+}}: memref<8xf32>, %[[DOCA:[^:]+]]: memref<256xi32>):
// CHECK:           memref.load %[[DOCA]]
// CHECK:           %[[KEEP:.+]] = arith.andi
// CHECK-NEXT:      flexattn.yield %[[KEEP]] : i1
// CHECK-NEXT:    }
func.func @attention_everything(%q: memref<2x8x256x64xbf16>, %k: memref<2x2x256x64xbf16>,
                                %v: memref<2x2x256x32xbf16>, %o: memref<2x8x256x32xbf16>,
                                %lse: memref<2x8x256xf32>,
                                %kvn: memref<1x1x2xi32>, %kvi: memref<1x1x2x2xi32>,
                                %fkvn: memref<2x8x2xi32>, %fkvi: memref<2x8x2x2xi32>,
                                %slopes: memref<8xf32>, %doc: memref<256xi32>) {
  flexattn.attention ins(%q, %k, %v : memref<2x8x256x64xbf16>, memref<2x2x256x64xbf16>, memref<2x2x256x32xbf16>)
      outs(%o : memref<2x8x256x32xbf16>) lse(%lse : memref<2x8x256xf32>)
      block_mask(%kvn, %kvi : memref<1x1x2xi32>, memref<1x1x2x2xi32>)
      full_blocks(%fkvn, %fkvi : memref<2x8x2xi32>, memref<2x8x2x2xi32>)
      captures(%slopes, %doc : memref<8xf32>, memref<256xi32>)
      attributes {scale = 0.125 : f32, block_size = array<i64: 128, 128>}
    score_mod {
    ^bb0(%s: f32, %b: i32, %h: i32, %qi: i32, %ki: i32, %sl: memref<8xf32>, %d: memref<256xi32>):
      %hi = arith.index_cast %h : i32 to index
      %slope = memref.load %sl[%hi] : memref<8xf32>
      %diff = arith.subi %ki, %qi : i32
      %df = arith.sitofp %diff : i32 to f32
      %bias = arith.mulf %slope, %df : f32
      %r = arith.addf %s, %bias : f32
      flexattn.yield %r : f32
    } mask_mod {
    ^bb0(%b: i32, %h: i32, %qi: i32, %ki: i32, %sl: memref<8xf32>, %d: memref<256xi32>):
      %qx = arith.index_cast %qi : i32 to index
      %kx = arith.index_cast %ki : i32 to index
      %dq = memref.load %d[%qx] : memref<256xi32>
      %dk = memref.load %d[%kx] : memref<256xi32>
      %same = arith.cmpi eq, %dq, %dk : i32
      %causal = arith.cmpi sge, %qi, %ki : i32
      %keep = arith.andi %same, %causal : i1
      flexattn.yield %keep : i1
    }
  return
}

// Captures without mods using them are allowed (the regions are empty).
// CHECK-LABEL: func.func @attention_captures_no_mods(
// CHECK:         flexattn.attention ins({{.*}}) outs({{.*}}) captures(%{{.+}} : memref<4xf32>) attributes {scale = 1.250000e-01 : f32}{{ *$}}
func.func @attention_captures_no_mods(%q: memref<1x2x64x16xf32>, %k: memref<1x2x64x16xf32>,
                                      %v: memref<1x2x64x16xf32>, %o: memref<1x2x64x16xf32>,
                                      %c: memref<4xf32>) {
  flexattn.attention ins(%q, %k, %v : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>)
      outs(%o : memref<1x2x64x16xf32>) captures(%c : memref<4xf32>) attributes {scale = 0.125 : f32}
  return
}

// Dynamic shapes everywhere, including the block mask.
// CHECK-LABEL: func.func @attention_dynamic(
// CHECK:         flexattn.attention ins({{.*}} : memref<?x?x?x64xf16>, memref<?x?x?x64xf16>, memref<?x?x?x?xf16>) outs({{.*}} : memref<?x?x?x?xf16>) lse({{.*}} : memref<?x?x?xf32>) block_mask({{.*}} : memref<?x?x?xi32>, memref<?x?x?x?xi32>) captures({{.*}} : memref<?xf32>) attributes {block_size = array<i64: 64, 32>, scale = 1.250000e-01 : f32} score_mod {
// CHECK-NEXT:    ^bb0(%{{[^:]+}}: f32, %{{[^:]+}}: index, %{{[^:]+}}: index, %{{[^:]+}}: index, %{{[^:]+}}: index, %{{[^:]+}}: memref<?xf32>):
func.func @attention_dynamic(%q: memref<?x?x?x64xf16>, %k: memref<?x?x?x64xf16>,
                             %v: memref<?x?x?x?xf16>, %o: memref<?x?x?x?xf16>,
                             %lse: memref<?x?x?xf32>,
                             %kvn: memref<?x?x?xi32>, %kvi: memref<?x?x?x?xi32>,
                             %bias: memref<?xf32>) {
  flexattn.attention ins(%q, %k, %v : memref<?x?x?x64xf16>, memref<?x?x?x64xf16>, memref<?x?x?x?xf16>)
      outs(%o : memref<?x?x?x?xf16>) lse(%lse : memref<?x?x?xf32>)
      block_mask(%kvn, %kvi : memref<?x?x?xi32>, memref<?x?x?x?xi32>)
      captures(%bias : memref<?xf32>)
      attributes {scale = 0.125 : f32, block_size = array<i64: 64, 32>}
    score_mod {
    ^bb0(%s: f32, %b: index, %h: index, %qi: index, %ki: index, %bb: memref<?xf32>):
      %x = memref.load %bb[%ki] : memref<?xf32>
      %r = arith.addf %s, %x : f32
      flexattn.yield %r : f32
    }
  return
}

// The mod regions are isolated name scopes: their values may reuse the names
// of the enclosing function's values.
// CHECK-LABEL: func.func @attention_region_names_shadow(
// CHECK:         flexattn.attention {{.*}} captures(%{{.+}} : memref<64xf32>) attributes {scale = 1.250000e-01 : f32} score_mod {
// CHECK-NEXT:    ^bb0(%[[S:[^:]+]]: f32, %{{[^:]+}}: index, %{{[^:]+}}: index, %{{[^:]+}}: index, %[[KI:[^:]+]]: index, %[[C:[^:]+]]: memref<64xf32>):
// CHECK-NEXT:      %[[X:.+]] = memref.load %[[C]][%[[KI]]] : memref<64xf32>
// CHECK-NEXT:      %[[R:.+]] = arith.addf %[[S]], %[[X]] : f32
// CHECK-NEXT:      flexattn.yield %[[R]] : f32
// CHECK-NEXT:    } mask_mod {
func.func @attention_region_names_shadow(%q: memref<1x2x64x16xf32>, %k: memref<1x2x64x16xf32>,
                                         %v: memref<1x2x64x16xf32>, %o: memref<1x2x64x16xf32>,
                                         %c: memref<64xf32>) {
  flexattn.attention ins(%q, %k, %v : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>)
      outs(%o : memref<1x2x64x16xf32>) captures(%c : memref<64xf32>) attributes {scale = 0.125 : f32}
    score_mod {
    ^bb0(%q: f32, %k: index, %v: index, %o: index, %kv: index, %c: memref<64xf32>):
      %x = memref.load %c[%kv] : memref<64xf32>
      %r = arith.addf %q, %x : f32
      flexattn.yield %r : f32
    } mask_mod {
    ^bb0(%q: index, %k: index, %v: index, %o: index, %c: memref<64xf32>):
      %r = arith.cmpi uge, %v, %o : index
      flexattn.yield %r : i1
    }
  return
}

//===----------------------------------------------------------------------===//
// flexattn.kv_loop
//===----------------------------------------------------------------------===//

// CHECK-LABEL: func.func @kv_loop_dense(
// CHECK-SAME:    %[[ACC:[^:]+]]: memref<64x64xf32>, %[[M:[^:]+]]: memref<64xf32>, %[[L:[^:]+]]: memref<64xf32>, %[[B:[^:]+]]: index, %[[H:[^:]+]]: index, %[[HKV:[^:]+]]: index, %[[Q0:[^:]+]]: index)
// CHECK:         flexattn.kv_loop ins({{.*}} : memref<1x4x200x64xf32>, memref<1x2x200x64xf32>, memref<1x2x200x64xf32>) state(%[[ACC]], %[[M]], %[[L]] : memref<64x64xf32>, memref<64xf32>, memref<64xf32>) at(%[[B]], %[[H]], %[[HKV]], %[[Q0]]) attributes {scale = 1.250000e-01 : f32, tile_size = array<i64: 64, 64>}{{ *$}}
func.func @kv_loop_dense(%q: memref<1x4x200x64xf32>, %k: memref<1x2x200x64xf32>, %v: memref<1x2x200x64xf32>,
                         %acc: memref<64x64xf32>, %m: memref<64xf32>, %l: memref<64xf32>,
                         %b: index, %h: index, %hkv: index, %q0: index) {
  flexattn.kv_loop ins(%q, %k, %v : memref<1x4x200x64xf32>, memref<1x2x200x64xf32>, memref<1x2x200x64xf32>)
      state(%acc, %m, %l : memref<64x64xf32>, memref<64xf32>, memref<64xf32>)
      at(%b, %h, %hkv, %q0) attributes {scale = 0.125 : f32, tile_size = array<i64: 64, 64>}
  return
}

// The decode path's forms: packed rows and a split's range (round trip).
// CHECK-LABEL: func.func @kv_loop_packed_split(
// CHECK-SAME:    %[[B:[^:]+]]: index, %[[M:[^:]+]]: index, %[[S:[^:]+]]: index, %[[N:[^:]+]]: index)
// CHECK:         flexattn.kv_loop {{.*}} at(%[[B]], %[[B]], %[[B]], %[[B]]) packed(%[[M]]) split(%[[S]] of %[[N]]) attributes
// CHECK:         flexattn.tile_step {{.*}} at(%[[B]], %[[B]], %[[B]], %[[B]], %[[B]]) packed(%[[M]]) attributes
func.func @kv_loop_packed_split(%q: memref<1x2x8x64xf32>, %k: memref<1x2x200x64xf32>, %v: memref<1x2x200x64xf32>,
                                %acc: memref<8x64xf32>, %m: memref<8xf32>, %l: memref<8xf32>,
                                %b: index, %rows: index, %s: index, %n: index) {
  flexattn.kv_loop ins(%q, %k, %v : memref<1x2x8x64xf32>, memref<1x2x200x64xf32>, memref<1x2x200x64xf32>)
      state(%acc, %m, %l : memref<8x64xf32>, memref<8xf32>, memref<8xf32>)
      at(%b, %b, %b, %b) packed(%rows) split(%s of %n) attributes {scale = 0.125 : f32, tile_size = array<i64: 8, 64>}
  flexattn.tile_step ins(%q, %k, %v : memref<1x2x8x64xf32>, memref<1x2x200x64xf32>, memref<1x2x200x64xf32>)
      state(%acc, %m, %l : memref<8x64xf32>, memref<8xf32>, memref<8xf32>)
      at(%b, %b, %b, %b, %b) packed(%rows) attributes {scale = 0.125 : f32, tile_size = array<i64: 8, 64>}
  return
}

// CHECK-LABEL: func.func @kv_loop_block_mask_mods(
// CHECK-SAME:    %[[KVN:[^:]+]]: memref<1x1x2xi32>, %[[KVI:[^:]+]]: memref<1x1x2x2xi32>, %[[FKVN:[^:]+]]: memref<1x1x2xi32>, %[[FKVI:[^:]+]]: memref<1x1x2x2xi32>, %[[C:[^:]+]]: memref<4xf32>)
// CHECK:         flexattn.kv_loop ins({{.*}}) state({{.*}}) at({{.*}}) block_mask(%[[KVN]], %[[KVI]] : memref<1x1x2xi32>, memref<1x1x2x2xi32>) full_blocks(%[[FKVN]], %[[FKVI]] : memref<1x1x2xi32>, memref<1x1x2x2xi32>) captures(%[[C]] : memref<4xf32>) attributes {block_size = array<i64: 128, 64>, scale = 1.250000e-01 : f32, tile_size = array<i64: 32, 64>} score_mod {
// CHECK-NEXT:    ^bb0(%{{[^:]+}}: f32, %{{[^:]+}}: i32, %{{[^:]+}}: i32, %{{[^:]+}}: i32, %{{[^:]+}}: i32, %{{[^:]+}}: memref<4xf32>):
// CHECK:         } mask_mod {
// CHECK-NEXT:    ^bb0(%{{[^:]+}}: i32, %{{[^:]+}}: i32, %{{[^:]+}}: i32, %{{[^:]+}}: i32, %{{[^:]+}}: memref<4xf32>):
func.func @kv_loop_block_mask_mods(%q: memref<1x4x256x64xf32>, %k: memref<1x2x128x64xf32>, %v: memref<1x2x128x64xf32>,
                                   %acc: memref<32x64xf32>, %m: memref<32xf32>, %l: memref<32xf32>,
                                   %b: index, %h: index, %hkv: index, %q0: index,
                                   %kvn: memref<1x1x2xi32>, %kvi: memref<1x1x2x2xi32>,
                                   %fkvn: memref<1x1x2xi32>, %fkvi: memref<1x1x2x2xi32>,
                                   %c: memref<4xf32>) {
  flexattn.kv_loop ins(%q, %k, %v : memref<1x4x256x64xf32>, memref<1x2x128x64xf32>, memref<1x2x128x64xf32>)
      state(%acc, %m, %l : memref<32x64xf32>, memref<32xf32>, memref<32xf32>)
      at(%b, %h, %hkv, %q0)
      block_mask(%kvn, %kvi : memref<1x1x2xi32>, memref<1x1x2x2xi32>)
      full_blocks(%fkvn, %fkvi : memref<1x1x2xi32>, memref<1x1x2x2xi32>)
      captures(%c : memref<4xf32>)
      attributes {scale = 0.125 : f32, tile_size = array<i64: 32, 64>, block_size = array<i64: 128, 64>}
    score_mod {
    ^bb0(%s: f32, %bb: i32, %hh: i32, %qi: i32, %ki: i32, %cc: memref<4xf32>):
      flexattn.yield %s : f32
    } mask_mod {
    ^bb0(%bb: i32, %hh: i32, %qi: i32, %ki: i32, %cc: memref<4xf32>):
      %keep = arith.cmpi sge, %qi, %ki : i32
      flexattn.yield %keep : i1
    }
  return
}

// CHECK-LABEL: func.func @kv_loop_dynamic(
// CHECK:         flexattn.kv_loop ins({{.*}} : memref<?x?x?x?xbf16>, memref<?x?x?x?xbf16>, memref<?x?x?x?xbf16>) state({{.*}} : memref<16x?xf32>, memref<16xf32>, memref<16xf32>) at({{.*}}) attributes {scale = 1.000000e+00 : f32, tile_size = array<i64: 16, 8>}{{ *$}}
func.func @kv_loop_dynamic(%q: memref<?x?x?x?xbf16>, %k: memref<?x?x?x?xbf16>, %v: memref<?x?x?x?xbf16>,
                           %acc: memref<16x?xf32>, %m: memref<16xf32>, %l: memref<16xf32>,
                           %b: index, %h: index, %hkv: index, %q0: index) {
  flexattn.kv_loop ins(%q, %k, %v : memref<?x?x?x?xbf16>, memref<?x?x?x?xbf16>, memref<?x?x?x?xbf16>)
      state(%acc, %m, %l : memref<16x?xf32>, memref<16xf32>, memref<16xf32>)
      at(%b, %h, %hkv, %q0) attributes {scale = 1.0 : f32, tile_size = array<i64: 16, 8>}
  return
}

//===----------------------------------------------------------------------===//
// flexattn.tile_step
//===----------------------------------------------------------------------===//

// CHECK-LABEL: func.func @tile_step_unmasked(
// CHECK-SAME:    %[[B:[^:]+]]: index, %[[H:[^:]+]]: index, %[[HKV:[^:]+]]: index, %[[Q0:[^:]+]]: index, %[[KV0:[^:]+]]: index)
// CHECK:         flexattn.tile_step ins({{.*}}) state({{.*}} : memref<64x64xf32>, memref<64xf32>, memref<64xf32>) at(%[[B]], %[[H]], %[[HKV]], %[[Q0]], %[[KV0]]) attributes {scale = 1.250000e-01 : f32, tile_size = array<i64: 64, 32>}{{ *$}}
func.func @tile_step_unmasked(%q: memref<1x4x200x64xf32>, %k: memref<1x2x200x64xf32>, %v: memref<1x2x200x64xf32>,
                              %acc: memref<64x64xf32>, %m: memref<64xf32>, %l: memref<64xf32>,
                              %b: index, %h: index, %hkv: index, %q0: index, %kv0: index) {
  flexattn.tile_step ins(%q, %k, %v : memref<1x4x200x64xf32>, memref<1x2x200x64xf32>, memref<1x2x200x64xf32>)
      state(%acc, %m, %l : memref<64x64xf32>, memref<64xf32>, memref<64xf32>)
      at(%b, %h, %hkv, %q0, %kv0) attributes {scale = 0.125 : f32, tile_size = array<i64: 64, 32>}
  return
}

// CHECK-LABEL: func.func @tile_step_masked(
// CHECK:         flexattn.tile_step ins({{.*}}) state({{.*}}) at({{.*}}) captures(%{{.+}} : memref<200xi32>) attributes {masked, scale = 1.250000e-01 : f32, tile_size = array<i64: 64, 32>} score_mod {
// CHECK-NEXT:    ^bb0(%{{[^:]+}}: f32, %{{[^:]+}}: index, %{{[^:]+}}: index, %{{[^:]+}}: index, %{{[^:]+}}: index, %{{[^:]+}}: memref<200xi32>):
// CHECK:         } mask_mod {
// CHECK-NEXT:    ^bb0(%{{[^:]+}}: index, %{{[^:]+}}: index, %{{[^:]+}}: index, %{{[^:]+}}: index, %[[DOC:[^:]+]]: memref<200xi32>):
// CHECK:           memref.load %[[DOC]]
func.func @tile_step_masked(%q: memref<1x4x200x64xf32>, %k: memref<1x2x200x64xf32>, %v: memref<1x2x200x64xf32>,
                            %acc: memref<64x64xf32>, %m: memref<64xf32>, %l: memref<64xf32>,
                            %b: index, %h: index, %hkv: index, %q0: index, %kv0: index,
                            %doc: memref<200xi32>) {
  flexattn.tile_step ins(%q, %k, %v : memref<1x4x200x64xf32>, memref<1x2x200x64xf32>, memref<1x2x200x64xf32>)
      state(%acc, %m, %l : memref<64x64xf32>, memref<64xf32>, memref<64xf32>)
      at(%b, %h, %hkv, %q0, %kv0) captures(%doc : memref<200xi32>)
      attributes {masked, scale = 0.125 : f32, tile_size = array<i64: 64, 32>}
    score_mod {
    ^bb0(%s: f32, %bb: index, %hh: index, %qi: index, %ki: index, %d: memref<200xi32>):
      %t = math.tanh %s : f32
      flexattn.yield %t : f32
    } mask_mod {
    ^bb0(%bb: index, %hh: index, %qi: index, %ki: index, %d: memref<200xi32>):
      %dq = memref.load %d[%qi] : memref<200xi32>
      %dk = memref.load %d[%ki] : memref<200xi32>
      %same = arith.cmpi eq, %dq, %dk : i32
      flexattn.yield %same : i1
    }
  return
}

//===----------------------------------------------------------------------===//
// flexattn.finalize
//===----------------------------------------------------------------------===//

// CHECK-LABEL: func.func @finalize(
// CHECK-SAME:    %[[ACC:[^:]+]]: memref<64x32xf32>, %[[M:[^:]+]]: memref<64xf32>, %[[L:[^:]+]]: memref<64xf32>, %[[O:[^:]+]]: memref<1x4x200x32xbf16>, %[[B:[^:]+]]: index, %[[H:[^:]+]]: index, %[[Q0:[^:]+]]: index)
// CHECK:         flexattn.finalize state(%[[ACC]], %[[M]], %[[L]] : memref<64x32xf32>, memref<64xf32>, memref<64xf32>) outs(%[[O]] : memref<1x4x200x32xbf16>) at(%[[B]], %[[H]], %[[Q0]]){{ *$}}
func.func @finalize(%acc: memref<64x32xf32>, %m: memref<64xf32>, %l: memref<64xf32>,
                    %o: memref<1x4x200x32xbf16>, %b: index, %h: index, %q0: index) {
  flexattn.finalize state(%acc, %m, %l : memref<64x32xf32>, memref<64xf32>, memref<64xf32>)
      outs(%o : memref<1x4x200x32xbf16>) at(%b, %h, %q0)
  return
}

// CHECK-LABEL: func.func @finalize_lse_dynamic(
// CHECK:         flexattn.finalize state({{.*}} : memref<?x?xf32>, memref<?xf32>, memref<?xf32>) outs({{.*}} : memref<?x?x?x?xf32>) lse(%{{.+}} : memref<?x?x?xf32>) at({{.*}}){{ *$}}
func.func @finalize_lse_dynamic(%acc: memref<?x?xf32>, %m: memref<?xf32>, %l: memref<?xf32>,
                                %o: memref<?x?x?x?xf32>, %lse: memref<?x?x?xf32>,
                                %b: index, %h: index, %q0: index) {
  flexattn.finalize state(%acc, %m, %l : memref<?x?xf32>, memref<?xf32>, memref<?xf32>)
      outs(%o : memref<?x?x?x?xf32>) lse(%lse : memref<?x?x?xf32>) at(%b, %h, %q0)
  return
}

// CHECK-LABEL: func.func @finalize_sinks_max_scores(
// CHECK:         flexattn.finalize state({{.*}}) sinks(%{{.+}} : memref<4xf32>) outs({{.*}}) lse(%{{.+}} : memref<1x4x200xf32>) max_scores(%{{.+}} : memref<1x4x200xf32>) at({{.*}}){{ *$}}
func.func @finalize_sinks_max_scores(%acc: memref<64x32xf32>, %m: memref<64xf32>, %l: memref<64xf32>,
                                     %s: memref<4xf32>, %o: memref<1x4x200x32xbf16>,
                                     %lse: memref<1x4x200xf32>, %mx: memref<1x4x200xf32>,
                                     %b: index, %h: index, %q0: index) {
  flexattn.finalize state(%acc, %m, %l : memref<64x32xf32>, memref<64xf32>, memref<64xf32>)
      sinks(%s : memref<4xf32>) outs(%o : memref<1x4x200x32xbf16>) lse(%lse : memref<1x4x200xf32>)
      max_scores(%mx : memref<1x4x200xf32>) at(%b, %h, %q0)
  return
}

//===----------------------------------------------------------------------===//
// flexattn.apply_mods
//===----------------------------------------------------------------------===//

// CHECK-LABEL: func.func @apply_mods_identity(
// CHECK-SAME:    %[[S:[^:]+]]: f32, %[[B:[^:]+]]: index, %[[H:[^:]+]]: index, %[[QI:[^:]+]]: index, %[[KI:[^:]+]]: index)
// CHECK:         %[[R:.+]] = flexattn.apply_mods %[[S]] at(%[[B]], %[[H]], %[[QI]], %[[KI]]) : f32
// CHECK-NEXT:    return %[[R]]
func.func @apply_mods_identity(%s: f32, %b: index, %h: index, %qi: index, %ki: index) -> f32 {
  %r = flexattn.apply_mods %s at(%b, %h, %qi, %ki) : f32
  return %r : f32
}

// CHECK-LABEL: func.func @apply_mods_score_mod(
// CHECK:         %[[R:.+]] = flexattn.apply_mods %{{.+}} at({{.*}}) score_mod {
// CHECK-NEXT:    ^bb0(%[[SA:[^:]+]]: f32, %{{[^:]+}}: i32, %{{[^:]+}}: i32, %{{[^:]+}}: i32, %{{[^:]+}}: i32):
// CHECK-NEXT:      %[[T:.+]] = math.tanh %[[SA]] : f32
// CHECK-NEXT:      flexattn.yield %[[T]] : f32
// CHECK-NEXT:    } : f32
func.func @apply_mods_score_mod(%s: f32, %b: index, %h: index, %qi: index, %ki: index) -> f32 {
  %r = flexattn.apply_mods %s at(%b, %h, %qi, %ki) score_mod {
  ^bb0(%sa: f32, %bb: i32, %hh: i32, %qa: i32, %ka: i32):
    %t = math.tanh %sa : f32
    flexattn.yield %t : f32
  } : f32
  return %r : f32
}

// CHECK-LABEL: func.func @apply_mods_masked_captures(
// CHECK-SAME:    %[[C0:[^:]+]]: memref<8xf32>, %[[C1:[^:]+]]: memref<?xi32>)
// CHECK:         flexattn.apply_mods %{{.+}} at({{.*}}) captures(%[[C0]], %[[C1]] : memref<8xf32>, memref<?xi32>) attributes {masked} score_mod {
// CHECK-NEXT:    ^bb0(%{{[^:]+}}: f32, %{{[^:]+}}: i64, %{{[^:]+}}: i64, %{{[^:]+}}: i64, %{{[^:]+}}: i64, %{{[^:]+}}: memref<8xf32>, %{{[^:]+}}: memref<?xi32>):
// CHECK:         } mask_mod {
// CHECK-NEXT:    ^bb0(%{{[^:]+}}: i64, %{{[^:]+}}: i64, %{{[^:]+}}: i64, %{{[^:]+}}: i64, %{{[^:]+}}: memref<8xf32>, %{{[^:]+}}: memref<?xi32>):
// CHECK:         } : f32
func.func @apply_mods_masked_captures(%s: f32, %b: index, %h: index, %qi: index, %ki: index,
                                      %c0: memref<8xf32>, %c1: memref<?xi32>) -> f32 {
  %r = flexattn.apply_mods %s at(%b, %h, %qi, %ki) captures(%c0, %c1 : memref<8xf32>, memref<?xi32>)
      attributes {masked}
    score_mod {
    ^bb0(%sa: f32, %bb: i64, %hh: i64, %qa: i64, %ka: i64, %x: memref<8xf32>, %y: memref<?xi32>):
      flexattn.yield %sa : f32
    } mask_mod {
    ^bb0(%bb: i64, %hh: i64, %qa: i64, %ka: i64, %x: memref<8xf32>, %y: memref<?xi32>):
      %keep = arith.cmpi sle, %ka, %qa : i64
      flexattn.yield %keep : i1
    } : f32
  return %r : f32
}

//===----------------------------------------------------------------------===//
// flexattn.check_index
//===----------------------------------------------------------------------===//

// CHECK-LABEL: func.func @check_index_forms(
// CHECK:         flexattn.check_index %{{.+}} of size 4 : i64
// CHECK:         flexattn.check_index %{{.+}} of size 256 {bounds = array<i64: -3, 255>, dim = 1 : i64, source = "doc (shape (2, 256)) in mask_mod 'm'"} : i32
// CHECK:         flexattn.check_index %{{.+}} of size 8 report(%{{.+}} : memref<2x2xi64>) {site = 1 : i64} : i64
// In a mod region, reporting into a captured buffer.
// CHECK:         flexattn.apply_mods
// CHECK:           %[[I:.+]] = flexattn.check_index %{{.+}} of size 8 report(%{{.+}} : memref<1x2xi64>) {site = 0 : i64} : i32
// CHECK-NEXT:      memref.load %{{.+}}[%[[I]]] : memref<8xf32>
func.func @check_index_forms(%x: i64, %y: i32, %r: memref<2x2xi64>, %s: f32, %i: index,
                             %t: memref<8xf32>, %e: memref<1x2xi64>) -> f32 {
  %a = flexattn.check_index %x of size 4 : i64
  %b = flexattn.check_index %y of size 256 {bounds = array<i64: -3, 255>, dim = 1 : i64, source = "doc (shape (2, 256)) in mask_mod 'm'"} : i32
  %c = flexattn.check_index %x of size 8 report(%r : memref<2x2xi64>) {site = 1 : i64} : i64
  %v = flexattn.apply_mods %s at(%i, %i, %i, %i) captures(%t, %e : memref<8xf32>, memref<1x2xi64>) score_mod {
  ^bb0(%sa: f32, %bb: i32, %hh: i32, %qa: i32, %ka: i32, %tt: memref<8xf32>, %ee: memref<1x2xi64>):
    %k = flexattn.check_index %ka of size 8 report(%ee : memref<1x2xi64>) {site = 0 : i64} : i32
    %w = memref.load %tt[%k] : memref<8xf32>
    %z = arith.addf %sa, %w : f32
    flexattn.yield %z : f32
  } : f32
  return %v : f32
}

//===----------------------------------------------------------------------===//
// flexattn.mod
//===----------------------------------------------------------------------===//

// A mod on its own (the form the Python side stores and parses), one of each
// kind, with and without captured buffers.
// CHECK-LABEL: flexattn.mod score_mod {
// CHECK-NEXT:  ^bb0(%{{.+}}: f32, %{{.+}}: i32, %{{.+}}: i32, %{{.+}}: i32, %{{.+}}: i32, %{{.+}}: memref<8xf32>):
// CHECK:         memref.load
// CHECK:         flexattn.yield %{{.+}} : f32
// CHECK-NEXT:  }
flexattn.mod score_mod {
^bb0(%score: f32, %b: i32, %h: i32, %q_idx: i32, %kv_idx: i32, %slopes: memref<8xf32>):
  %i = arith.index_cast %h : i32 to index
  %slope = memref.load %slopes[%i] : memref<8xf32>
  %d = arith.subi %q_idx, %kv_idx : i32
  %df = arith.sitofp %d : i32 to f32
  %r = arith.mulf %slope, %df : f32
  %s = arith.subf %score, %r : f32
  flexattn.yield %s : f32
}

// CHECK-LABEL: flexattn.mod mask_mod attributes {note = "causal"} {
// CHECK-NEXT:  ^bb0(%{{.+}}: i32, %{{.+}}: i32, %{{.+}}: i32, %{{.+}}: i32):
// CHECK:         flexattn.yield %{{.+}} : i1
flexattn.mod mask_mod attributes {note = "causal"} {
^bb0(%b: i32, %h: i32, %q_idx: i32, %kv_idx: i32):
  %keep = arith.cmpi sge, %q_idx, %kv_idx : i32
  flexattn.yield %keep : i1
}
