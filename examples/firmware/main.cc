// A host-side check of the files 'edgeport export' generates: the model array links, is 16-byte
// aligned and is a TFLite flatbuffer, and the settings describe its input and output. On a board,
// this is where the TFLite Micro interpreter is built (see docs/firmware.md); that part compiles
// only when the TFLite Micro headers are on the include path.
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "model_data.h"
#include "model_settings.h"

#if defined(__has_include)
#if __has_include("tensorflow/lite/micro/micro_interpreter.h")
#include "model_ops.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#define HAVE_TFLITE_MICRO 1
#endif
#endif

#ifdef HAVE_TFLITE_MICRO
alignas(16) static uint8_t tensor_arena[MODEL_ARENA_SIZE];

static bool RunOnce() {
  static ModelOpResolver resolver;
  if (RegisterModelOps(resolver) != kTfLiteOk) return false;
  tflite::MicroInterpreter interpreter(tflite::GetModel(g_model), resolver, tensor_arena, MODEL_ARENA_SIZE);
  if (interpreter.AllocateTensors() != kTfLiteOk) return false;
  std::memset(interpreter.input(0)->data.raw, 0, MODEL_INPUT0_BYTES);
  return interpreter.Invoke() == kTfLiteOk;
}
#endif

int main() {
  int failures = 0;
  if (g_model_len < 8 || std::memcmp(g_model + 4, "TFL3", 4) != 0) {
    std::printf("FAIL: g_model is not a TFLite flatbuffer (no TFL3 identifier)\n");
    ++failures;
  }
  if (reinterpret_cast<std::uintptr_t>(g_model) % 16 != 0) {
    std::printf("FAIL: g_model is not 16-byte aligned\n");
    ++failures;
  }
  const int dims[] = MODEL_INPUT0_DIMS;
  long elements = 1;
  for (int i = 0; i < MODEL_INPUT0_DIMS_COUNT; ++i) elements *= dims[i];
  if (elements != MODEL_INPUT0_ELEMENTS) {
    std::printf("FAIL: input dims multiply to %ld, settings say %d\n", elements, MODEL_INPUT0_ELEMENTS);
    ++failures;
  }
  if (MODEL_ARENA_SIZE < MODEL_ARENA_MEASURED_BYTES || MODEL_ARENA_SIZE % MODEL_ARENA_ALIGNMENT != 0) {
    std::printf("FAIL: arena %d B below the measured %d B or not aligned\n", MODEL_ARENA_SIZE,
                MODEL_ARENA_MEASURED_BYTES);
    ++failures;
  }
  // How firmware quantizes a float input: q = round(x / scale) + zero_point.
  const float x = 0.5f;
  const long q = static_cast<long>(x / MODEL_INPUT0_SCALE + (x >= 0 ? 0.5f : -0.5f)) + MODEL_INPUT0_ZERO_POINT;
  std::printf("model: %u bytes, input %s [%d elements, %s], 0.5 -> %ld, arena %d B (measured %d B)\n", g_model_len,
              MODEL_INPUT0_NAME, MODEL_INPUT0_ELEMENTS, MODEL_INPUT0_DTYPE, q, MODEL_ARENA_SIZE,
              MODEL_ARENA_MEASURED_BYTES);
#ifdef HAVE_TFLITE_MICRO
  if (!RunOnce()) {
    std::printf("FAIL: TFLite Micro could not run the model\n");
    ++failures;
  }
#endif
  std::printf(failures ? "FAILED\n" : "OK\n");
  return failures ? 1 : 0;
}
