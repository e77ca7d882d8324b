// Scalar helpers the core kernels share: bf16 <-> float and e^x for x <= 0. Ours. Never compiled on
// the machines this project was developed on.
#pragma once
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
// fraction (relative error < 3e-6, far below bf16's 2^-8); exp(-inf) = 0.
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
