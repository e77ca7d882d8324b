// Row-wise softmax of ROWS rows of COLS bf16 values over the first VALID of each row; the padded
// values come out 0. Ours; scalar float arithmetic (not vectorised). Built per artifact with
// -DROWS -DCOLS -DVALID. Never compiled on the machines this project was developed on.
#include <stdint.h>

static inline float bf16_to_float(uint16_t bits) {
  union { uint32_t u; float f; } v = {(uint32_t)bits << 16};
  return v.f;
}

static inline uint16_t float_to_bf16(float value) {  // round to nearest even
  union { float f; uint32_t u; } v = {value};
  return (uint16_t)((v.u + 0x7FFF + ((v.u >> 16) & 1)) >> 16);
}

// e^x for x <= 0 as 2^(x log2 e): 2^integer part in the exponent bits, a degree-5 polynomial for the
// fraction (relative error < 3e-6, far below bf16's 2^-8).
static inline float exp_nonpositive(float x) {
  float y = x * 1.4426950409f;
  if (y < -126.0f) return 0.0f;
  int whole = (int)y;
  if ((float)whole > y) whole -= 1;
  float f = y - (float)whole;
  float p = 1.0f + f * (0.6931472f + f * (0.2402265f + f * (0.0555041f + f * (0.0096181f + f * 0.0013333f))));
  union { uint32_t u; float f; } scale = {(uint32_t)(whole + 127) << 23};
  return p * scale.f;
}

extern "C" void softmax_rows(const uint16_t *x, uint16_t *y) {
  for (int row = 0; row < ROWS; ++row) {
    const uint16_t *in = x + row * COLS;
    uint16_t *out = y + row * COLS;
    float top = bf16_to_float(in[0]);
    for (int c = 1; c < VALID; ++c) {
      float v = bf16_to_float(in[c]);
      top = v > top ? v : top;
    }
    float sum = 0.0f;
    for (int c = 0; c < VALID; ++c) sum += exp_nonpositive(bf16_to_float(in[c]) - top);
    float inverse = 1.0f / sum;
    for (int c = 0; c < VALID; ++c) out[c] = float_to_bf16(exp_nonpositive(bf16_to_float(in[c]) - top) * inverse);
    for (int c = VALID; c < COLS; ++c) out[c] = 0;
  }
}
