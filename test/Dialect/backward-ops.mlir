// RUN: flexattn-opt %s | flexattn-opt | FileCheck %s
// RUN: flexattn-opt %s -mlir-print-op-generic | flexattn-opt | FileCheck %s

// Round trip of every backward op in every form its assembly allows.

//===----------------------------------------------------------------------===//
// flexattn.attention_backward
//===----------------------------------------------------------------------===//

// No mods, no block mask, no lse gradient.
// CHECK-LABEL: func.func @backward_plain(
// CHECK:         flexattn.attention_backward ins(%{{[a-z0-9_]+}}, %{{[a-z0-9_]+}}, %{{[a-z0-9_]+}} : memref<1x4x100x16xf32>, memref<1x2x80x16xf32>, memref<1x2x80x8xf32>) out(%{{[a-z0-9_]+}} : memref<1x4x100x8xf32>) dout(%{{[a-z0-9_]+}} : memref<1x4x100x8xf32>) lse(%{{[a-z0-9_]+}} : memref<1x4x100xf32>) grads(%{{[a-z0-9_]+}}, %{{[a-z0-9_]+}}, %{{[a-z0-9_]+}} : memref<1x4x100x16xf32>, memref<1x2x80x16xf32>, memref<1x2x80x8xf32>) attributes {scale = 2.500000e-01 : f32}{{ *$}}
// CHECK-NEXT:    return
func.func @backward_plain(%q: memref<1x4x100x16xf32>, %k: memref<1x2x80x16xf32>, %v: memref<1x2x80x8xf32>,
                          %o: memref<1x4x100x8xf32>, %do: memref<1x4x100x8xf32>, %lse: memref<1x4x100xf32>,
                          %dq: memref<1x4x100x16xf32>, %dk: memref<1x2x80x16xf32>, %dv: memref<1x2x80x8xf32>) {
  flexattn.attention_backward ins(%q, %k, %v : memref<1x4x100x16xf32>, memref<1x2x80x16xf32>, memref<1x2x80x8xf32>)
      out(%o : memref<1x4x100x8xf32>) dout(%do : memref<1x4x100x8xf32>) lse(%lse : memref<1x4x100xf32>)
      grads(%dq, %dk, %dv : memref<1x4x100x16xf32>, memref<1x2x80x16xf32>, memref<1x2x80x8xf32>)
      attributes {scale = 0.25 : f32}
  return
}

// An f32 dq beside bf16 q (the caller converts it: the GPU's atomic dQ).
// CHECK-LABEL: func.func @backward_f32_dq(
// CHECK:         grads(%{{[a-z0-9_]+}}, %{{[a-z0-9_]+}}, %{{[a-z0-9_]+}} : memref<1x2x64x16xf32>, memref<1x2x64x16xbf16>, memref<1x2x64x16xbf16>)
func.func @backward_f32_dq(%q: memref<1x2x64x16xbf16>, %o: memref<1x2x64x16xbf16>, %lse: memref<1x2x64xf32>,
                           %dq: memref<1x2x64x16xf32>) {
  flexattn.attention_backward ins(%q, %q, %q : memref<1x2x64x16xbf16>, memref<1x2x64x16xbf16>, memref<1x2x64x16xbf16>)
      out(%o : memref<1x2x64x16xbf16>) dout(%o : memref<1x2x64x16xbf16>) lse(%lse : memref<1x2x64xf32>)
      grads(%dq, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xbf16>, memref<1x2x64x16xbf16>)
      attributes {scale = 0.25 : f32}
  return
}

// The sinks' gradient.
// CHECK-LABEL: func.func @backward_sinks(
// CHECK:         flexattn.attention_backward ins({{[^)]*}}) out({{[^)]*}}) dout({{[^)]*}}) lse({{[^)]*}}) sinks(%{{[a-z0-9_]+}}, %{{[a-z0-9_]+}} : memref<4xf32>, memref<4xf32>) grads({{[^)]*}}) attributes {scale = 2.500000e-01 : f32}{{ *$}}
func.func @backward_sinks(%q: memref<1x4x100x16xf32>, %k: memref<1x2x80x16xf32>, %v: memref<1x2x80x8xf32>,
                          %o: memref<1x4x100x8xf32>, %do: memref<1x4x100x8xf32>, %lse: memref<1x4x100xf32>,
                          %s: memref<4xf32>, %ds: memref<4xf32>,
                          %dq: memref<1x4x100x16xf32>, %dk: memref<1x2x80x16xf32>, %dv: memref<1x2x80x8xf32>) {
  flexattn.attention_backward ins(%q, %k, %v : memref<1x4x100x16xf32>, memref<1x2x80x16xf32>, memref<1x2x80x8xf32>)
      out(%o : memref<1x4x100x8xf32>) dout(%do : memref<1x4x100x8xf32>) lse(%lse : memref<1x4x100xf32>)
      sinks(%s, %ds : memref<4xf32>, memref<4xf32>)
      grads(%dq, %dk, %dv : memref<1x4x100x16xf32>, memref<1x2x80x16xf32>, memref<1x2x80x8xf32>)
      attributes {scale = 0.25 : f32}
  return
}

// Everything: dlse, both sides of a block mask with full blocks, a capture
// with a gradient, the three regions.
// CHECK-LABEL: func.func @backward_full(
// CHECK:         flexattn.attention_backward ins({{[^)]*}}) out({{[^)]*}}) dout({{[^)]*}}) lse({{[^)]*}}) dlse(%{{[a-z0-9_]+}} : memref<1x2x64xf32>) grads({{[^)]*}})
// CHECK-SAME:      block_mask(%{{[a-z0-9_]+}}, %{{[a-z0-9_]+}} : memref<1x1x2xi32>, memref<1x1x2x2xi32>) full_blocks(%{{[a-z0-9_]+}}, %{{[a-z0-9_]+}} : memref<1x1x2xi32>, memref<1x1x2x2xi32>)
// CHECK-SAME:      q_block_mask(%{{[a-z0-9_]+}}, %{{[a-z0-9_]+}} : memref<1x1x2xi32>, memref<1x1x2x2xi32>) full_q_blocks(%{{[a-z0-9_]+}}, %{{[a-z0-9_]+}} : memref<1x1x2xi32>, memref<1x1x2x2xi32>)
// CHECK-SAME:      captures(%{{[a-z0-9_]+}} : memref<2xbf16>) capture_grads(%{{[a-z0-9_]+}} : memref<2xf32>)
// CHECK-SAME:      attributes {block_size = array<i64: 32, 32>, grad_captures = array<i64: 0>, scale = 1.250000e-01 : f32, vjp_loads = array<i64: 0>} score_mod {
// CHECK:         } mask_mod {
// CHECK:         } score_mod_vjp {
// CHECK-NEXT:    ^bb0(%{{[a-z0-9_]+}}: f32, %{{[a-z0-9_]+}}: i32, %{{[a-z0-9_]+}}: i32, %{{[a-z0-9_]+}}: i32, %{{[a-z0-9_]+}}: i32, %{{[a-z0-9_]+}}: memref<2xbf16>, %{{[a-z0-9_]+}}: f32):
// CHECK:           flexattn.yield %{{[a-z0-9_]+}}, %{{[a-z0-9_]+}}, %{{[a-z0-9_]+}}, %{{[a-z0-9_]+}} : f32, f32, f32, index
func.func @backward_full(%q: memref<1x2x64x16xf32>, %o: memref<1x2x64x16xf32>, %lse: memref<1x2x64xf32>,
                         %num: memref<1x1x2xi32>, %idx: memref<1x1x2x2xi32>, %w: memref<2xbf16>, %dw: memref<2xf32>) {
  flexattn.attention_backward ins(%q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>)
      out(%o : memref<1x2x64x16xf32>) dout(%o : memref<1x2x64x16xf32>) lse(%lse : memref<1x2x64xf32>)
      dlse(%lse : memref<1x2x64xf32>)
      grads(%q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>)
      block_mask(%num, %idx : memref<1x1x2xi32>, memref<1x1x2x2xi32>)
      full_blocks(%num, %idx : memref<1x1x2xi32>, memref<1x1x2x2xi32>)
      q_block_mask(%num, %idx : memref<1x1x2xi32>, memref<1x1x2x2xi32>)
      full_q_blocks(%num, %idx : memref<1x1x2xi32>, memref<1x1x2x2xi32>)
      captures(%w : memref<2xbf16>) capture_grads(%dw : memref<2xf32>)
      attributes {scale = 0.125 : f32, block_size = array<i64: 32, 32>, grad_captures = array<i64: 0>,
                  vjp_loads = array<i64: 0>}
    score_mod {
    ^bb0(%s: f32, %b: i32, %h: i32, %qi: i32, %kvi: i32, %c: memref<2xbf16>):
      %hi = arith.index_cast %h : i32 to index
      %x = memref.load %c[%hi] : memref<2xbf16>
      %xf = arith.extf %x : bf16 to f32
      %r = arith.mulf %s, %xf : f32
      flexattn.yield %r : f32
    } mask_mod {
    ^bb0(%b: i32, %h: i32, %qi: i32, %kvi: i32, %c: memref<2xbf16>):
      %keep = arith.cmpi sge, %qi, %kvi : i32
      flexattn.yield %keep : i1
    } score_mod_vjp {
    ^bb0(%s: f32, %b: i32, %h: i32, %qi: i32, %kvi: i32, %c: memref<2xbf16>, %dy: f32):
      %hi = arith.index_cast %h : i32 to index
      %x = memref.load %c[%hi] : memref<2xbf16>
      %xf = arith.extf %x : bf16 to f32
      %r = arith.mulf %s, %xf : f32
      %ds = arith.mulf %dy, %xf : f32
      %dx = arith.mulf %dy, %s : f32
      flexattn.yield %r, %ds, %dx, %hi : f32, f32, f32, index
    }
  return
}

//===----------------------------------------------------------------------===//
// The tiled ops
//===----------------------------------------------------------------------===//

// CHECK-LABEL: func.func @loops_and_step(
// CHECK:         flexattn.backward_q_loop ins(%{{[a-z0-9_]+}}, %{{[a-z0-9_]+}}, %{{[a-z0-9_]+}}, %{{[a-z0-9_]+}} : memref<1x4x100x16xf32>, memref<1x2x80x16xf32>, memref<1x2x80x8xf32>, memref<1x4x100x8xf32>) stats(%{{[a-z0-9_]+}}, %{{[a-z0-9_]+}} : memref<1x4x100xf32>, memref<1x4x100xf32>) dk(%{{[a-z0-9_]+}} : memref<16x16xf32>) dv(%{{[a-z0-9_]+}} : memref<16x8xf32>) at(%{{[a-z0-9_]+}}, %{{[a-z0-9_]+}}, %{{[a-z0-9_]+}}) attributes {scale = 2.500000e-01 : f32, tile_size = array<i64: 32, 16>}{{ *$}}
// CHECK:         flexattn.backward_q_loop {{.*}} at(%{{[a-z0-9_]+}}, %{{[a-z0-9_]+}}, %{{[a-z0-9_]+}}) q_block_mask(%{{[a-z0-9_]+}}, %{{[a-z0-9_]+}} : memref<1x1x3xi32>, memref<1x1x3x2xi32>) full_q_blocks({{[^)]*}}) attributes {block_size = array<i64: 64, 32>, scale = 2.500000e-01 : f32, tile_size = array<i64: 64, 16>} mask_mod {
// CHECK:         flexattn.backward_kv_loop {{.*}} dq(%{{[a-z0-9_]+}} : memref<32x16xf32>) at(%{{[a-z0-9_]+}}, %{{[a-z0-9_]+}}, %{{[a-z0-9_]+}}, %{{[a-z0-9_]+}}) block_mask(%{{[a-z0-9_]+}}, %{{[a-z0-9_]+}} : memref<1x1x2xi32>, memref<1x1x2x3xi32>) captures(%{{[a-z0-9_]+}} : memref<4xf32>) capture_grads(%{{[a-z0-9_]+}} : memref<4xf32>) attributes {block_size = array<i64: 64, 32>, grad_captures = array<i64: 0>, scale = 2.500000e-01 : f32, tile_size = array<i64: 32, 32>}{{ *$}}
// CHECK:         flexattn.backward_step {{.*}} dq(%{{[a-z0-9_]+}} : memref<32x16xf32>) dk(%{{[a-z0-9_]+}} : memref<16x16xf32>) dv(%{{[a-z0-9_]+}} : memref<16x8xf32>) at(%{{[a-z0-9_]+}}, %{{[a-z0-9_]+}}, %{{[a-z0-9_]+}}, %{{[a-z0-9_]+}}, %{{[a-z0-9_]+}}) attributes {masked, scale = 2.500000e-01 : f32, tile_size = array<i64: 32, 16>} score_mod_vjp {
// CHECK:         } mask_mod {
// CHECK:         flexattn.store_tile %{{[a-z0-9_]+}} : memref<16x16xf32> into %{{[a-z0-9_]+}} : memref<1x2x80x16xbf16> at(%{{[a-z0-9_]+}}, %{{[a-z0-9_]+}}, %{{[a-z0-9_]+}}){{ *$}}
func.func @loops_and_step(%q: memref<1x4x100x16xf32>, %k: memref<1x2x80x16xf32>, %v: memref<1x2x80x8xf32>,
                          %do: memref<1x4x100x8xf32>, %lse: memref<1x4x100xf32>, %delta: memref<1x4x100xf32>,
                          %dq: memref<32x16xf32>, %dk: memref<16x16xf32>, %dv: memref<16x8xf32>,
                          %qn: memref<1x1x3xi32>, %qi: memref<1x1x3x2xi32>, %kn: memref<1x1x2xi32>, %ki: memref<1x1x2x3xi32>,
                          %c: memref<4xf32>, %dc: memref<4xf32>, %dst: memref<1x2x80x16xbf16>, %i: index) {
  flexattn.backward_q_loop ins(%q, %k, %v, %do : memref<1x4x100x16xf32>, memref<1x2x80x16xf32>, memref<1x2x80x8xf32>, memref<1x4x100x8xf32>)
      stats(%lse, %delta : memref<1x4x100xf32>, memref<1x4x100xf32>)
      dk(%dk : memref<16x16xf32>) dv(%dv : memref<16x8xf32>) at(%i, %i, %i)
      attributes {scale = 0.25 : f32, tile_size = array<i64: 32, 16>}
  flexattn.backward_q_loop ins(%q, %k, %v, %do : memref<1x4x100x16xf32>, memref<1x2x80x16xf32>, memref<1x2x80x8xf32>, memref<1x4x100x8xf32>)
      stats(%lse, %delta : memref<1x4x100xf32>, memref<1x4x100xf32>)
      dk(%dk : memref<16x16xf32>) dv(%dv : memref<16x8xf32>) at(%i, %i, %i)
      q_block_mask(%qn, %qi : memref<1x1x3xi32>, memref<1x1x3x2xi32>)
      full_q_blocks(%qn, %qi : memref<1x1x3xi32>, memref<1x1x3x2xi32>)
      attributes {scale = 0.25 : f32, tile_size = array<i64: 64, 16>, block_size = array<i64: 64, 32>}
    mask_mod {
    ^bb0(%b: i32, %h: i32, %x: i32, %y: i32):
      %keep = arith.cmpi sge, %x, %y : i32
      flexattn.yield %keep : i1
    }
  flexattn.backward_kv_loop ins(%q, %k, %v, %do : memref<1x4x100x16xf32>, memref<1x2x80x16xf32>, memref<1x2x80x8xf32>, memref<1x4x100x8xf32>)
      stats(%lse, %delta : memref<1x4x100xf32>, memref<1x4x100xf32>)
      dq(%dq : memref<32x16xf32>) at(%i, %i, %i, %i)
      block_mask(%kn, %ki : memref<1x1x2xi32>, memref<1x1x2x3xi32>)
      captures(%c : memref<4xf32>) capture_grads(%dc : memref<4xf32>)
      attributes {scale = 0.25 : f32, tile_size = array<i64: 32, 32>, block_size = array<i64: 64, 32>,
                  grad_captures = array<i64: 0>}
  flexattn.backward_step ins(%q, %k, %v, %do : memref<1x4x100x16xf32>, memref<1x2x80x16xf32>, memref<1x2x80x8xf32>, memref<1x4x100x8xf32>)
      stats(%lse, %delta : memref<1x4x100xf32>, memref<1x4x100xf32>)
      dq(%dq : memref<32x16xf32>) dk(%dk : memref<16x16xf32>) dv(%dv : memref<16x8xf32>) at(%i, %i, %i, %i, %i)
      attributes {masked, scale = 0.25 : f32, tile_size = array<i64: 32, 16>}
    score_mod_vjp {
    ^bb0(%s: f32, %b: i32, %h: i32, %x: i32, %y: i32, %dy: f32):
      %t = math.tanh %s : f32
      %one = arith.constant 1.0 : f32
      %tt = arith.mulf %t, %t : f32
      %d = arith.subf %one, %tt : f32
      %ds = arith.mulf %dy, %d : f32
      flexattn.yield %t, %ds : f32, f32
    } mask_mod {
    ^bb0(%b: i32, %h: i32, %x: i32, %y: i32):
      %keep = arith.cmpi sge, %x, %y : i32
      flexattn.yield %keep : i1
    }
  flexattn.store_tile %dk : memref<16x16xf32> into %dst : memref<1x2x80x16xbf16> at(%i, %i, %i)
  return
}

//===----------------------------------------------------------------------===//
// flexattn.apply_mods_vjp
//===----------------------------------------------------------------------===//

// CHECK-LABEL: func.func @apply_vjp(
// CHECK:         %{{[a-z0-9_]+}}, %{{[a-z0-9_]+}}, %{{[a-z0-9_]+}}:2 = flexattn.apply_mods_vjp %{{[a-z0-9_]+}}, %{{[a-z0-9_]+}} at(%{{[a-z0-9_]+}}, %{{[a-z0-9_]+}}, %{{[a-z0-9_]+}}, %{{[a-z0-9_]+}}) captures(%{{[a-z0-9_]+}} : memref<4xf32>) attributes {masked, vjp_loads = array<i64: 0>} score_mod_vjp {
// CHECK:         } mask_mod {
// CHECK:         } : f32, f32, f32, index
// CHECK:         %{{[a-z0-9_]+}}, %{{[a-z0-9_]+}} = flexattn.apply_mods_vjp %{{[a-z0-9_]+}}, %{{[a-z0-9_]+}} at(%{{[a-z0-9_]+}}, %{{[a-z0-9_]+}}, %{{[a-z0-9_]+}}, %{{[a-z0-9_]+}}) : f32, f32
func.func @apply_vjp(%s: f32, %dy: f32, %i: index, %c: memref<4xf32>) -> (f32, f32) {
  %r:4 = flexattn.apply_mods_vjp %s, %dy at(%i, %i, %i, %i) captures(%c : memref<4xf32>)
      attributes {masked, vjp_loads = array<i64: 0>}
    score_mod_vjp {
    ^bb0(%x: f32, %b: index, %h: index, %q: index, %kv: index, %cap: memref<4xf32>, %g: f32):
      %w = memref.load %cap[%h] : memref<4xf32>
      %y = arith.addf %x, %w : f32
      flexattn.yield %y, %g, %g, %h : f32, f32, f32, index
    } mask_mod {
    ^bb0(%b: index, %h: index, %q: index, %kv: index, %cap: memref<4xf32>):
      %keep = arith.cmpi uge, %q, %kv : index
      flexattn.yield %keep : i1
    } : f32, f32, f32, index
  %p:2 = flexattn.apply_mods_vjp %s, %dy at(%i, %i, %i, %i) : f32, f32
  return %r#0, %p#1 : f32, f32
}

// A precomputed delta (the GPU backward's form).
// CHECK-LABEL: func.func @precomputed_delta(
// CHECK:         flexattn.attention_backward {{.*}} lse(%{{[a-z0-9_]+}} : memref<1x2x64xf32>) delta(%{{[a-z0-9_]+}} : memref<1x2x64xf32>) grads(
func.func @precomputed_delta(%q: memref<1x2x64x16xf32>, %o: memref<1x2x64x16xf32>, %l: memref<1x2x64xf32>, %d: memref<1x2x64xf32>) {
  flexattn.attention_backward ins(%q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>) out(%o : memref<1x2x64x16xf32>)
      dout(%o : memref<1x2x64x16xf32>) lse(%l : memref<1x2x64xf32>) delta(%d : memref<1x2x64xf32>) grads(%q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>)
      attributes {scale = 1.0 : f32}
  return
}
