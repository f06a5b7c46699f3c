// RUN: flexattn-opt %s -verify-diagnostics \
// RUN:   --pass-pipeline='builtin.module(flexattn-tile{tile-q=64 tile-kv=64}, flexattn-block-sparsity, flexattn-map-to-gpu)'

// The consumer warpgroups need 128-row Q tiles.
func.func @small_tiles(%q: memref<1x1x128x64xbf16>, %o: memref<1x1x128x64xbf16>) {
  // expected-error @+1 {{'flexattn.tile_step' op the GPU kernel needs tile_size [128, 64|128] (run flexattn-tile{tile-q=128 tile-kv=128}), got [64, 64]}}
  flexattn.attention ins(%q, %q, %q : memref<1x1x128x64xbf16>, memref<1x1x128x64xbf16>, memref<1x1x128x64xbf16>)
      outs(%o : memref<1x1x128x64xbf16>) attributes {scale = 0.125 : f32}
  return
}
