// marks.cuh: timing marks on the device's clock (le_mark, le_mark_elapsed), for profiling.
//
// A host timer around an op must wait for the GPU before and after it, and that wait (about
// 10 µs) is as long as many of a step's kernels. A mark is an event recorded on the engine's
// stream instead: it takes the GPU's clock when the work before it has run, and nothing waits
// until the marks are read, after the work. Recorded while a graph is being captured, a mark
// becomes one of the graph's nodes (cudaEventRecordExternal, a flag only valid while
// capturing), so each replay takes its time
// again and the ops can be timed as training runs them, back to back.
//
// A mark touches no engine state: it is not an op (g_op_serial does not move), so an op's
// produced bf16 copy, or a le_operand_only hint, still reaches the op after the mark.
#pragma once

#include <algorithm>
#include <vector>

#include "common.cuh"

namespace le {

// Events, made on first use. g_mark_recorded[i]: mark i was last recorded outside a capture,
// or into a graph that has been launched since (le_graph_launch sets it from Graph::marks).
cudaEvent_t g_mark_events[kMarks];
bool g_mark_recorded[kMarks];
std::vector<int> g_capture_marks;  // the marks recorded since le_graph_begin

inline void drop_marks() {
  for (cudaEvent_t& e : g_mark_events) {
    if (e) cudaEventDestroy(e);
    e = nullptr;
  }
  std::fill(g_mark_recorded, g_mark_recorded + kMarks, false);
}

}  // namespace le

LE_API int le_mark(int i) {
  using namespace le;
  const char* fn = "le_mark";
  if (!g.ready) {
    return fail("%s: the CUDA engine is not initialised; call le_init first (openEngine does)",
                fn);
  }
  TRY(validate_mark(fn, i));
  cudaEvent_t& e = g_mark_events[i];
  if (!e && !g.capturing) {  // the events of i's run of 1,024, so a recording finds them made
    for (int j = i & ~1023; j < (i | 1023) + 1; j++) {
      if (!g_mark_events[j]) CUDA_TRY(fn, cudaEventCreate(&g_mark_events[j]));
    }
  }
  if (!e) CUDA_TRY(fn, cudaEventCreate(&e));
  // While capturing, the external flag makes the record a node of the graph (without it the
  // capture would treat the event as a dependency between streams, and record nothing); outside
  // a capture the flag is invalid.
  if (g.capturing) {
    CUDA_TRY(fn, cudaEventRecordWithFlags(e, g.stream, cudaEventRecordExternal));
  } else {
    CUDA_TRY(fn, cudaEventRecord(e, g.stream));
  }
  // Recorded into a graph, the mark is reached when a replay runs: until then, it is not.
  g_mark_recorded[i] = !g.capturing;
  if (g.capturing) g_capture_marks.push_back(i);
  return 0;
}

LE_API int le_mark_elapsed(int a, int b, float* ms) {
  using namespace le;
  const char* fn = "le_mark_elapsed";
  if (!g.ready) {
    return fail("%s: the CUDA engine is not initialised; call le_init first (openEngine does)",
                fn);
  }
  REQUIRE_NOT_CAPTURING(fn);
  TRY(validate_mark(fn, a));
  TRY(validate_mark(fn, b));
  for (int i : {a, b}) {
    if (!g_mark_events[i] || !g_mark_recorded[i]) {
      return fail("%s: mark %d was never reached (not recorded with le_mark, or recorded only "
                  "into a graph that has not been launched since)",
                  fn, i);
    }
  }
  if (!ms) return fail("%s: ms is NULL", fn);
  // Both: mark a may come after mark b on the stream (a mark recorded again, or in a later
  // replay), and the time between two events needs both reached.
  CUDA_TRY(fn, cudaEventSynchronize(g_mark_events[a]));
  CUDA_TRY(fn, cudaEventSynchronize(g_mark_events[b]));
  CUDA_TRY(fn, cudaEventElapsedTime(ms, g_mark_events[a], g_mark_events[b]));
  return 0;
}
