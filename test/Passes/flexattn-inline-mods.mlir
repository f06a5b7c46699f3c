// RUN: flexattn-opt %s -split-input-file -flexattn-inline-mods | FileCheck %s

// Masked, i32 regions with a capture: the indices are cast from index to i32
// (for each region), the score_mod body is cloned with its arguments bound to
// the score, the casts and the captured buffer, then the mask_mod body and a
// select against -inf.

// CHECK-LABEL: func.func @masked_i32(
// CHECK-SAME:    %[[S:[^:]+]]: f32, %[[B:[^:]+]]: index, %[[H:[^:]+]]: index, %[[QI:[^:]+]]: index, %[[KI:[^:]+]]: index, %[[BIAS:[^:]+]]: memref<8xf32>)
// score_mod
// CHECK-NEXT:    %[[B32:.+]] = arith.index_cast %[[B]] : index to i32
// CHECK-NEXT:    %[[H32:.+]] = arith.index_cast %[[H]] : index to i32
// CHECK-NEXT:    %[[Q32:.+]] = arith.index_cast %[[QI]] : index to i32
// CHECK-NEXT:    %[[K32:.+]] = arith.index_cast %[[KI]] : index to i32
// CHECK-NEXT:    %[[HX:.+]] = arith.index_cast %[[H32]] : i32 to index
// CHECK-NEXT:    %[[SLOPE:.+]] = memref.load %[[BIAS]][%[[HX]]] : memref<8xf32>
// CHECK-NEXT:    %[[SCORE:.+]] = arith.addf %[[S]], %[[SLOPE]] : f32
// mask_mod
// CHECK-NEXT:    %{{.+}} = arith.index_cast %[[B]] : index to i32
// CHECK-NEXT:    %{{.+}} = arith.index_cast %[[H]] : index to i32
// CHECK-NEXT:    %[[MQ32:.+]] = arith.index_cast %[[QI]] : index to i32
// CHECK-NEXT:    %[[MK32:.+]] = arith.index_cast %[[KI]] : index to i32
// CHECK-NEXT:    %[[KEEP:.+]] = arith.cmpi sge, %[[MQ32]], %[[MK32]] : i32
// keep ? score : -inf
// CHECK-NEXT:    %[[NINF:.+]] = arith.constant 0xFF800000 : f32
// CHECK-NEXT:    %[[R:.+]] = arith.select %[[KEEP]], %[[SCORE]], %[[NINF]] : f32
// CHECK-NEXT:    return %[[R]] : f32
// CHECK-NOT:     flexattn.
func.func @masked_i32(%s: f32, %b: index, %h: index, %qi: index, %ki: index, %bias: memref<8xf32>) -> f32 {
  %r = flexattn.apply_mods %s at(%b, %h, %qi, %ki) captures(%bias : memref<8xf32>) attributes {masked}
    score_mod {
    ^bb0(%x: f32, %bb: i32, %hh: i32, %q: i32, %k: i32, %c: memref<8xf32>):
      %hx = arith.index_cast %hh : i32 to index
      %sl = memref.load %c[%hx] : memref<8xf32>
      %y = arith.addf %x, %sl : f32
      flexattn.yield %y : f32
    } mask_mod {
    ^bb0(%bb: i32, %hh: i32, %q: i32, %k: i32, %c: memref<8xf32>):
      %keep = arith.cmpi sge, %q, %k : i32
      flexattn.yield %keep : i1
    } : f32
  return %r : f32
}

// -----

// Not masked (a full block): the mask_mod region is not inlined and no select
// is made, even if the op carries one.

// CHECK-LABEL: func.func @unmasked(
// CHECK-SAME:    %[[S:[^:]+]]: f32, %{{[^:]+}}: index, %{{[^:]+}}: index, %[[QI:[^:]+]]: index, %[[KI:[^:]+]]: index)
// CHECK:         %[[Q64:.+]] = arith.index_cast %[[QI]] : index to i64
// CHECK-NEXT:    %[[K64:.+]] = arith.index_cast %[[KI]] : index to i64
// CHECK-NEXT:    %[[D:.+]] = arith.subi %[[Q64]], %[[K64]] : i64
// CHECK-NEXT:    %[[DF:.+]] = arith.sitofp %[[D]] : i64 to f32
// CHECK-NEXT:    %[[R:.+]] = arith.addf %[[S]], %[[DF]] : f32
// CHECK-NEXT:    return %[[R]] : f32
// CHECK-NOT:     arith.select
// CHECK-NOT:     arith.cmpi
func.func @unmasked(%s: f32, %b: index, %h: index, %qi: index, %ki: index) -> f32 {
  %r = flexattn.apply_mods %s at(%b, %h, %qi, %ki)
    score_mod {
    ^bb0(%x: f32, %bb: i64, %hh: i64, %q: i64, %k: i64):
      %d = arith.subi %q, %k : i64
      %df = arith.sitofp %d : i64 to f32
      %y = arith.addf %x, %df : f32
      flexattn.yield %y : f32
    } mask_mod {
    ^bb0(%bb: i64, %hh: i64, %q: i64, %k: i64):
      %keep = arith.cmpi sge, %q, %k : i64
      flexattn.yield %keep : i1
    } : f32
  return %r : f32
}

// -----

// index-typed regions need no cast: the bodies use the indices directly.

// CHECK-LABEL: func.func @masked_index(
// CHECK-SAME:    %[[S:[^:]+]]: f32, %{{[^:]+}}: index, %{{[^:]+}}: index, %[[QI:[^:]+]]: index, %[[KI:[^:]+]]: index)
// CHECK-NOT:     arith.index_cast
// CHECK:         %[[T:.+]] = math.tanh %[[S]] : f32
// CHECK-NEXT:    %[[KEEP:.+]] = arith.cmpi uge, %[[QI]], %[[KI]] : index
// CHECK-NEXT:    %[[NINF:.+]] = arith.constant 0xFF800000 : f32
// CHECK-NEXT:    %[[R:.+]] = arith.select %[[KEEP]], %[[T]], %[[NINF]] : f32
// CHECK-NEXT:    return %[[R]] : f32
func.func @masked_index(%s: f32, %b: index, %h: index, %qi: index, %ki: index) -> f32 {
  %r = flexattn.apply_mods %s at(%b, %h, %qi, %ki) attributes {masked}
    score_mod {
    ^bb0(%x: f32, %bb: index, %hh: index, %q: index, %k: index):
      %t = math.tanh %x : f32
      flexattn.yield %t : f32
    } mask_mod {
    ^bb0(%bb: index, %hh: index, %q: index, %k: index):
      %keep = arith.cmpi uge, %q, %k : index
      flexattn.yield %keep : i1
    } : f32
  return %r : f32
}

// -----

// mask_mod only: the score passes through the select unchanged.

// CHECK-LABEL: func.func @mask_only(
// CHECK-SAME:    %[[S:[^:]+]]: f32, %[[B:[^:]+]]: index
// CHECK-NEXT:    %[[B16:.+]] = arith.index_cast %[[B]] : index to i16
// CHECK:         %[[Z:.+]] = arith.constant 0 : i16
// CHECK-NEXT:    %[[KEEP:.+]] = arith.cmpi eq, %[[B16]], %[[Z]] : i16
// CHECK-NEXT:    %[[NINF:.+]] = arith.constant 0xFF800000 : f32
// CHECK-NEXT:    %[[R:.+]] = arith.select %[[KEEP]], %[[S]], %[[NINF]] : f32
// CHECK-NEXT:    return %[[R]] : f32
func.func @mask_only(%s: f32, %b: index, %h: index, %qi: index, %ki: index) -> f32 {
  %r = flexattn.apply_mods %s at(%b, %h, %qi, %ki) attributes {masked}
    mask_mod {
    ^bb0(%bb: i16, %hh: i16, %q: i16, %k: i16):
      %z = arith.constant 0 : i16
      %keep = arith.cmpi eq, %bb, %z : i16
      flexattn.yield %keep : i1
    } : f32
  return %r : f32
}

// -----

// No mods at all: the op is its score.

// CHECK-LABEL: func.func @identity(
// CHECK-SAME:    %[[S:[^:]+]]: f32
// CHECK-NEXT:    return %[[S]] : f32
func.func @identity(%s: f32, %b: index, %h: index, %qi: index, %ki: index) -> f32 {
  %r = flexattn.apply_mods %s at(%b, %h, %qi, %ki) attributes {masked} : f32
  return %r : f32
}

// -----

// Inside a linalg.generic body, as flexattn-fuse-online-softmax leaves it:
// inlined in place, the linalg.index values as indices.

// CHECK-LABEL: func.func @in_generic(
// CHECK:         linalg.generic
// CHECK-NEXT:    ^bb0(%[[SE:[^:]+]]: f32):
// CHECK-NEXT:      %[[I:.+]] = linalg.index 0 : index
// CHECK-NEXT:      %[[J:.+]] = linalg.index 1 : index
// CHECK-NEXT:      %[[KEEP:.+]] = arith.cmpi sge, %[[I]], %[[J]] : index
// CHECK-NEXT:      %[[NINF:.+]] = arith.constant 0xFF800000 : f32
// CHECK-NEXT:      %[[R:.+]] = arith.select %[[KEEP]], %[[SE]], %[[NINF]] : f32
// CHECK-NEXT:      linalg.yield %[[R]] : f32
#map = affine_map<(d0, d1) -> (d0, d1)>
func.func @in_generic(%s: memref<16x16xf32>, %b: index, %h: index) {
  linalg.generic {indexing_maps = [#map], iterator_types = ["parallel", "parallel"]} outs(%s : memref<16x16xf32>) {
  ^bb0(%x: f32):
    %i = linalg.index 0 : index
    %j = linalg.index 1 : index
    %r = flexattn.apply_mods %x at(%b, %h, %i, %j) attributes {masked}
      mask_mod {
      ^bb0(%bb: index, %hh: index, %q: index, %k: index):
        %keep = arith.cmpi sge, %q, %k : index
        flexattn.yield %keep : i1
      } : f32
    linalg.yield %r : f32
  }
  return
}

// -----

// Index checks come out of the inlined bodies as torch's indexing: a checked
// index wraps when negative, is tested against [0, size), reports [1, index]
// (sign-extended to i64) into its row of the report buffer when out of
// bounds and then reads element 0; bounds proving [0, size) leave a cast,
// bounds within [-size, size) the wrap only. An i32 index is checked in i32,
// and so is an i64 one sign-extended from i32.

// CHECK-LABEL: func.func @check_index(
// CHECK-SAME:    %[[KI:[^:]+]]: index, %[[T:[^:]+]]: memref<8xf32>, %[[E:[^:]+]]: memref<3x2xi64>)
// CHECK:         %[[K:.+]] = arith.index_cast %[[KI]] : index to i32
// Checked, with a report: site 2.
// CHECK:         %[[Z:.+]] = arith.constant 0 : i32
// CHECK:         %[[NEG:.+]] = arith.cmpi slt, %[[K]], %[[Z]] : i32
// CHECK:         %[[N:.+]] = arith.constant 8 : i32
// CHECK:         %[[W:.+]] = arith.addi %[[K]], %[[N]] : i32
// CHECK:         %[[P:.+]] = arith.select %[[NEG]], %[[W]], %[[K]] : i32
// CHECK:         %[[OK:.+]] = arith.cmpi ult, %[[P]], %{{.+}} : i32
// CHECK:         %[[BAD:.+]] = arith.xori %[[OK]], %{{.+}} : i1
// CHECK:         %[[X:.+]] = arith.extsi %[[K]] : i32 to i64
// CHECK:         scf.if %[[BAD]] {
// CHECK:           %[[ROW:.+]] = arith.constant 2 : index
// CHECK:           %[[ONE:.+]] = arith.constant 1 : i64
// CHECK:           memref.store %[[ONE]], %[[E]][%[[ROW]], %{{.+}}] : memref<3x2xi64>
// CHECK:           memref.store %[[X]], %[[E]][%[[ROW]], %{{.+}}] : memref<3x2xi64>
// CHECK-NEXT:    }
// CHECK:         %[[SAFE:.+]] = arith.select %[[OK]], %[[P]], %{{.+}} : i32
// CHECK:         %[[I0:.+]] = arith.index_cast %[[SAFE]] : i32 to index
// Proved in [0, 8): a cast.
// CHECK-NEXT:    %[[I1:.+]] = arith.index_cast %[[K]] : i32 to index
// Proved in [-8, 8): the wrap, no check; in i32, though extended to i64.
// CHECK:         %[[V:.+]] = arith.subi %[[K]], %{{.+}} : i32
// CHECK:         arith.cmpi slt, %[[V]], %{{.+}} : i32
// CHECK:         %[[P2:.+]] = arith.select %{{.+}} : i32
// CHECK-NEXT:    %[[I2:.+]] = arith.index_cast %[[P2]] : i32 to index
// CHECK:         memref.load %[[T]][%[[I0]]] : memref<8xf32>
// CHECK:         memref.load %[[T]][%[[I1]]] : memref<8xf32>
// CHECK:         memref.load %[[T]][%[[I2]]] : memref<8xf32>
// CHECK-NOT:     flexattn.
func.func @check_index(%s: f32, %b: index, %h: index, %qi: index, %ki: index,
                       %t: memref<8xf32>, %e: memref<3x2xi64>) -> f32 {
  %r = flexattn.apply_mods %s at(%b, %h, %qi, %ki) captures(%t, %e : memref<8xf32>, memref<3x2xi64>)
    score_mod {
    ^bb0(%x: f32, %bb: i32, %hh: i32, %q: i32, %k: i32, %tt: memref<8xf32>, %ee: memref<3x2xi64>):
      %i0 = flexattn.check_index %k of size 8 report(%ee : memref<3x2xi64>) {site = 2 : i64} : i32
      %i1 = flexattn.check_index %k of size 8 {bounds = array<i64: 0, 7>} : i32
      %m = arith.subi %k, %q : i32
      %m64 = arith.extsi %m : i32 to i64
      %i2 = flexattn.check_index %m64 of size 8 {bounds = array<i64: -8, 7>} : i64
      %v0 = memref.load %tt[%i0] : memref<8xf32>
      %v1 = memref.load %tt[%i1] : memref<8xf32>
      %v2 = memref.load %tt[%i2] : memref<8xf32>
      %a = arith.addf %v0, %v1 : f32
      %y = arith.addf %a, %v2 : f32
      flexattn.yield %y : f32
    } : f32
  return %r : f32
}
