// RUN: flexattn-opt %s -split-input-file -flexattn-differentiate-mods -verify-diagnostics | FileCheck %s

// The zoo's score_mods (index computations shortened; the last case reads
// through the frontend's flexattn.check_index) and their score_mod_vjp regions: the mod, then the
// reverse sweep, then yield (score', dy * d/dscore, per differentiated load:
// dy * d/dload and its indices).

// ALiBi with learnable slopes: s + slopes[h] * (kv - q).
// d/dscore = dy; d/dslopes[h] = dy * (kv - q); the index path (extsi, clamp)
// and sitofp carry no derivative.

// CHECK-LABEL: func.func @alibi(
// CHECK:         attributes {grad_captures = array<i64: 0>, scale = 1.000000e+00 : f32, vjp_loads = array<i64: 0>} score_mod {
// CHECK:         } score_mod_vjp {
// CHECK-NEXT:    ^bb0(%[[S:.+]]: f32, %{{.+}}: i32, %[[H:.+]]: i32, %[[Q:.+]]: i32, %[[KV:.+]]: i32, %[[SL:.+]]: memref<4xf32>, %[[DY:.+]]: f32):
// CHECK:           %[[HI:.+]] = arith.minsi %{{.+}}, %{{.+}} : index
// CHECK-NEXT:      %[[SLOPE:.+]] = memref.load %[[SL]][%[[HI]]] : memref<4xf32>
// CHECK-NEXT:      %[[D:.+]] = arith.subi %[[KV]], %[[Q]] : i32
// CHECK-NEXT:      %[[DF:.+]] = arith.sitofp %[[D]] : i32 to f32
// CHECK-NEXT:      %[[B:.+]] = arith.mulf %[[SLOPE]], %[[DF]] : f32
// CHECK-NEXT:      %[[R:.+]] = arith.addf %[[S]], %[[B]] : f32
// d/dslope = dy * (kv - q)
// CHECK-NEXT:      %[[DSL:.+]] = arith.mulf %[[DY]], %[[DF]] : f32
// CHECK-NEXT:      flexattn.yield %[[R]], %[[DY]], %[[DSL]], %[[HI]] : f32, f32, f32, index
func.func @alibi(%q: memref<1x4x64x16xf32>, %o: memref<1x4x64x16xf32>, %l: memref<1x4x64xf32>,
                 %c: memref<4xf32>, %g: memref<4xf32>) {
  flexattn.attention_backward ins(%q, %q, %q : memref<1x4x64x16xf32>, memref<1x4x64x16xf32>, memref<1x4x64x16xf32>)
      out(%o : memref<1x4x64x16xf32>) dout(%o : memref<1x4x64x16xf32>) lse(%l : memref<1x4x64xf32>)
      grads(%q, %q, %q : memref<1x4x64x16xf32>, memref<1x4x64x16xf32>, memref<1x4x64x16xf32>)
      captures(%c : memref<4xf32>) capture_grads(%g : memref<4xf32>)
      attributes {scale = 1.0 : f32, grad_captures = array<i64: 0>}
    score_mod {
    ^bb0(%score: f32, %b: i32, %h: i32, %q_idx: i32, %kv_idx: i32, %cap0: memref<4xf32>):
      %c3 = arith.constant 3 : index
      %c0 = arith.constant 0 : index
      %1 = arith.index_cast %h : i32 to index
      %2 = arith.maxsi %1, %c0 : index
      %3 = arith.minsi %2, %c3 : index
      %4 = memref.load %cap0[%3] : memref<4xf32>
      %5 = arith.subi %kv_idx, %q_idx : i32
      %6 = arith.sitofp %5 : i32 to f32
      %7 = arith.mulf %4, %6 : f32
      %8 = arith.addf %score, %7 : f32
      flexattn.yield %8 : f32
    }
  return
}

// -----

// Softcap: 30 tanh(s / 30). d/dscore = dy * 30 * (1 - tanh^2) / 30.

// CHECK-LABEL: func.func @softcap(
// CHECK:         attributes {scale = 1.000000e+00 : f32, vjp_loads = array<i64>} score_mod {
// CHECK:         } score_mod_vjp {
// CHECK-NEXT:    ^bb0(%[[S:.+]]: f32, %{{.+}}: i32, %{{.+}}: i32, %{{.+}}: i32, %{{.+}}: i32, %[[DY:.+]]: f32):
// CHECK-NEXT:      %[[C:.+]] = arith.constant 3.000000e+01 : f32
// CHECK-NEXT:      %[[X:.+]] = arith.divf %[[S]], %[[C]] : f32
// CHECK-NEXT:      %[[T:.+]] = math.tanh %[[X]] : f32
// CHECK-NEXT:      %[[R:.+]] = arith.mulf %[[T]], %[[C]] : f32
// adj[t] = dy * 30
// CHECK-NEXT:      %[[AT:.+]] = arith.mulf %[[DY]], %[[C]] : f32
// adj[x] = adj[t] * (1 - t^2)
// CHECK-NEXT:      %[[T2:.+]] = arith.mulf %[[T]], %[[T]] : f32
// CHECK-NEXT:      %[[ONE:.+]] = arith.constant 1.000000e+00 : f32
// CHECK-NEXT:      %[[D:.+]] = arith.subf %[[ONE]], %[[T2]] : f32
// CHECK-NEXT:      %[[AX:.+]] = arith.mulf %[[AT]], %[[D]] : f32
// adj[s] = adj[x] / 30
// CHECK-NEXT:      %[[AS:.+]] = arith.divf %[[AX]], %[[C]] : f32
// CHECK-NEXT:      flexattn.yield %[[R]], %[[AS]] : f32, f32
func.func @softcap(%q: memref<1x4x64x16xf32>, %o: memref<1x4x64x16xf32>, %l: memref<1x4x64xf32>) {
  flexattn.attention_backward ins(%q, %q, %q : memref<1x4x64x16xf32>, memref<1x4x64x16xf32>, memref<1x4x64x16xf32>)
      out(%o : memref<1x4x64x16xf32>) dout(%o : memref<1x4x64x16xf32>) lse(%l : memref<1x4x64xf32>)
      grads(%q, %q, %q : memref<1x4x64x16xf32>, memref<1x4x64x16xf32>, memref<1x4x64x16xf32>)
      attributes {scale = 1.0 : f32}
    score_mod {
    ^bb0(%score: f32, %b: i32, %h: i32, %q_idx: i32, %kv_idx: i32):
      %cst = arith.constant 3.000000e+01 : f32
      %1 = arith.divf %score, %cst : f32
      %2 = math.tanh %1 : f32
      %3 = arith.mulf %2, %cst : f32
      flexattn.yield %3 : f32
    }
  return
}

// -----

// T5 bucketed bias: s + table[h, bucket(kv - q)]. The bucket is computed
// with float math (log, divf) on an integer-derived value: inactive, no
// reverse ops for it; d/dtable[h, bucket] = dy, with both indices yielded.

// CHECK-LABEL: func.func @t5(
// CHECK:         score_mod_vjp {
// CHECK-NEXT:    ^bb0(%[[S:.+]]: f32, %{{.+}}: i32, %{{.+}}: i32, %{{.+}}: i32, %{{.+}}: i32, %{{.+}}: memref<4x32xf32>, %[[DY:.+]]: f32):
// CHECK:           math.log
// CHECK:           arith.fptosi
// CHECK:           %[[I:.+]] = arith.index_cast %{{.+}} : i32 to index
// CHECK-NEXT:      %[[J:.+]] = arith.index_cast %{{.+}} : i32 to index
// CHECK-NEXT:      %[[W:.+]] = memref.load %{{.+}}[%[[I]], %[[J]]] : memref<4x32xf32>
// CHECK-NEXT:      %[[R:.+]] = arith.addf %[[S]], %[[W]] : f32
// CHECK-NEXT:      flexattn.yield %[[R]], %[[DY]], %[[DY]], %[[I]], %[[J]] : f32, f32, f32, index, index
func.func @t5(%q: memref<1x4x64x16xf32>, %o: memref<1x4x64x16xf32>, %l: memref<1x4x64xf32>,
              %c: memref<4x32xf32>, %g: memref<4x32xf32>) {
  flexattn.attention_backward ins(%q, %q, %q : memref<1x4x64x16xf32>, memref<1x4x64x16xf32>, memref<1x4x64x16xf32>)
      out(%o : memref<1x4x64x16xf32>) dout(%o : memref<1x4x64x16xf32>) lse(%l : memref<1x4x64xf32>)
      grads(%q, %q, %q : memref<1x4x64x16xf32>, memref<1x4x64x16xf32>, memref<1x4x64x16xf32>)
      captures(%c : memref<4x32xf32>) capture_grads(%g : memref<4x32xf32>)
      attributes {scale = 1.0 : f32, grad_captures = array<i64: 0>}
    score_mod {
    ^bb0(%score: f32, %b: i32, %h: i32, %q_idx: i32, %kv_idx: i32, %cap0: memref<4x32xf32>):
      %c15_i32 = arith.constant 15 : i32
      %c8_i32 = arith.constant 8 : i32
      %cst = arith.constant 8.000000e+00 : f32
      %c16_i32 = arith.constant 16 : i32
      %cst_0 = arith.constant 2.7725887222397811 : f64
      %c0_i32 = arith.constant 0 : i32
      %1 = arith.subi %kv_idx, %q_idx : i32
      %3 = arith.cmpi sgt, %1, %c0_i32 : i32
      %4 = arith.extui %3 : i1 to i32
      %5 = arith.muli %4, %c16_i32 : i32
      %6 = math.absi %1 : i32
      %7 = arith.sitofp %6 : i32 to f32
      %8 = arith.divf %7, %cst : f32
      %9 = math.log %8 : f32
      %10 = arith.truncf %cst_0 : f64 to f32
      %11 = arith.divf %9, %10 : f32
      %12 = arith.mulf %11, %cst : f32
      %13 = arith.fptosi %12 : f32 to i32
      %14 = arith.addi %13, %c8_i32 : i32
      %15 = arith.minsi %14, %c15_i32 : i32
      %17 = arith.cmpi slt, %6, %c8_i32 : i32
      %18 = arith.select %17, %6, %15 : i32
      %19 = arith.addi %5, %18 : i32
      %20 = arith.index_cast %h : i32 to index
      %21 = arith.index_cast %19 : i32 to index
      %22 = memref.load %cap0[%20, %21] : memref<4x32xf32>
      %23 = arith.addf %score, %22 : f32
      flexattn.yield %23 : f32
    }
  return
}

// -----

// torch.where(q >= kv, s, 0.5 s): the select routes dy by its condition.

// CHECK-LABEL: func.func @where(
// CHECK:         score_mod_vjp {
// CHECK-NEXT:    ^bb0(%[[S:.+]]: f32, %{{.+}}: i32, %{{.+}}: i32, %{{.+}}: i32, %{{.+}}: i32, %[[DY:.+]]: f32):
// CHECK-NEXT:      %[[H:.+]] = arith.constant 5.000000e-01 : f32
// CHECK-NEXT:      %[[C:.+]] = arith.cmpi sge
// CHECK-NEXT:      %[[M:.+]] = arith.mulf %[[S]], %[[H]] : f32
// CHECK-NEXT:      %[[R:.+]] = arith.select %[[C]], %[[S]], %[[M]] : f32
// CHECK-NEXT:      %[[Z:.+]] = arith.constant 0.000000e+00 : f32
// CHECK-NEXT:      %[[A1:.+]] = arith.select %[[C]], %[[DY]], %[[Z]] : f32
// CHECK-NEXT:      %[[TRUE:.+]] = arith.constant true
// CHECK-NEXT:      %[[NC:.+]] = arith.xori %[[C]], %[[TRUE]] : i1
// CHECK-NEXT:      %[[Z2:.+]] = arith.constant 0.000000e+00 : f32
// CHECK-NEXT:      %[[A2:.+]] = arith.select %[[NC]], %[[DY]], %[[Z2]] : f32
// CHECK-NEXT:      %[[A3:.+]] = arith.mulf %[[A2]], %[[H]] : f32
// CHECK-NEXT:      %[[AS:.+]] = arith.addf %[[A1]], %[[A3]] : f32
// CHECK-NEXT:      flexattn.yield %[[R]], %[[AS]] : f32, f32
func.func @where(%q: memref<1x4x64x16xf32>, %o: memref<1x4x64x16xf32>, %l: memref<1x4x64xf32>) {
  flexattn.attention_backward ins(%q, %q, %q : memref<1x4x64x16xf32>, memref<1x4x64x16xf32>, memref<1x4x64x16xf32>)
      out(%o : memref<1x4x64x16xf32>) dout(%o : memref<1x4x64x16xf32>) lse(%l : memref<1x4x64xf32>)
      grads(%q, %q, %q : memref<1x4x64x16xf32>, memref<1x4x64x16xf32>, memref<1x4x64x16xf32>)
      attributes {scale = 1.0 : f32}
    score_mod {
    ^bb0(%score: f32, %b: i32, %h: i32, %q_idx: i32, %kv_idx: i32):
      %cst = arith.constant 5.000000e-01 : f32
      %1 = arith.cmpi sge, %q_idx, %kv_idx : i32
      %2 = arith.mulf %score, %cst : f32
      %3 = arith.select %1, %score, %2 : f32
      flexattn.yield %3 : f32
    }
  return
}

// -----

// clamp(s, -5, 5), as the frontend exports it (compare and select): dy
// reaches the score where it is inside [-5, 5].

// CHECK-LABEL: func.func @clamp(
// CHECK:         score_mod_vjp {
// CHECK-NEXT:    ^bb0(%[[S:.+]]: f32, %{{.+}}: i32, %{{.+}}: i32, %{{.+}}: i32, %{{.+}}: i32, %[[DY:.+]]: f32):
// CHECK:           %[[LOW:.+]] = arith.cmpf ult, %[[S]], %{{.+}} : f32
// CHECK-NEXT:      %[[X:.+]] = arith.select %[[LOW]], %{{.+}}, %[[S]] : f32
// CHECK-NEXT:      %[[HIGH:.+]] = arith.cmpf ugt, %[[X]], %{{.+}} : f32
// CHECK-NEXT:      %[[R:.+]] = arith.select %[[HIGH]], %{{.+}}, %[[X]] : f32
// adj[x] = high ? 0 : dy
// CHECK:           %[[NH:.+]] = arith.xori %[[HIGH]], %{{.+}} : i1
// CHECK:           %[[AX:.+]] = arith.select %[[NH]], %[[DY]], %{{.+}} : f32
// adj[s] = low ? 0 : adj[x]
// CHECK:           %[[NL:.+]] = arith.xori %[[LOW]], %{{.+}} : i1
// CHECK:           %[[AS:.+]] = arith.select %[[NL]], %[[AX]], %{{.+}} : f32
// CHECK-NEXT:      flexattn.yield %[[R]], %[[AS]] : f32, f32
func.func @clamp(%q: memref<1x4x64x16xf32>, %o: memref<1x4x64x16xf32>, %l: memref<1x4x64xf32>) {
  flexattn.attention_backward ins(%q, %q, %q : memref<1x4x64x16xf32>, memref<1x4x64x16xf32>, memref<1x4x64x16xf32>)
      out(%o : memref<1x4x64x16xf32>) dout(%o : memref<1x4x64x16xf32>) lse(%l : memref<1x4x64xf32>)
      grads(%q, %q, %q : memref<1x4x64x16xf32>, memref<1x4x64x16xf32>, memref<1x4x64x16xf32>)
      attributes {scale = 1.0 : f32}
    score_mod {
    ^bb0(%score: f32, %b: i32, %h: i32, %q_idx: i32, %kv_idx: i32):
      %cst = arith.constant 5.000000e+00 : f32
      %cst_0 = arith.constant -5.000000e+00 : f32
      %1 = arith.cmpf ult, %score, %cst_0 : f32
      %2 = arith.select %1, %cst_0, %score : f32
      %3 = arith.cmpf ugt, %2, %cst : f32
      %4 = arith.select %3, %cst, %2 : f32
      flexattn.yield %4 : f32
    }
  return
}

// -----

// min / max ops (maximumf(minimumf(s, 3), 0.1 s)): each routes dy to the
// operand it picked, the first on ties.

// CHECK-LABEL: func.func @min_max(
// CHECK:         score_mod_vjp {
// CHECK-NEXT:    ^bb0(%[[S:.+]]: f32, %{{.+}}: i32, %{{.+}}: i32, %{{.+}}: i32, %{{.+}}: i32, %[[DY:.+]]: f32):
// CHECK:           %[[MN:.+]] = arith.minimumf %[[S]], %[[C3:.+]] : f32
// CHECK-NEXT:      %[[SC:.+]] = arith.mulf %[[S]], %[[TENTH:.+]] : f32
// CHECK-NEXT:      %[[R:.+]] = arith.maximumf %[[MN]], %[[SC]] : f32
// CHECK-NEXT:      %[[PICK1:.+]] = arith.cmpf oge, %[[MN]], %[[SC]] : f32
// CHECK:           %[[AMN:.+]] = arith.select %[[PICK1]], %[[DY]], %{{.+}} : f32
// CHECK:           %[[ASC:.+]] = arith.select %{{.+}}, %[[DY]], %{{.+}} : f32
// CHECK-NEXT:      %[[A1:.+]] = arith.mulf %[[ASC]], %[[TENTH]] : f32
// CHECK-NEXT:      %[[PICK2:.+]] = arith.cmpf ole, %[[S]], %[[C3]] : f32
// CHECK:           %[[A2:.+]] = arith.select %[[PICK2]], %[[AMN]], %{{.+}} : f32
// CHECK-NEXT:      %[[AS:.+]] = arith.addf %[[A1]], %[[A2]] : f32
// CHECK-NEXT:      flexattn.yield %[[R]], %[[AS]] : f32, f32
func.func @min_max(%q: memref<1x4x64x16xf32>, %o: memref<1x4x64x16xf32>, %l: memref<1x4x64xf32>) {
  flexattn.attention_backward ins(%q, %q, %q : memref<1x4x64x16xf32>, memref<1x4x64x16xf32>, memref<1x4x64x16xf32>)
      out(%o : memref<1x4x64x16xf32>) dout(%o : memref<1x4x64x16xf32>) lse(%l : memref<1x4x64xf32>)
      grads(%q, %q, %q : memref<1x4x64x16xf32>, memref<1x4x64x16xf32>, memref<1x4x64x16xf32>)
      attributes {scale = 1.0 : f32}
    score_mod {
    ^bb0(%score: f32, %b: i32, %h: i32, %q_idx: i32, %kv_idx: i32):
      %c3 = arith.constant 3.0 : f32
      %tenth = arith.constant 0.1 : f32
      %1 = arith.minimumf %score, %c3 : f32
      %2 = arith.mulf %score, %tenth : f32
      %3 = arith.maximumf %1, %2 : f32
      flexattn.yield %3 : f32
    }
  return
}

// -----

// A per-head scale that takes no gradient (not in grad_captures): its load
// is a constant of the sweep, no load is differentiated.

// CHECK-LABEL: func.func @frozen_capture(
// CHECK:         attributes {scale = 1.000000e+00 : f32, vjp_loads = array<i64>} score_mod {
// CHECK:         score_mod_vjp {
// CHECK:           %[[W:.+]] = memref.load
// CHECK-NEXT:      %[[R:.+]] = arith.mulf %[[S:.+]], %[[W]] : f32
// CHECK-NEXT:      %[[AS:.+]] = arith.mulf %[[DY:.+]], %[[W]] : f32
// CHECK-NEXT:      flexattn.yield %[[R]], %[[AS]] : f32, f32
func.func @frozen_capture(%q: memref<1x4x64x16xf32>, %o: memref<1x4x64x16xf32>, %l: memref<1x4x64xf32>,
                          %c: memref<4xf32>) {
  flexattn.attention_backward ins(%q, %q, %q : memref<1x4x64x16xf32>, memref<1x4x64x16xf32>, memref<1x4x64x16xf32>)
      out(%o : memref<1x4x64x16xf32>) dout(%o : memref<1x4x64x16xf32>) lse(%l : memref<1x4x64xf32>)
      grads(%q, %q, %q : memref<1x4x64x16xf32>, memref<1x4x64x16xf32>, memref<1x4x64x16xf32>)
      captures(%c : memref<4xf32>) attributes {scale = 1.0 : f32}
    score_mod {
    ^bb0(%score: f32, %b: i32, %h: i32, %q_idx: i32, %kv_idx: i32, %cap0: memref<4xf32>):
      %1 = arith.index_cast %h : i32 to index
      %2 = memref.load %cap0[%1] : memref<4xf32>
      %3 = arith.mulf %score, %2 : f32
      flexattn.yield %3 : f32
    }
  return
}

// -----

// A bf16 table: the derivative of the load is carried in bf16 (extf's
// adjoint truncates) and yielded as f32.

// CHECK-LABEL: func.func @bf16_table(
// CHECK:         score_mod_vjp {
// CHECK:           %[[W:.+]] = memref.load %{{.+}} : memref<4xbf16>
// CHECK-NEXT:      %[[WF:.+]] = arith.extf %[[W]] : bf16 to f32
// CHECK-NEXT:      %[[R:.+]] = arith.addf %{{.+}}, %[[WF]] : f32
// CHECK-NEXT:      %[[T:.+]] = arith.truncf %[[DY:.+]] : f32 to bf16
// CHECK-NEXT:      %[[E:.+]] = arith.extf %[[T]] : bf16 to f32
// CHECK-NEXT:      flexattn.yield %[[R]], %[[DY]], %[[E]], %{{.+}} : f32, f32, f32, index
func.func @bf16_table(%q: memref<1x4x64x16xf32>, %o: memref<1x4x64x16xf32>, %l: memref<1x4x64xf32>,
                      %c: memref<4xbf16>, %g: memref<4xf32>) {
  flexattn.attention_backward ins(%q, %q, %q : memref<1x4x64x16xf32>, memref<1x4x64x16xf32>, memref<1x4x64x16xf32>)
      out(%o : memref<1x4x64x16xf32>) dout(%o : memref<1x4x64x16xf32>) lse(%l : memref<1x4x64xf32>)
      grads(%q, %q, %q : memref<1x4x64x16xf32>, memref<1x4x64x16xf32>, memref<1x4x64x16xf32>)
      captures(%c : memref<4xbf16>) capture_grads(%g : memref<4xf32>)
      attributes {scale = 1.0 : f32, grad_captures = array<i64: 0>}
    score_mod {
    ^bb0(%score: f32, %b: i32, %h: i32, %q_idx: i32, %kv_idx: i32, %cap0: memref<4xbf16>):
      %1 = arith.index_cast %h : i32 to index
      %2 = memref.load %cap0[%1] : memref<4xbf16>
      %3 = arith.extf %2 : bf16 to f32
      %4 = arith.addf %score, %3 : f32
      flexattn.yield %4 : f32
    }
  return
}

// -----

// Piecewise-constant ops contribute 0 (s + floor(s): d/dscore = dy).

// CHECK-LABEL: func.func @floor(
// CHECK:         score_mod_vjp {
// CHECK-NEXT:    ^bb0(%[[S:.+]]: f32, %{{.+}}: i32, %{{.+}}: i32, %{{.+}}: i32, %{{.+}}: i32, %[[DY:.+]]: f32):
// CHECK-NEXT:      %[[F:.+]] = math.floor %[[S]] : f32
// CHECK-NEXT:      %[[R:.+]] = arith.addf %[[S]], %[[F]] : f32
// CHECK-NEXT:      flexattn.yield %[[R]], %[[DY]] : f32, f32
func.func @floor(%q: memref<1x4x64x16xf32>, %o: memref<1x4x64x16xf32>, %l: memref<1x4x64xf32>) {
  flexattn.attention_backward ins(%q, %q, %q : memref<1x4x64x16xf32>, memref<1x4x64x16xf32>, memref<1x4x64x16xf32>)
      out(%o : memref<1x4x64x16xf32>) dout(%o : memref<1x4x64x16xf32>) lse(%l : memref<1x4x64xf32>)
      grads(%q, %q, %q : memref<1x4x64x16xf32>, memref<1x4x64x16xf32>, memref<1x4x64x16xf32>)
      attributes {scale = 1.0 : f32}
    score_mod {
    ^bb0(%score: f32, %b: i32, %h: i32, %q_idx: i32, %kv_idx: i32):
      %1 = math.floor %score : f32
      %2 = arith.addf %score, %1 : f32
      flexattn.yield %2 : f32
    }
  return
}

// -----

// An op without a derivative rule on the gradient path: an error naming it,
// and no region.

func.func @no_rule(%q: memref<1x4x64x16xf32>, %o: memref<1x4x64x16xf32>, %l: memref<1x4x64xf32>) {
  // expected-error @+1 {{'flexattn.attention_backward' op cannot differentiate score_mod: 'math.acos' has no derivative rule and lies on the gradient path from the score (or a captured buffer that takes a gradient) to the result}}
  flexattn.attention_backward ins(%q, %q, %q : memref<1x4x64x16xf32>, memref<1x4x64x16xf32>, memref<1x4x64x16xf32>)
      out(%o : memref<1x4x64x16xf32>) dout(%o : memref<1x4x64x16xf32>) lse(%l : memref<1x4x64xf32>)
      grads(%q, %q, %q : memref<1x4x64x16xf32>, memref<1x4x64x16xf32>, memref<1x4x64x16xf32>)
      attributes {scale = 1.0 : f32}
    score_mod {
    ^bb0(%score: f32, %b: i32, %h: i32, %q_idx: i32, %kv_idx: i32):
      // expected-note @+1 {{this op}}
      %1 = math.acos %score : f32
      flexattn.yield %1 : f32
    }
  return
}

// -----

// Control flow with a float result on the gradient path: an error.

func.func @control_flow(%q: memref<1x4x64x16xf32>, %o: memref<1x4x64x16xf32>, %l: memref<1x4x64xf32>) {
  // expected-error @+1 {{'flexattn.attention_backward' op cannot differentiate score_mod: 'scf.if' (control flow or several results) cannot be differentiated on the gradient path}}
  flexattn.attention_backward ins(%q, %q, %q : memref<1x4x64x16xf32>, memref<1x4x64x16xf32>, memref<1x4x64x16xf32>)
      out(%o : memref<1x4x64x16xf32>) dout(%o : memref<1x4x64x16xf32>) lse(%l : memref<1x4x64xf32>)
      grads(%q, %q, %q : memref<1x4x64x16xf32>, memref<1x4x64x16xf32>, memref<1x4x64x16xf32>)
      attributes {scale = 1.0 : f32}
    score_mod {
    ^bb0(%score: f32, %b: i32, %h: i32, %q_idx: i32, %kv_idx: i32):
      %c = arith.cmpi sge, %q_idx, %kv_idx : i32
      // expected-note @+1 {{this op}}
      %r = scf.if %c -> f32 {
        scf.yield %score : f32
      } else {
        %z = arith.constant 0.0 : f32
        scf.yield %z : f32
      }
      flexattn.yield %r : f32
    }
  return
}

// -----

// The same op off the gradient path (an integer-only use) is fine.

// CHECK-LABEL: func.func @off_path(
// CHECK:         score_mod_vjp {
// CHECK:           flexattn.yield %{{.+}}, %[[DY:[^,]+]] : f32, f32
func.func @off_path(%q: memref<1x4x64x16xf32>, %o: memref<1x4x64x16xf32>, %l: memref<1x4x64xf32>) {
  flexattn.attention_backward ins(%q, %q, %q : memref<1x4x64x16xf32>, memref<1x4x64x16xf32>, memref<1x4x64x16xf32>)
      out(%o : memref<1x4x64x16xf32>) dout(%o : memref<1x4x64x16xf32>) lse(%l : memref<1x4x64xf32>)
      grads(%q, %q, %q : memref<1x4x64x16xf32>, memref<1x4x64x16xf32>, memref<1x4x64x16xf32>)
      attributes {scale = 1.0 : f32}
    score_mod {
    ^bb0(%score: f32, %b: i32, %h: i32, %q_idx: i32, %kv_idx: i32):
      %x = arith.sitofp %q_idx : i32 to f32
      %a = math.acos %x : f32
      %r = arith.addf %score, %a : f32
      flexattn.yield %r : f32
    }
  return
}

// -----

// A learnable table read at a captured int table's entry (as the frontend
// captures it after index_checks: the bucket's index proved in bounds, the
// table's column checked at run time into the report, the mods' last
// capture). check_index is integer index code: cloned into the vjp (its
// report store runs in the backward too), never differentiated; only the
// table's load is differentiated, at the checked indices; the bucket (i64)
// and the report take no gradient.

// CHECK-LABEL: func.func @bucketed(
// CHECK:         attributes {grad_captures = array<i64: 0>, scale = 1.000000e+00 : f32, vjp_loads = array<i64: 0>} score_mod {
// CHECK:         } score_mod_vjp {
// CHECK-NEXT:    ^bb0(%[[S:.+]]: f32, %{{.+}}: i32, %[[H:.+]]: i32, %{{.+}}: i32, %[[KV:.+]]: i32, %[[T:.+]]: memref<2x8xf32>, %[[BK:.+]]: memref<48xi64>, %[[REP:.+]]: memref<1x2xi64>, %[[DY:.+]]: f32):
// CHECK:           %[[I:.+]] = flexattn.check_index %{{.+}} of size 48 {bounds = array<i64: 0, 47>} : i64
// CHECK-NEXT:      %[[BI:.+]] = memref.load %[[BK]][%[[I]]] : memref<48xi64>
// CHECK-NEXT:      %[[COL:.+]] = flexattn.check_index %[[BI]] of size 8 report(%[[REP]] : memref<1x2xi64>) {site = 0 : i64} : i64
// CHECK-NEXT:      %[[ROW:.+]] = flexattn.check_index %{{.+}} of size 2 {bounds = array<i64: 0, 1>} : i64
// CHECK-NEXT:      %[[W:.+]] = memref.load %[[T]][%[[ROW]], %[[COL]]] : memref<2x8xf32>
// CHECK-NEXT:      %[[R:.+]] = arith.addf %[[S]], %[[W]] : f32
// CHECK-NEXT:      flexattn.yield %[[R]], %[[DY]], %[[DY]], %[[ROW]], %[[COL]] : f32, f32, f32, index, index
func.func @bucketed(%q: memref<1x2x48x16xf32>, %o: memref<1x2x48x16xf32>, %l: memref<1x2x48xf32>,
                    %t: memref<2x8xf32>, %bk: memref<48xi64>, %rep: memref<1x2xi64>,
                    %g: memref<2x8xf32>) {
  flexattn.attention_backward ins(%q, %q, %q : memref<1x2x48x16xf32>, memref<1x2x48x16xf32>, memref<1x2x48x16xf32>)
      out(%o : memref<1x2x48x16xf32>) dout(%o : memref<1x2x48x16xf32>) lse(%l : memref<1x2x48xf32>)
      grads(%q, %q, %q : memref<1x2x48x16xf32>, memref<1x2x48x16xf32>, memref<1x2x48x16xf32>)
      captures(%t, %bk, %rep : memref<2x8xf32>, memref<48xi64>, memref<1x2xi64>)
      capture_grads(%g : memref<2x8xf32>)
      attributes {scale = 1.0 : f32, grad_captures = array<i64: 0>}
    score_mod {
    ^bb0(%score: f32, %b: i32, %h: i32, %q_idx: i32, %kv_idx: i32, %cap0: memref<2x8xf32>,
         %cap1: memref<48xi64>, %cap2: memref<1x2xi64>):
      %2 = arith.extsi %kv_idx : i32 to i64
      %3 = arith.extsi %h : i32 to i64
      %4 = flexattn.check_index %2 of size 48 {bounds = array<i64: 0, 47>} : i64
      %5 = memref.load %cap1[%4] : memref<48xi64>
      %6 = flexattn.check_index %5 of size 8 report(%cap2 : memref<1x2xi64>) {site = 0 : i64} : i64
      %7 = flexattn.check_index %3 of size 2 {bounds = array<i64: 0, 1>} : i64
      %8 = memref.load %cap0[%7, %6] : memref<2x8xf32>
      %9 = arith.addf %score, %8 : f32
      flexattn.yield %9 : f32
    }
  return
}
