// attention-layout fill kernels (placeholder)
#define AL_TOTAL_BYTES 347172
