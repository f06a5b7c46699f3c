// RUN: flexattn-opt %s -split-input-file --flexattn-lower-fragments -verify-diagnostics

func.func @zero_chains(%s: vector<8xf32>, %m: vector<2xf32>, %l: vector<2xf32>,
                       %b: index, %h: index, %row: index, %col: index) -> vector<8xf32> {
  // expected-error @below {{flexattn.reduce_chains must be in [1, 16], got 0}}
  %p, %m1, %l1, %alpha = flexattn.frag.softmax %s state(%m, %l) at(%b, %h, %row, %col)
      attributes {flexattn.reduce_chains = 0 : i64, scale = 0.125 : f32, seq_lens = array<i64: 128, 128>, tile_size = array<i64: 64, 16>}
      : vector<8xf32>, vector<2xf32> -> vector<8xf32>
  return %p : vector<8xf32>
}

// -----

func.func @too_many_max_chains(%s: vector<8xf32>, %m: vector<2xf32>, %l: vector<2xf32>,
                               %b: index, %h: index, %row: index, %col: index) -> vector<8xf32> {
  // expected-error @below {{flexattn.max_chains must be in [1, 16], got 17}}
  %p, %m1, %l1, %alpha = flexattn.frag.softmax %s state(%m, %l) at(%b, %h, %row, %col)
      attributes {flexattn.max_chains = 17 : i64, scale = 0.125 : f32, seq_lens = array<i64: 128, 128>, tile_size = array<i64: 64, 16>}
      : vector<8xf32>, vector<2xf32> -> vector<8xf32>
  return %p : vector<8xf32>
}
