// RUN: flexattn-opt %s -split-input-file -verify-diagnostics

// The verifier errors of attention sinks and max_scores, one case each:
//
//   max_scores (verifyRowStat, attention):
//     max_scores must be a 3-D memref [B, Hq, M], got rank <r>
//     max_scores element type must be f32, got <t>
//     max_scores shape must be [B, Hq, M] = [...], got [...]
//   sinks (verifySinks: attention, finalize, frag.finalize, attention_backward):
//     sinks must be a 1-D f32 memref [Hq], got <type>
//     sinks must hold one logit per query head (<Hq>), got <n>
//   finalize / frag.finalize (verifyFinalizeBuffers):
//     max_scores must be a 3-D f32 memref [B, Hq, M], got <type>
//   attention_backward:
//     sinks and dsinks go together (dsinks receives the sinks' gradient)
//     dsinks must have the type of sinks (<type>), got <type>

func.func @max_scores_must_be_a_3_d(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                    %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>,
                                    %mx: memref<2x8x128x1xf32>) {
  // expected-error @+1 {{'flexattn.attention' op max_scores must be a 3-D memref [B, Hq, M], got rank 4}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>) max_scores(%mx : memref<2x8x128x1xf32>)
      attributes {scale = 1.0 : f32}
  return
}

// -----

func.func @max_scores_must_be_f32(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                  %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>,
                                  %mx: memref<2x8x128xbf16>) {
  // expected-error @+1 {{'flexattn.attention' op max_scores element type must be f32, got 'bf16'}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>) max_scores(%mx : memref<2x8x128xbf16>)
      attributes {scale = 1.0 : f32}
  return
}

// -----

func.func @max_scores_shape(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                            %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>,
                            %mx: memref<2x4x128xf32>) {
  // expected-error @+1 {{'flexattn.attention' op max_scores shape must be [B, Hq, M] = [2, 8, 128], got [2, 4, 128]}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>) max_scores(%mx : memref<2x4x128xf32>)
      attributes {scale = 1.0 : f32}
  return
}

// -----

func.func @sinks_must_be_1_d_f32(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                 %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>,
                                 %s: memref<8xbf16>) {
  // expected-error @+1 {{'flexattn.attention' op sinks must be a 1-D f32 memref [Hq], got 'memref<8xbf16>'}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) sinks(%s : memref<8xbf16>) outs(%o : memref<2x8x128x64xf32>)
      attributes {scale = 1.0 : f32}
  return
}

// -----

func.func @sinks_one_per_query_head(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                    %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>,
                                    %s: memref<2xf32>) {
  // expected-error @+1 {{'flexattn.attention' op sinks must hold one logit per query head (8), got 2}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) sinks(%s : memref<2xf32>) outs(%o : memref<2x8x128x64xf32>)
      attributes {scale = 1.0 : f32}
  return
}

// -----

func.func @finalize_max_scores_f32(%acc: memref<64x32xf32>, %m: memref<64xf32>, %l: memref<64xf32>,
                                   %o: memref<1x4x200x32xbf16>, %i: index, %mx: memref<1x4x200xf16>) {
  // expected-error @+1 {{'flexattn.finalize' op max_scores must be a 3-D f32 memref [B, Hq, M], got 'memref<1x4x200xf16>'}}
  flexattn.finalize state(%acc, %m, %l : memref<64x32xf32>, memref<64xf32>, memref<64xf32>)
      outs(%o : memref<1x4x200x32xbf16>) max_scores(%mx : memref<1x4x200xf16>) at(%i, %i, %i)
  return
}

// -----

func.func @finalize_sinks_per_head(%acc: memref<64x32xf32>, %m: memref<64xf32>, %l: memref<64xf32>,
                                   %o: memref<1x4x200x32xbf16>, %i: index, %s: memref<2xf32>) {
  // expected-error @+1 {{'flexattn.finalize' op sinks must hold one logit per query head (4), got 2}}
  flexattn.finalize state(%acc, %m, %l : memref<64x32xf32>, memref<64xf32>, memref<64xf32>)
      sinks(%s : memref<2xf32>) outs(%o : memref<1x4x200x32xbf16>) at(%i, %i, %i)
  return
}

// -----

func.func @frag_finalize_sinks(%acc: vector<64xf32>, %m: vector<2xf32>, %i: index,
                               %out: memref<1x2x8x128xbf16>, %s: memref<2x1xf32>) {
  // expected-error @+1 {{'flexattn.frag.finalize' op sinks must be a 1-D f32 memref [Hq], got 'memref<2x1xf32>'}}
  flexattn.frag.finalize %acc state(%m, %m) sinks(%s : memref<2x1xf32>) outs(%out : memref<1x2x8x128xbf16>) at(%i, %i, %i, %i) : vector<64xf32>, vector<2xf32>
  return
}

// -----

func.func @frag_finalize_max_scores(%acc: vector<64xf32>, %m: vector<2xf32>, %i: index,
                                    %out: memref<1x2x8x128xbf16>, %mx: memref<1x2x8x1xf32>) {
  // expected-error @+1 {{'flexattn.frag.finalize' op max_scores must be a 3-D f32 memref [B, Hq, M], got 'memref<1x2x8x1xf32>'}}
  flexattn.frag.finalize %acc state(%m, %m) outs(%out : memref<1x2x8x128xbf16>) max_scores(%mx : memref<1x2x8x1xf32>) at(%i, %i, %i, %i) : vector<64xf32>, vector<2xf32>
  return
}

// -----

func.func @dsinks_type(%q: memref<1x2x64x16xf32>, %o: memref<1x2x64x16xf32>, %lse: memref<1x2x64xf32>,
                       %s: memref<2xf32>, %ds: memref<2xf16>) {
  // expected-error @+1 {{'flexattn.attention_backward' op dsinks must have the type of sinks ('memref<2xf32>'), got 'memref<2xf16>'}}
  flexattn.attention_backward ins(%q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>)
      out(%o : memref<1x2x64x16xf32>) dout(%o : memref<1x2x64x16xf32>) lse(%lse : memref<1x2x64xf32>)
      sinks(%s, %ds : memref<2xf32>, memref<2xf16>)
      grads(%q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>)
      attributes {scale = 1.0 : f32}
  return
}

// -----

func.func @backward_sinks_per_head(%q: memref<1x2x64x16xf32>, %o: memref<1x2x64x16xf32>, %lse: memref<1x2x64xf32>,
                                   %s: memref<4xf32>) {
  // expected-error @+1 {{'flexattn.attention_backward' op sinks must hold one logit per query head (2), got 4}}
  flexattn.attention_backward ins(%q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>)
      out(%o : memref<1x2x64x16xf32>) dout(%o : memref<1x2x64x16xf32>) lse(%lse : memref<1x2x64xf32>)
      sinks(%s, %s : memref<4xf32>, memref<4xf32>)
      grads(%q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>)
      attributes {scale = 1.0 : f32}
  return
}

// -----

// Only the generic form can give sinks without dsinks (the custom form
// writes them as one group).
func.func @sinks_without_dsinks(%q: memref<1x2x64x16xf32>, %o: memref<1x2x64x16xf32>,
                                %lse: memref<1x2x64xf32>, %s: memref<2xf32>) {
  // expected-error @+1 {{'flexattn.attention_backward' op sinks and dsinks go together (dsinks receives the sinks' gradient)}}
  "flexattn.attention_backward"(%q, %q, %q, %o, %o, %lse, %s, %q, %q, %q) <{grad_captures = array<i64>, operandSegmentSizes = array<i32: 1, 1, 1, 1, 1, 1, 0, 0, 1, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0>, scale = 1.000000e+00 : f32}> ({
  }, {
  }, {
  }) : (memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64xf32>, memref<2xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>) -> ()
  return
}
