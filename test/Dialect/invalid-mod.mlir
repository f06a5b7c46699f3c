// RUN: flexattn-opt %s -split-input-file -verify-diagnostics

// The verifier errors of flexattn.mod (a mod on its own), one case each:
//   kind must be score_mod or mask_mod, got <kind>
//   region #0 ('body') ... region with 1 blocks (ODS: a mod has its block)
//   <kind> must take <n> leading arguments (...), got <n>
// and the region checks it shares with the attention ops (one case each
// kind, the rest are tested on flexattn.attention in invalid.mlir).

// expected-error @+1 {{'flexattn.mod' op kind must be score_mod or mask_mod, got bias_mod}}
flexattn.mod bias_mod {
^bb0(%score: f32, %b: i32, %h: i32, %q: i32, %kv: i32):
  flexattn.yield %score : f32
}

// -----

// expected-error @+1 {{'flexattn.mod' op region #0 ('body') failed to verify constraint: region with 1 blocks}}
flexattn.mod score_mod {
}

// -----

// expected-error @+1 {{'flexattn.mod' op score_mod must take 5 leading arguments (score, b, h, q_idx, kv_idx), got 4}}
flexattn.mod score_mod {
^bb0(%b: i32, %h: i32, %q: i32, %kv: i32):
  %s = arith.constant 0.0 : f32
  flexattn.yield %s : f32
}

// -----

// expected-error @+1 {{'flexattn.mod' op score_mod must yield one f32 value, got 1 value(s) of type(s) 'i1'}}
flexattn.mod score_mod {
^bb0(%score: f32, %b: i32, %h: i32, %q: i32, %kv: i32):
  %keep = arith.cmpi sge, %q, %kv : i32
  flexattn.yield %keep : i1
}

// -----

// expected-error @+1 {{'flexattn.mod' op mask_mod index arguments (b, h, q_idx, kv_idx) must share one type, got 'i32' and 'i64'}}
flexattn.mod mask_mod {
^bb0(%b: i32, %h: i32, %q: i32, %kv: i64):
  %t = arith.constant true
  flexattn.yield %t : i1
}
