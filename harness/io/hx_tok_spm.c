// hx_tok_spm.c — the SentencePiece-style merge loop (llama.cpp's SPM semantics) over one text
// fragment, for vocabularies of kind HX_TOK_SPM (see hx_tokenizer.h).
//
// Encoding works on one byte buffer (optional space + text). Symbols start as UTF-8 characters;
// a max-heap of candidate pairs (score, then leftmost) drives the merges and stale entries are
// dropped when popped (lazy invalidation), so a text of n bytes costs O(n log n). The text is
// first cut where no entry can span the boundary (exact, see segment_end) so that each heap
// stays small. Lookups of strings go through the vocabulary's hash table, never a scan.
// Depends on kernels/qp.h and the tokenizer's inside (hx_tok_impl.h).
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hx_tok_impl.h"
#include "qp.h"

// One symbol of the text being encoded: bytes [start, start + n) of the buffer. n == 0 once it
// has been merged into its left neighbour. prev/next link the live symbols (-1 at the ends).
struct sym {
    uint32_t start, n;
    int32_t prev, next;
};

// A candidate merge of symbols left and right (left's next when it was pushed), whose joined
// text of size bytes is a vocabulary entry with the given score.
struct pair {
    float score;
    int32_t left, right;
    uint32_t size;
};

// The byte length of the UTF-8 character starting with lead byte c, from its top four bits as
// llama.cpp's unicode_len_utf8: continuation or malformed lead bytes count as one byte.
static size_t utf8_len(unsigned char c) {
    static const unsigned char lens[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lens[c >> 4];
}

void hx_spm_build_join(struct hx_tok *t) {
    memset(t->join, 0, sizeof t->join);
    for (int id = 0; id < t->n_vocab; id++) {
        const char *s = t->strs + t->off[id];
        size_t len = t->off[id + 1] - t->off[id] - 1;
        for (size_t k = 1; k < len; k++) {
            unsigned bit = (unsigned)(unsigned char)s[k - 1] << 8 | (unsigned char)s[k];
            t->join[bit >> 3] |= (uint8_t)(1u << (bit & 7));
        }
    }
}

// Max-heap order: higher score first; on equal scores the leftmost pair.
static int pair_before(const struct pair *a, const struct pair *b) {
    if (a->score != b->score) return a->score > b->score;
    return a->left < b->left;
}

static void heap_push(struct pair *h, size_t *n, struct pair p) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!pair_before(&p, &h[parent])) break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = p;
}

static struct pair heap_pop(struct pair *h, size_t *n) {
    struct pair top = h[0];
    struct pair last = h[--*n];
    size_t i = 0, cnt = *n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= cnt) break;
        if (c + 1 < cnt && pair_before(&h[c + 1], &h[c])) c++;
        if (!pair_before(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    if (cnt > 0) h[i] = last;
    return top;
}

// Pushes the pair (left, right) if their joined text is a vocabulary entry.
static void try_pair(const struct hx_tok *t, const char *buf, const struct sym *syms, int32_t left,
                     int32_t right, struct pair *heap, size_t *n_heap) {
    if (left < 0 || right < 0) return;
    uint32_t size = syms[left].n + syms[right].n;
    int id = hx_tok__lookup(t, buf + syms[left].start, size);
    if (id < 0) return;
    heap_push(heap, n_heap, (struct pair){t->scores[id], left, right, size});
}

// Runs the merges over one segment buf[0..len) (len > 0) and appends its tokens to out.
// syms has room for len symbols, heap for 3 * len pairs.
static void encode_segment(const struct hx_tok *t, const char *buf, size_t len, struct sym *syms,
                           struct pair *heap, int *out, size_t *n_out) {
    int32_t n_sym = 0;
    for (size_t pos = 0; pos < len;) {
        size_t cl = QP_MIN(utf8_len((unsigned char)buf[pos]), len - pos);
        syms[n_sym] = (struct sym){(uint32_t)pos, (uint32_t)cl, n_sym - 1, -1};
        if (n_sym > 0) syms[n_sym - 1].next = n_sym;
        n_sym++;
        pos += cl;
    }

    size_t n_heap = 0;
    for (int32_t i = 1; i < n_sym; i++) try_pair(t, buf, syms, i - 1, i, heap, &n_heap);

    while (n_heap > 0) {
        struct pair p = heap_pop(heap, &n_heap);
        struct sym *l = &syms[p.left], *r = &syms[p.right];
        // Stale: one side was merged away, or grew (sizes only grow, so the sum tells).
        if (l->n == 0 || r->n == 0 || l->n + r->n != p.size) continue;
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) syms[r->next].prev = p.left;
        try_pair(t, buf, syms, l->prev, p.left, heap, &n_heap);
        try_pair(t, buf, syms, p.left, l->next, heap, &n_heap);
    }

    // Every merged symbol is an entry; a single character that is not falls back to bytes
    // (llama.cpp's resegment finds no merge to undo for it).
    for (int32_t i = 0; i >= 0; i = syms[i].next) {
        const struct sym *s = &syms[i];
        int id = hx_tok__lookup(t, buf + s->start, s->n);
        if (id >= 0) {
            out[(*n_out)++] = id;
        } else {
            for (uint32_t k = 0; k < s->n; k++) {
                int b = t->byte_id[(unsigned char)buf[s->start + k]];
                if (b >= 0) out[(*n_out)++] = b;
            }
        }
    }
}

static int joins(const struct hx_tok *t, unsigned char a, unsigned char b) {
    unsigned bit = (unsigned)a << 8 | b;
    return t->join[bit >> 3] >> (bit & 7) & 1;
}

// The end of the segment that starts at pos: the first boundary between two characters whose
// boundary bytes are adjacent in no vocabulary entry (for Llama vocabularies, around every
// '\n'), or len. No merge can ever reach across such a boundary, so segments tokenize
// independently and the result is exactly that of one pass over the text; the heap just stays
// small and in cache.
static size_t segment_end(const struct hx_tok *t, const char *buf, size_t len, size_t pos) {
    for (;;) {
        size_t next = pos + QP_MIN(utf8_len((unsigned char)buf[pos]), len - pos);
        if (next == len || !joins(t, (unsigned char)buf[next - 1], (unsigned char)buf[next])) return next;
        pos = next;
    }
}

int hx_spm_encode_fragment(const struct hx_tok *t, const char *text, size_t len, int prefix,
                           int *out, size_t *n_out) {
    if (len == 0 && !prefix) return 0;
    char *buf = malloc(len + 2);
    if (!buf) return QP_ENOMEM;
    // llama.cpp escapes spaces as "▁" before tokenizing, so a "▁" already in the text is a
    // space too; here the vocabulary holds spaces, so the text's "▁" become spaces.
    size_t blen = 0;
    if (prefix) buf[blen++] = ' ';
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)text[i] == 0xe2 && len - i >= 3 && (unsigned char)text[i + 1] == 0x96 &&
            (unsigned char)text[i + 2] == 0x81) {
            buf[blen++] = ' ';
            i += 2;
        } else {
            buf[blen++] = text[i];
        }
    }

    size_t max_seg = 0;
    for (size_t pos = 0; pos < blen;) {
        size_t end = segment_end(t, buf, blen, pos);
        max_seg = QP_MAX(max_seg, end - pos);
        pos = end;
    }
    // A segment of m bytes has at most m symbols, m - 1 initial pairs and two more per merge.
    struct sym *syms = malloc((max_seg + 1) * sizeof *syms);
    struct pair *heap = malloc((3 * max_seg + 1) * sizeof *heap);
    if (!syms || !heap) {
        free(buf);
        free(syms);
        free(heap);
        return QP_ENOMEM;
    }
    for (size_t pos = 0; pos < blen;) {
        size_t end = segment_end(t, buf, blen, pos);
        encode_segment(t, buf + pos, end - pos, syms, heap, out, n_out);
        pos = end;
    }
    free(buf);
    free(syms);
    free(heap);
    return 0;
}
