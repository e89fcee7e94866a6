// test_met_gen.c — metrics/met_gen.h against examples worked out by hand (the numbers in the
// comments are the hand computation).
#include <math.h>

#include "met_gen.h"
#include "qp_test.h"

#define N(a) ((int)(sizeof(a) / sizeof *(a)))

QP_TEST(first_divergence_should_find_the_first_differing_position) {
    int a[] = {5, 6, 7, 8}, b[] = {5, 6, 9, 8}, c[] = {5, 6};
    QP_CHECK_INT_EQ(met_gen_first_divergence(a, 4, b, 4), 2);
    QP_CHECK_INT_EQ(met_gen_first_divergence(a, 4, a, 4), -1); // identical
    QP_CHECK_INT_EQ(met_gen_first_divergence(a, 4, c, 2), 2);  // c stopped early: differs at 2
    QP_CHECK_INT_EQ(met_gen_first_divergence(c, 2, a, 4), 2);
    QP_CHECK_INT_EQ(met_gen_first_divergence(b, 4, (int[]){7}, 1), 0);
    QP_CHECK_INT_EQ(met_gen_first_divergence(a, 0, b, 0), -1); // both empty
}

QP_TEST(agreement_should_count_equal_positions_and_positions_where_both_stopped) {
    int a[] = {1, 2, 3, 4, 5, 6}, b[] = {1, 9, 3, 4, 0, 6};
    // Positions 0, 2, 3 and 5 agree of 6; of the first 4: 0, 2, 3.
    QP_CHECK_NEAR(met_gen_agreement(a, 6, b, 6, 6), 4.0 / 6, 1e-15);
    QP_CHECK_NEAR(met_gen_agreement(a, 6, b, 6, 4), 3.0 / 4, 1e-15);
    // a has 3 tokens, b 6, K = 8: agree at 0 and 2; positions 3..5 only b has; 6, 7 neither.
    QP_CHECK_NEAR(met_gen_agreement(a, 3, b, 6, 8), 4.0 / 8, 1e-15);
}

QP_TEST(loop_should_find_a_cycle_at_the_end_and_where_it_starts) {
    // 5 | 1 2 3 1 2 3 1 2 3: period 3, the cycle is 9 tokens (3 periods, >= 8), from position 1.
    int a[] = {5, 1, 2, 3, 1, 2, 3, 1, 2, 3};
    int start, period;
    QP_CHECK(met_gen_loop(a, N(a), &start, &period));
    QP_CHECK_INT_EQ(start, 1);
    QP_CHECK_INT_EQ(period, 3);
    // A cycle cut inside its last period still counts: 4 | 7 8 9 7 8 9 7 8 (8 tokens, 2.67 periods
    // of 3: fewer than 3 periods, so no loop), and with one more 9 it is one.
    int b[] = {4, 7, 8, 9, 7, 8, 9, 7, 8};
    QP_CHECK(!met_gen_loop(b, N(b), &start, &period));
    QP_CHECK_INT_EQ(start, -1);
    int c[] = {4, 7, 8, 9, 7, 8, 9, 7, 8, 9};
    QP_CHECK(met_gen_loop(c, N(c), &start, &period));
    QP_CHECK_INT_EQ(start, 1);
    // Period 1 needs 8 tokens: 7 repeats of 3 are not a loop, 8 are.
    int d[] = {1, 2, 3, 3, 3, 3, 3, 3, 3}, e[] = {1, 3, 3, 3, 3, 3, 3, 3, 3};
    QP_CHECK(!met_gen_loop(d, N(d), &start, &period));
    QP_CHECK(met_gen_loop(e, N(e), &start, &period));
    QP_CHECK_INT_EQ(start, 1);
    QP_CHECK_INT_EQ(period, 1);
    // 2 2 2 2 2 2 2 2 2 2 2 2: periods 1, 2, 3, 4 all start at 0: the shortest wins.
    int f[12] = {2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2};
    QP_CHECK(met_gen_loop(f, 12, &start, &period));
    QP_CHECK_INT_EQ(start, 0);
    QP_CHECK_INT_EQ(period, 1);
    // A repetition in the middle that does not reach the end is no loop.
    int g[] = {1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 7};
    QP_CHECK(!met_gen_loop(g, N(g), &start, &period));
}

QP_TEST(distinct_n_should_count_distinct_ngrams_over_all) {
    int a[] = {1, 2, 1, 2, 3};
    // unigrams 1 2 1 2 3: 3 distinct of 5; bigrams 12 21 12 23: 3 of 4; trigrams 121 212 123: 3 of 3.
    QP_CHECK_NEAR(met_gen_distinct(a, 5, 1), 3.0 / 5, 1e-15);
    QP_CHECK_NEAR(met_gen_distinct(a, 5, 2), 3.0 / 4, 1e-15);
    QP_CHECK_NEAR(met_gen_distinct(a, 5, 3), 1.0, 1e-15);
    QP_CHECK(isnan(met_gen_distinct(a, 1, 2)));
}

QP_TEST(common_bytes_should_not_cut_a_character) {
    QP_CHECK_INT_EQ(met_gen_common_bytes("the cat", "the car"), 6);
    QP_CHECK_INT_EQ(met_gen_common_bytes("same", "same"), 4);
    // "é" is C3 A9, "è" is C3 A8: they share the lead byte, which must not be counted alone.
    QP_CHECK_INT_EQ(met_gen_common_bytes("caf\xc3\xa9", "caf\xc3\xa8"), 3);
}

QP_TEST(describe_should_leave_the_stop_token_out_of_loop_and_distinct) {
    int t[] = {4, 4, 4, 4, 4, 4, 4, 4, 2}; // eight 4s, then the stop token 2
    struct met_gen_cont c;
    met_gen_describe(t, N(t), 1, &c);
    QP_CHECK_INT_EQ(c.n_tokens, 9);
    QP_CHECK_INT_EQ(c.eos_pos, 8);
    QP_CHECK_INT_EQ(c.loop_start, 0); // without the stop token it is a loop of period 1
    QP_CHECK_NEAR(c.distinct1, 1.0 / 8, 1e-15);
    met_gen_describe(t, N(t), 0, &c); // the same ids as plain text: 2 breaks the cycle
    QP_CHECK_INT_EQ(c.eos_pos, -1);
    QP_CHECK_INT_EQ(c.loop_start, -1);
    QP_CHECK_NEAR(c.distinct1, 2.0 / 9, 1e-15);
}

QP_TEST(summary_should_count_identical_pairs_as_L_and_pool_nll_over_tokens) {
    // Three prompts, L = 8: identical; split at 2; split at 0 with the variant looping.
    int r0[] = {1, 2, 3, 4, 5, 6, 7, 8}, v1[] = {1, 2, 9, 9, 9, 9, 9, 9};
    int loopy[] = {3, 3, 3, 3, 3, 3, 3, 3};
    struct met_gen_pair p[3];
    met_gen_compare(r0, 8, 0, r0, 8, 0, 4, &p[0]);
    met_gen_compare(r0, 8, 0, v1, 8, 0, 4, &p[1]);
    met_gen_compare(r0, 8, 0, loopy, 8, 0, 4, &p[2]);
    QP_CHECK_INT_EQ(p[0].first_div, -1);
    QP_CHECK_INT_EQ(p[1].first_div, 2);
    QP_CHECK_INT_EQ(p[2].first_div, 0);
    p[0].ref_nll_var = 1.0, p[1].ref_nll_var = 2.0; // prompt 2 not scored (NaN)
    p[0].ref_nll_ref = p[1].ref_nll_ref = p[2].ref_nll_ref = 1.0;
    double scratch[3];
    struct met_gen_summary s;
    met_gen_summarize(p, 3, 8, scratch, &s);
    // First divergences 8 (identical), 2, 0: sorted 0 2 8, median 2.
    QP_CHECK_NEAR(s.median_first_div, 2.0, 0);
    QP_CHECK_NEAR(s.identical_share, 1.0 / 3, 1e-15);
    // Agreement in the first 4: 1, 2/4 (1 2), 1/4 (position 2: 3 = 3) -> mean 7/12.
    QP_CHECK_NEAR(s.agree_k, 7.0 / 12, 1e-15);
    QP_CHECK_NEAR(s.loop_rate_ref, 0.0, 0);
    QP_CHECK_NEAR(s.loop_rate_var, 1.0 / 3, 1e-15);
    // Pooled: (1 * 8 + 2 * 8) / 16 = 1.5; the unscored prompt is left out.
    QP_CHECK_NEAR(s.ref_nll_var, 1.5, 1e-15);
    QP_CHECK_NEAR(s.ref_nll_ref, 1.0, 1e-15);
    // distinct-2 of the reference: 7 of 7 bigrams; of the variants: 1, (12 29 99 99 99 99 99:
    // 3 distinct of 7), (33 x7: 1 of 7) -> mean (1 + 3/7 + 1/7) / 3.
    QP_CHECK_NEAR(s.distinct2_ref, 1.0, 1e-15);
    QP_CHECK_NEAR(s.distinct2_var, (1.0 + 3.0 / 7 + 1.0 / 7) / 3, 1e-15);
}
