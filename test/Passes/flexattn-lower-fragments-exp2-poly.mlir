// RUN: flexattn-opt %s -split-input-file -verify-diagnostics --flexattn-lower-fragments | FileCheck %s

// A launch marked flexattn.exp2_poly = 4: 4 of every 16 elements of P take
// the FMA-pipe exp2 (their math.exp2 marked flexattn.fma_exp2), spread over
// the period: element i when floor((i + 1) 4 / 16) > floor(i 4 / 16), here
// 3, 7, 11, 15 of the thread's 16. alpha's exp2 (one per row value) is not
// marked.
// CHECK-LABEL: func.func @quarter(
// CHECK:         gpu.launch
// alpha, rows row and row + 8
// CHECK-COUNT-2: math.exp2 %{{[0-9a-z_]+}} : f32
// P: elements 0..15 in order (no unmarked exp2 between a group of three
// and the marked one)
// CHECK-COUNT-3: math.exp2 %{{[0-9a-z_]+}} : f32
// CHECK-NOT:     math.exp2 %{{[0-9a-z_]+}} : f32
// CHECK:         math.exp2 %{{[0-9a-z_]+}} {flexattn.fma_exp2} : f32
// CHECK-COUNT-3: math.exp2 %{{[0-9a-z_]+}} : f32
// CHECK-NOT:     math.exp2 %{{[0-9a-z_]+}} : f32
// CHECK:         math.exp2 %{{[0-9a-z_]+}} {flexattn.fma_exp2} : f32
// CHECK-COUNT-3: math.exp2 %{{[0-9a-z_]+}} : f32
// CHECK-NOT:     math.exp2 %{{[0-9a-z_]+}} : f32
// CHECK:         math.exp2 %{{[0-9a-z_]+}} {flexattn.fma_exp2} : f32
// CHECK-COUNT-3: math.exp2 %{{[0-9a-z_]+}} : f32
// CHECK-NOT:     math.exp2 %{{[0-9a-z_]+}} : f32
// CHECK:         math.exp2 %{{[0-9a-z_]+}} {flexattn.fma_exp2} : f32
// CHECK-NOT:     math.exp2
// CHECK:         } {flexattn.exp2_poly = 4 : i64}
func.func @quarter(%s: vector<16xf32>, %m: vector<2xf32>, %l: vector<2xf32>, %out: memref<16xbf16>,
                   %b: index, %h: index, %row: index, %col: index) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c1, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c1, %sy = %c1, %sz = %c1) {
    %p, %m1, %l1, %alpha = flexattn.frag.softmax %s state(%m, %l) at(%b, %h, %row, %col)
        attributes {scale = 0.125 : f32, seq_lens = array<i64: 128, 128>, tile_size = array<i64: 64, 32>}
        : vector<16xf32>, vector<2xf32> -> vector<16xbf16>
    vector.store %p, %out[%c0] : memref<16xbf16>, vector<16xbf16>
    gpu.terminator
  } {flexattn.exp2_poly = 4 : i64}
  return
}

// -----

// k = 16: every element of P; k = 0 (or no attribute): none.
// CHECK-LABEL: func.func @all_and_none(
// CHECK-COUNT-2: math.exp2 %{{[0-9a-z_]+}} : f32
// CHECK-COUNT-8: math.exp2 %{{[0-9a-z_]+}} {flexattn.fma_exp2} : f32
// CHECK-NOT:     flexattn.fma_exp2
// CHECK:         } {flexattn.exp2_poly = 16 : i64}
// CHECK-NOT:     flexattn.fma_exp2
// CHECK:         } {flexattn.exp2_poly = 0 : i64}
func.func @all_and_none(%s: vector<8xf32>, %m: vector<2xf32>, %l: vector<2xf32>, %out: memref<8xf16>,
                        %b: index, %h: index, %row: index, %col: index) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c1, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c1, %sy = %c1, %sz = %c1) {
    %p, %m1, %l1, %alpha = flexattn.frag.softmax %s state(%m, %l) at(%b, %h, %row, %col)
        attributes {scale = 0.125 : f32, seq_lens = array<i64: 128, 128>, tile_size = array<i64: 64, 16>}
        : vector<8xf32>, vector<2xf32> -> vector<8xf16>
    vector.store %p, %out[%c0] : memref<8xf16>, vector<8xf16>
    gpu.terminator
  } {flexattn.exp2_poly = 16 : i64}
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c1, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c1, %sy = %c1, %sz = %c1) {
    %p, %m1, %l1, %alpha = flexattn.frag.softmax %s state(%m, %l) at(%b, %h, %row, %col)
        attributes {scale = 0.125 : f32, seq_lens = array<i64: 128, 128>, tile_size = array<i64: 64, 16>}
        : vector<8xf32>, vector<2xf32> -> vector<8xf16>
    vector.store %p, %out[%c0] : memref<8xf16>, vector<8xf16>
    gpu.terminator
  } {flexattn.exp2_poly = 0 : i64}
  return
}

// -----

// float32 P (float32 inputs: tf32 MMAs) keeps ex2.approx's accuracy: no
// element is marked.
// CHECK-LABEL: func.func @f32_probs(
// CHECK-NOT:     flexattn.fma_exp2
// CHECK:         } {flexattn.exp2_poly = 8 : i64}
func.func @f32_probs(%s: vector<8xf32>, %m: vector<2xf32>, %l: vector<2xf32>, %out: memref<8xf32>,
                     %b: index, %h: index, %row: index, %col: index) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c1, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c1, %sy = %c1, %sz = %c1) {
    %p, %m1, %l1, %alpha = flexattn.frag.softmax %s state(%m, %l) at(%b, %h, %row, %col)
        attributes {scale = 0.125 : f32, seq_lens = array<i64: 128, 128>, tile_size = array<i64: 64, 16>}
        : vector<8xf32>, vector<2xf32> -> vector<8xf32>
    vector.store %p, %out[%c0] : memref<8xf32>, vector<8xf32>
    gpu.terminator
  } {flexattn.exp2_poly = 8 : i64}
  return
}

// -----

func.func @bad_share(%s: vector<8xf32>, %m: vector<2xf32>, %l: vector<2xf32>, %out: memref<8xbf16>,
                     %b: index, %h: index, %row: index, %col: index) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  // expected-error @below {{flexattn.exp2_poly must be an integer in [0, 16] (the elements of P of every 16 whose exp2 runs on the FMA pipe), got 17 : i64}}
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c1, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c1, %sy = %c1, %sz = %c1) {
    %p, %m1, %l1, %alpha = flexattn.frag.softmax %s state(%m, %l) at(%b, %h, %row, %col)
        attributes {scale = 0.125 : f32, seq_lens = array<i64: 128, 128>, tile_size = array<i64: 64, 16>}
        : vector<8xf32>, vector<2xf32> -> vector<8xbf16>
    vector.store %p, %out[%c0] : memref<8xbf16>, vector<8xbf16>
    gpu.terminator
  } {flexattn.exp2_poly = 17 : i64}
  return
}

// -----

func.func @not_an_integer(%s: vector<8xf32>, %m: vector<2xf32>, %l: vector<2xf32>, %out: memref<8xbf16>,
                          %b: index, %h: index, %row: index, %col: index) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  // expected-error @below {{flexattn.exp2_poly must be an integer in [0, 16] (the elements of P of every 16 whose exp2 runs on the FMA pipe), got 2.500000e-01 : f32}}
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c1, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c1, %sy = %c1, %sz = %c1) {
    %p, %m1, %l1, %alpha = flexattn.frag.softmax %s state(%m, %l) at(%b, %h, %row, %col)
        attributes {scale = 0.125 : f32, seq_lens = array<i64: 128, 128>, tile_size = array<i64: 64, 16>}
        : vector<8xf32>, vector<2xf32> -> vector<8xbf16>
    vector.store %p, %out[%c0] : memref<8xbf16>, vector<8xbf16>
    gpu.terminator
  } {flexattn.exp2_poly = 0.25 : f32}
  return
}
