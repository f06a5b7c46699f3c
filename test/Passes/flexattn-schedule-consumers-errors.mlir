// RUN: flexattn-opt %s -verify-diagnostics --flexattn-schedule-consumers

// Ping-pong takes turns among two or three consumer groups (named
// barriers 1 .. groups); four is refused.
func.func @four_groups() {
  // expected-error @+1 {{ping-pong takes turns among two or three consumer groups, got 4}}
  flexattn.warp_specialize producer(threads = 128, registers = 24) {
  ^bb0(%thread: index):
  } consumers(groups = 4, threads = 128, registers = 120) {
  ^bb0(%group: index, %thread: index):
  }
  return
}
