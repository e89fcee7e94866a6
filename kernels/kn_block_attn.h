// kn_block_attn.h — the body of kn_attend_capped (kn_block.h), included by kn_block.c (baseline
// ISA) and kn_block_avx2.c (FMA instructions) under the name KN_ATTEND_CAPPED; not a header to
// include elsewhere. Needs <math.h>, kn_ops.h (kn_expf_ref) and kn_block.h (kn_softcap).

static float KN_TREE16_NAME(float *acc) {
    for (int half = 8; half >= 1; half /= 2)
        for (int i = 0; i < half; i++) acc[i] = acc[i] + acc[i + half];
    return acc[0];
}

void KN_ATTEND_CAPPED(float *out, const float *q, const float *kt, size_t kt_stride, const float *v,
                      int head_size, int n_keys, float cap, float *scratch) {
    float *s = scratch;
    for (int j = 0; j < n_keys; j++) s[j] = 0.0f;
    // d outer, keys inner: each score is still one FMA chain over d from 0.0f.
    for (int d = 0; d < head_size; d++) {
        const float *kd = kt + (size_t)d * kt_stride;
        float qd = q[d];
        for (int j = 0; j < n_keys; j++) s[j] = fmaf(qd, kd[j], s[j]);
    }
    kn_softcap(s, n_keys, cap);
    float mx = -INFINITY;
    for (int j = 0; j < n_keys; j++) mx = s[j] > mx ? s[j] : mx;
    float acc16[16] = {0};
    for (int j = 0; j < n_keys; j += 16)
        for (int l = 0; l < 16; l++) {
            float e = 0.0f;
            if (j + l < n_keys) e = s[j + l] = kn_expf_ref(s[j + l] - mx);
            acc16[l] = acc16[l] + e;
        }
    float inv = 1.0f / KN_TREE16_NAME(acc16);
    for (int j = 0; j < n_keys; j++) s[j] = s[j] * inv;
    for (int d = 0; d < head_size; d++) out[d] = 0.0f;
    // keys outer, d inner: out[d] is the FMA chain over j from 0.0f.
    for (int j = 0; j < n_keys; j++) {
        const float *vj = v + (size_t)j * head_size;
        for (int d = 0; d < head_size; d++) out[d] = fmaf(s[j], vj[d], out[d]);
    }
}
