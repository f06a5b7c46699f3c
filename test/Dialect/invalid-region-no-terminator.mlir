// RUN: flexattn-opt %s -split-input-file -verify-diagnostics

// A score_mod / mask_mod block that does not end in a terminator is
// diagnosed (the ops are IsolatedFromAbove, so their verifier runs before
// MLIR's generic "block with no terminator" check and must not assume one).

func.func @score_mod_without_terminator(%s: f32, %i: index) -> f32 {
  // expected-error @+1 {{'flexattn.apply_mods' op score_mod must end with flexattn.yield}}
  %r = flexattn.apply_mods %s at(%i, %i, %i, %i) score_mod {
  ^bb0(%x: f32, %b: index, %h: index, %qi: index, %ki: index):
    %y = arith.addf %x, %x : f32
  } : f32
  return %r : f32
}

// -----

func.func @mask_mod_empty_block(%s: f32, %i: index) -> f32 {
  // expected-error @+1 {{'flexattn.apply_mods' op mask_mod must end with flexattn.yield}}
  %r = flexattn.apply_mods %s at(%i, %i, %i, %i) attributes {masked} mask_mod {
  ^bb0(%b: index, %h: index, %qi: index, %ki: index):
  } : f32
  return %r : f32
}
