// Row-wise softmax of ROWS rows of COLS bf16 values over the first VALID of each row; the padded
// values come out 0. Ours; scalar float arithmetic (not vectorised). Built per artifact with
// -DROWS -DCOLS -DVALID. Never compiled on the machines this project was developed on.
#include "bf16_math.h"

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
