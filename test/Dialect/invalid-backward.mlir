// RUN: flexattn-opt %s -split-input-file -verify-diagnostics

// One case per verifier error of the backward ops (dialect/FlexAttnOps.cpp,
// "Backward op verifiers"); the checks they share with the forward ops
// (q/k/v, out/lse, the kv-side block lists, the mod regions) are in
// invalid.mlir.

func.func @f(%q: memref<1x2x64x16xf32>, %o: memref<1x2x64x16xf32>, %l: memref<1x2x64xf32>, %d: memref<1x2x64x16xbf16>) {
  // expected-error @+1 {{'flexattn.attention_backward' op dout must have the type of out ('memref<1x2x64x16xf32>'), got 'memref<1x2x64x16xbf16>'}}
  flexattn.attention_backward ins(%q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>) out(%o : memref<1x2x64x16xf32>)
      dout(%d : memref<1x2x64x16xbf16>) lse(%l : memref<1x2x64xf32>) grads(%q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>)
      attributes {scale = 1.0 : f32}
  return
}

// -----

func.func @f(%q: memref<1x2x64x16xf32>, %o: memref<1x2x64x16xf32>, %l: memref<1x2x64xf32>, %d: memref<1x2x63xf32>) {
  // expected-error @+1 {{'flexattn.attention_backward' op dlse must have the type of lse ('memref<1x2x64xf32>'), got 'memref<1x2x63xf32>'}}
  flexattn.attention_backward ins(%q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>) out(%o : memref<1x2x64x16xf32>)
      dout(%o : memref<1x2x64x16xf32>) lse(%l : memref<1x2x64xf32>) dlse(%d : memref<1x2x63xf32>) grads(%q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>)
      attributes {scale = 1.0 : f32}
  return
}

// -----

// dq may be f32 beside a 16-bit q (the GPU's atomic dQ), of q's shape.
func.func @f(%q: memref<1x2x64x16xbf16>, %o: memref<1x2x64x16xbf16>, %l: memref<1x2x64xf32>, %d: memref<1x2x64x16xf16>) {
  // expected-error @+1 {{'flexattn.attention_backward' op dq must have the type of q ('memref<1x2x64x16xbf16>') or its shape in f32, got 'memref<1x2x64x16xf16>'}}
  flexattn.attention_backward ins(%q, %q, %q : memref<1x2x64x16xbf16>, memref<1x2x64x16xbf16>, memref<1x2x64x16xbf16>) out(%o : memref<1x2x64x16xbf16>)
      dout(%o : memref<1x2x64x16xbf16>) lse(%l : memref<1x2x64xf32>) grads(%d, %q, %q : memref<1x2x64x16xf16>, memref<1x2x64x16xbf16>, memref<1x2x64x16xbf16>)
      attributes {scale = 1.0 : f32}
  return
}

func.func @f(%q: memref<1x2x64x16xf32>, %o: memref<1x2x64x16xf32>, %l: memref<1x2x64xf32>, %d: memref<1x2x64x16xf16>) {
  // expected-error @+1 {{'flexattn.attention_backward' op dk must have the type of k ('memref<1x2x64x16xf32>'), got 'memref<1x2x64x16xf16>'}}
  flexattn.attention_backward ins(%q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>) out(%o : memref<1x2x64x16xf32>)
      dout(%o : memref<1x2x64x16xf32>) lse(%l : memref<1x2x64xf32>) grads(%q, %d, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf16>, memref<1x2x64x16xf32>)
      attributes {scale = 1.0 : f32}
  return
}

// -----

func.func @f(%q: memref<1x2x64x16xf32>, %o: memref<1x2x64x16xf32>, %l: memref<1x2x64xf32>) {
  // expected-error @+1 {{'flexattn.attention_backward' op block_size is given without a block_mask}}
  flexattn.attention_backward ins(%q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>) out(%o : memref<1x2x64x16xf32>)
      dout(%o : memref<1x2x64x16xf32>) lse(%l : memref<1x2x64xf32>) grads(%q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>)
      attributes {scale = 1.0 : f32, block_size = array<i64: 32, 32>}
  return
}

// -----

func.func @f(%q: memref<1x2x64x16xf32>, %o: memref<1x2x64x16xf32>, %l: memref<1x2x64xf32>, %n: memref<1x1x2xi32>, %i: memref<1x1x2x2xi32>) {
  // expected-error @+1 {{'flexattn.attention_backward' op a block mask needs both its kv-side and its q-side lists (block_mask with q_block_mask, full_blocks with full_q_blocks)}}
  flexattn.attention_backward ins(%q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>) out(%o : memref<1x2x64x16xf32>)
      dout(%o : memref<1x2x64x16xf32>) lse(%l : memref<1x2x64xf32>) grads(%q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>) block_mask(%n, %i : memref<1x1x2xi32>, memref<1x1x2x2xi32>)
      attributes {scale = 1.0 : f32, block_size = array<i64: 32, 32>}
  return
}

// -----

func.func @f(%q: memref<1x2x64x16xf32>, %o: memref<1x2x64x16xf32>, %l: memref<1x2x64xf32>, %n: memref<1x1x2xi32>, %i: memref<1x1x2x2xi32>, %i4: memref<1x1x2x4xi32>) {
  // expected-error @+1 {{'flexattn.attention_backward' op q_num_blocks and q_indices must have ceil(N / 16) = 4 KV blocks, got [1, 1, 2] and [1, 1, 2, 2]}}
  flexattn.attention_backward ins(%q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>) out(%o : memref<1x2x64x16xf32>)
      dout(%o : memref<1x2x64x16xf32>) lse(%l : memref<1x2x64xf32>) grads(%q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>) block_mask(%n, %i4 : memref<1x1x2xi32>, memref<1x1x2x4xi32>) q_block_mask(%n, %i : memref<1x1x2xi32>, memref<1x1x2x2xi32>)
      attributes {scale = 1.0 : f32, block_size = array<i64: 32, 16>}
  return
}

// -----

func.func @f(%q: memref<1x2x64x16xf32>, %o: memref<1x2x64x16xf32>, %l: memref<1x2x64xf32>, %n: memref<1x1x2xi32>, %i: memref<1x1x2x2xi32>, %i3: memref<1x1x2x3xi32>) {
  // expected-error @+1 {{'flexattn.attention_backward' op q_indices must have ceil(M / 32) = 2 Q block slots, got 3}}
  flexattn.attention_backward ins(%q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>) out(%o : memref<1x2x64x16xf32>)
      dout(%o : memref<1x2x64x16xf32>) lse(%l : memref<1x2x64xf32>) grads(%q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>) block_mask(%n, %i : memref<1x1x2xi32>, memref<1x1x2x2xi32>) q_block_mask(%n, %i3 : memref<1x1x2xi32>, memref<1x1x2x3xi32>)
      attributes {scale = 1.0 : f32, block_size = array<i64: 32, 32>}
  return
}

// -----

func.func @f(%q: memref<1x2x64x16xf32>, %o: memref<1x2x64x16xf32>, %l: memref<1x2x64xf32>, %c: memref<4xf32>) {
  // expected-error @+1 {{'flexattn.attention_backward' op grad_captures lists 1 captured buffers but 0 capture_grads are given}}
  flexattn.attention_backward ins(%q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>) out(%o : memref<1x2x64x16xf32>)
      dout(%o : memref<1x2x64x16xf32>) lse(%l : memref<1x2x64xf32>) grads(%q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>) captures(%c : memref<4xf32>)
      attributes {scale = 1.0 : f32, grad_captures = array<i64: 0>}
  return
}

// -----

func.func @f(%q: memref<1x2x64x16xf32>, %o: memref<1x2x64x16xf32>, %l: memref<1x2x64xf32>, %c: memref<4xf32>) {
  // expected-error @+1 {{'flexattn.attention_backward' op grad_captures must list increasing indices of captured buffers (fewer than 1), got [1]}}
  flexattn.attention_backward ins(%q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>) out(%o : memref<1x2x64x16xf32>)
      dout(%o : memref<1x2x64x16xf32>) lse(%l : memref<1x2x64xf32>) grads(%q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>) captures(%c : memref<4xf32>) capture_grads(%c : memref<4xf32>)
      attributes {scale = 1.0 : f32, grad_captures = array<i64: 1>}
  return
}

// -----

func.func @f(%q: memref<1x2x64x16xf32>, %o: memref<1x2x64x16xf32>, %l: memref<1x2x64xf32>, %c: memref<4xi32>, %g: memref<4xf32>) {
  // expected-error @+1 {{'flexattn.attention_backward' op captured buffer #0 ('memref<4xi32>') cannot have a gradient: its element type is not floating point}}
  flexattn.attention_backward ins(%q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>) out(%o : memref<1x2x64x16xf32>)
      dout(%o : memref<1x2x64x16xf32>) lse(%l : memref<1x2x64xf32>) grads(%q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>) captures(%c : memref<4xi32>) capture_grads(%g : memref<4xf32>)
      attributes {scale = 1.0 : f32, grad_captures = array<i64: 0>}
  return
}

// -----

func.func @f(%q: memref<1x2x64x16xf32>, %o: memref<1x2x64x16xf32>, %l: memref<1x2x64xf32>, %c: memref<4xbf16>) {
  // expected-error @+1 {{'flexattn.attention_backward' op capture_grads #0 must be an f32 memref of captured buffer #0's shape [4] (or that shape and a trailing dim of partial sums), got 'memref<4xbf16>'}}
  flexattn.attention_backward ins(%q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>) out(%o : memref<1x2x64x16xf32>)
      dout(%o : memref<1x2x64x16xf32>) lse(%l : memref<1x2x64xf32>) grads(%q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>) captures(%c : memref<4xbf16>) capture_grads(%c : memref<4xbf16>)
      attributes {scale = 1.0 : f32, grad_captures = array<i64: 0>}
  return
}

// -----

func.func @f(%q: memref<1x2x64x16xf32>, %o: memref<1x2x64x16xf32>, %l: memref<1x2x64xf32>, %c: memref<4xf32>, %g: memref<8x4xf32>) {
  // expected-error @+1 {{'flexattn.attention_backward' op capture_grads #0 must be an f32 memref of captured buffer #0's shape [4] (or that shape and a trailing dim of partial sums), got 'memref<8x4xf32>'}}
  flexattn.attention_backward ins(%q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>) out(%o : memref<1x2x64x16xf32>)
      dout(%o : memref<1x2x64x16xf32>) lse(%l : memref<1x2x64xf32>) grads(%q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>) captures(%c : memref<4xf32>) capture_grads(%g : memref<8x4xf32>)
      attributes {scale = 1.0 : f32, grad_captures = array<i64: 0>}
  return
}

// -----

func.func @f(%q: memref<1x2x64x16xf32>, %o: memref<1x2x64x16xf32>, %l: memref<1x2x64xf32>, %c: memref<4xf32>) {
  // expected-error @+1 {{'flexattn.attention_backward' op vjp_loads is given without a score_mod_vjp region}}
  flexattn.attention_backward ins(%q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>) out(%o : memref<1x2x64x16xf32>)
      dout(%o : memref<1x2x64x16xf32>) lse(%l : memref<1x2x64xf32>) grads(%q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>) captures(%c : memref<4xf32>) capture_grads(%c : memref<4xf32>)
      attributes {scale = 1.0 : f32, grad_captures = array<i64: 0>, vjp_loads = array<i64: 0>}
  return
}

// -----

func.func @f(%q: memref<1x2x64x16xf32>, %o: memref<1x2x64x16xf32>, %l: memref<1x2x64xf32>, %c: memref<4xf32>) {
  // expected-error @+1 {{'flexattn.attention_backward' op vjp_loads entry 0 is not in grad_captures []}}
  flexattn.attention_backward ins(%q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>) out(%o : memref<1x2x64x16xf32>)
      dout(%o : memref<1x2x64x16xf32>) lse(%l : memref<1x2x64xf32>) grads(%q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>) captures(%c : memref<4xf32>)
      attributes {scale = 1.0 : f32, vjp_loads = array<i64: 0>}
    score_mod_vjp {
    ^bb0(%s: f32, %b: i32, %h: i32, %x: i32, %y: i32, %cc: memref<4xf32>, %dy: f32):
      flexattn.yield %s, %s : f32, f32
    }
  return
}

// -----

func.func @f(%q: memref<1x2x64x16xf32>, %o: memref<1x2x64x16xf32>, %l: memref<1x2x64xf32>, %c: memref<4xf32>) {
  // expected-error @+1 {{'flexattn.attention_backward' op score_mod_vjp must yield (score, dscore), then per vjp_loads entry the derivative and the load's indices: ('f32', 'f32', 'f32', 'index'), got ('f32', 'f32')}}
  flexattn.attention_backward ins(%q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>) out(%o : memref<1x2x64x16xf32>)
      dout(%o : memref<1x2x64x16xf32>) lse(%l : memref<1x2x64xf32>) grads(%q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>) captures(%c : memref<4xf32>) capture_grads(%c : memref<4xf32>)
      attributes {scale = 1.0 : f32, grad_captures = array<i64: 0>, vjp_loads = array<i64: 0>}
    score_mod_vjp {
    ^bb0(%s: f32, %b: i32, %h: i32, %x: i32, %y: i32, %cc: memref<4xf32>, %dy: f32):
      flexattn.yield %s, %s : f32, f32
    }
  return
}

// -----

func.func @f(%q: memref<1x2x64x16xf32>, %o: memref<1x2x64x16xf32>, %l: memref<1x2x64xf32>) {
  // expected-error @+1 {{'flexattn.attention_backward' op score_mod_vjp must take 6 arguments (score, b, h, q_idx, kv_idx, then one per captured buffer (0), then dy), got 7}}
  flexattn.attention_backward ins(%q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>) out(%o : memref<1x2x64x16xf32>)
      dout(%o : memref<1x2x64x16xf32>) lse(%l : memref<1x2x64xf32>) grads(%q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>)
      attributes {scale = 1.0 : f32}
    score_mod_vjp {
    ^bb0(%s: f32, %b: i32, %h: i32, %x: i32, %y: i32, %e: f32, %dy: f32):
      flexattn.yield %s, %s : f32, f32
    }
  return
}

// -----

func.func @f(%q: memref<1x2x64x16xf32>, %o: memref<1x2x64x16xf32>, %l: memref<1x2x64xf32>) {
  // expected-error @+1 {{'flexattn.attention_backward' op score_mod_vjp dy argument must be f32, got 'f16'}}
  flexattn.attention_backward ins(%q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>) out(%o : memref<1x2x64x16xf32>)
      dout(%o : memref<1x2x64x16xf32>) lse(%l : memref<1x2x64xf32>) grads(%q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>)
      attributes {scale = 1.0 : f32}
    score_mod_vjp {
    ^bb0(%s: f32, %b: i32, %h: i32, %x: i32, %y: i32, %dy: f16):
      flexattn.yield %s, %s : f32, f32
    }
  return
}

// -----

func.func @f(%q: memref<1x2x64x16xf32>, %l: memref<1x2x64xf32>, %dk: memref<16x16xf32>, %i: index, %d: memref<1x2x32xf32>) {
  // expected-error @+1 {{'flexattn.backward_step' op delta shape must be [B, Hq, M] = [1, 2, 64], got [1, 2, 32]}}
  flexattn.backward_step ins(%q, %q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>)
      stats(%l, %d : memref<1x2x64xf32>, memref<1x2x32xf32>) dk(%dk : memref<16x16xf32>) at(%i, %i, %i, %i, %i)
      attributes {scale = 1.0 : f32, tile_size = array<i64: 32, 16>}
  return
}

// -----

func.func @f(%q: memref<1x2x64x16xf32>, %l: memref<1x2x64xf32>, %dk: memref<16x16xf32>, %i: index, %d: memref<1x2x64xf16>) {
  // expected-error @+1 {{'flexattn.backward_step' op lse element type must be f32, got 'f16'}}
  flexattn.backward_step ins(%q, %q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>)
      stats(%d, %l : memref<1x2x64xf16>, memref<1x2x64xf32>) dk(%dk : memref<16x16xf32>) at(%i, %i, %i, %i, %i)
      attributes {scale = 1.0 : f32, tile_size = array<i64: 32, 16>}
  return
}

// -----

func.func @f(%q: memref<1x2x64x16xf32>, %l: memref<1x2x64xf32>, %dk: memref<16x16xf32>, %i: index, %d: memref<1x2x64x8xf32>) {
  // expected-error @+1 {{'flexattn.backward_step' op dout shape must be [B, Hq, M, Dv] = [1, 2, 64, 16], got [1, 2, 64, 8]}}
  flexattn.backward_step ins(%q, %q, %q, %d : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x8xf32>)
      stats(%l, %l : memref<1x2x64xf32>, memref<1x2x64xf32>) dk(%dk : memref<16x16xf32>) at(%i, %i, %i, %i, %i)
      attributes {scale = 1.0 : f32, tile_size = array<i64: 32, 16>}
  return
}

// -----

func.func @f(%q: memref<1x2x64x16xf32>, %l: memref<1x2x64xf32>, %dk: memref<16x16xf32>, %i: index, %a: memref<32x16xf32>) {
  // expected-error @+1 {{'flexattn.backward_step' op dk accumulator must be [16, 16], got [32, 16]}}
  flexattn.backward_step ins(%q, %q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>)
      stats(%l, %l : memref<1x2x64xf32>, memref<1x2x64xf32>) dk(%a : memref<32x16xf32>) at(%i, %i, %i, %i, %i)
      attributes {scale = 1.0 : f32, tile_size = array<i64: 32, 16>}
  return
}

// -----

func.func @f(%q: memref<1x2x64x16xf32>, %l: memref<1x2x64xf32>, %dk: memref<16x16xf32>, %i: index, %a: memref<32x16xf32>, %n: memref<1x1x2xi32>, %x: memref<1x1x2x4xi32>) {
  // expected-error @+1 {{'flexattn.backward_kv_loop' op full blocks require the partial block lists}}
  flexattn.backward_kv_loop ins(%q, %q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>)
      stats(%l, %l : memref<1x2x64xf32>, memref<1x2x64xf32>) dq(%a : memref<32x16xf32>) at(%i, %i, %i, %i) full_blocks(%n, %x : memref<1x1x2xi32>, memref<1x1x2x4xi32>)
      attributes {scale = 1.0 : f32, tile_size = array<i64: 32, 16>}
  return
}

// -----

func.func @f(%q: memref<1x2x64x16xf32>, %l: memref<1x2x64xf32>, %dk: memref<16x16xf32>, %i: index, %a: memref<32x16xf32>) {
  // expected-error @+1 {{'flexattn.backward_kv_loop' op block_size is given without a block mask}}
  flexattn.backward_kv_loop ins(%q, %q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>)
      stats(%l, %l : memref<1x2x64xf32>, memref<1x2x64xf32>) dq(%a : memref<32x16xf32>) at(%i, %i, %i, %i)
      attributes {scale = 1.0 : f32, tile_size = array<i64: 32, 16>, block_size = array<i64: 32, 16>}
  return
}

// -----

func.func @f(%q: memref<1x2x64x16xf32>, %l: memref<1x2x64xf32>, %dk: memref<16x16xf32>, %i: index, %a: memref<32x16xf32>, %n: memref<1x1x2xi32>, %x: memref<1x1x2x4xi32>) {
  // expected-error @+1 {{'flexattn.backward_kv_loop' op a block mask requires block_size = [Q_BLOCK, KV_BLOCK] (two positive integers)}}
  flexattn.backward_kv_loop ins(%q, %q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>)
      stats(%l, %l : memref<1x2x64xf32>, memref<1x2x64xf32>) dq(%a : memref<32x16xf32>) at(%i, %i, %i, %i) block_mask(%n, %x : memref<1x1x2xi32>, memref<1x1x2x4xi32>)
      attributes {scale = 1.0 : f32, tile_size = array<i64: 32, 16>}
  return
}

// -----

func.func @f(%q: memref<1x2x64x16xf32>, %l: memref<1x2x64xf32>, %dk: memref<16x16xf32>, %i: index, %n: memref<1x1x4xi32>, %x: memref<1x1x4x2xi32>) {
  // expected-error @+1 {{'flexattn.backward_q_loop' op with a block mask, tile_size[1] must divide block_size[1] and tile_size[0] must equal block_size[0], got tile_size [16, 16] and block_size [32, 16]}}
  flexattn.backward_q_loop ins(%q, %q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>)
      stats(%l, %l : memref<1x2x64xf32>, memref<1x2x64xf32>) dk(%dk : memref<16x16xf32>) at(%i, %i, %i) q_block_mask(%n, %x : memref<1x1x4xi32>, memref<1x1x4x2xi32>)
      attributes {scale = 1.0 : f32, tile_size = array<i64: 16, 16>, block_size = array<i64: 32, 16>}
  return
}

// -----

func.func @f(%a: memref<16x8xf32>, %d: memref<1x2x64x16xf32>, %i: index) {
  // expected-error @+1 {{'flexattn.store_tile' op acc has 8 columns but dst rows have 16}}
  flexattn.store_tile %a : memref<16x8xf32> into %d : memref<1x2x64x16xf32> at(%i, %i, %i)
  return
}

// -----

func.func @f(%a: memref<16xf32>, %d: memref<1x2x64x16xf32>, %i: index) {
  // expected-error @+1 {{'flexattn.store_tile' op acc must be a 2-D memref [T, D], got rank 1}}
  flexattn.store_tile %a : memref<16xf32> into %d : memref<1x2x64x16xf32> at(%i, %i, %i)
  return
}

// -----

func.func @f(%s: f32, %i: index, %c: memref<4xf32>) {
  // expected-error @+1 {{'flexattn.apply_mods_vjp' op results must be (score, dscore), then per vjp_loads entry the derivative and the load's indices: ('f32', 'f32', 'f32', 'index'), got ('f32', 'f32')}}
  %r:2 = flexattn.apply_mods_vjp %s, %s at(%i, %i, %i, %i) captures(%c : memref<4xf32>)
      attributes {vjp_loads = array<i64: 0>}
    score_mod_vjp {
    ^bb0(%x: f32, %b: index, %h: index, %q: index, %kv: index, %cap: memref<4xf32>, %g: f32):
      flexattn.yield %x, %g, %g, %h : f32, f32, f32, index
    } : f32, f32
  return
}

// -----

func.func @f(%q: memref<1x2x64x16xf32>, %o: memref<1x2x64x16xf32>, %l: memref<1x2x64xf32>, %d: memref<1x2x64xf16>) {
  // expected-error @+1 {{'flexattn.attention_backward' op delta must have the type of lse ('memref<1x2x64xf32>'), got 'memref<1x2x64xf16>'}}
  flexattn.attention_backward ins(%q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>) out(%o : memref<1x2x64x16xf32>)
      dout(%o : memref<1x2x64x16xf32>) lse(%l : memref<1x2x64xf32>) delta(%d : memref<1x2x64xf16>) grads(%q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>)
      attributes {scale = 1.0 : f32}
  return
}

// -----

func.func @f(%q: memref<1x2x64x16xbf16>, %l: memref<1x2x64xf32>, %i: index, %a: memref<32x16xf32>, %s: memref<1x2x64x16xf32>) {
  // expected-error @+1 {{'flexattn.backward_step' op dq_sum goes with the dk/dv accumulators of a KV tile, not with a dq accumulator}}
  flexattn.backward_step ins(%q, %q, %q, %q : memref<1x2x64x16xbf16>, memref<1x2x64x16xbf16>, memref<1x2x64x16xbf16>, memref<1x2x64x16xbf16>)
      stats(%l, %l : memref<1x2x64xf32>, memref<1x2x64xf32>) dq(%a : memref<32x16xf32>) dq_sum(%s : memref<1x2x64x16xf32>) at(%i, %i, %i, %i, %i)
      attributes {scale = 1.0 : f32, tile_size = array<i64: 32, 32>}
  return
}

// -----

func.func @f(%q: memref<1x2x64x16xbf16>, %l: memref<1x2x64xf32>, %i: index, %a: memref<32x16xf32>, %s: memref<1x2x64x16xbf16>) {
  // expected-error @+1 {{'flexattn.backward_step' op dq_sum element type must be f32, got 'bf16'}}
  flexattn.backward_step ins(%q, %q, %q, %q : memref<1x2x64x16xbf16>, memref<1x2x64x16xbf16>, memref<1x2x64x16xbf16>, memref<1x2x64x16xbf16>)
      stats(%l, %l : memref<1x2x64xf32>, memref<1x2x64xf32>) dk(%a : memref<32x16xf32>) dq_sum(%s : memref<1x2x64x16xbf16>) at(%i, %i, %i, %i, %i)
      attributes {scale = 1.0 : f32, tile_size = array<i64: 32, 32>}
  return
}

// -----

func.func @f(%q: memref<1x2x64x16xbf16>, %l: memref<1x2x64xf32>, %i: index, %a: memref<32x16xf32>, %s: memref<1x2x32x16xf32>) {
  // expected-error @+1 {{'flexattn.backward_step' op dq_sum must have q's shape [1, 2, 64, 16], got [1, 2, 32, 16]}}
  flexattn.backward_step ins(%q, %q, %q, %q : memref<1x2x64x16xbf16>, memref<1x2x64x16xbf16>, memref<1x2x64x16xbf16>, memref<1x2x64x16xbf16>)
      stats(%l, %l : memref<1x2x64xf32>, memref<1x2x64xf32>) dk(%a : memref<32x16xf32>) dq_sum(%s : memref<1x2x32x16xf32>) at(%i, %i, %i, %i, %i)
      attributes {scale = 1.0 : f32, tile_size = array<i64: 32, 32>}
  return
}
