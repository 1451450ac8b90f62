# cython: language_level=3, boundscheck=False, wraparound=False
# cython: initializedcheck=False, cdivision=True
#
# The epoch's row order and its batches: a seeded random stream
# (splitmix64, below), the Fisher–Yates shuffle fit runs each epoch, and
# the gather of shuffled rows into a batch, with a prefetch of the next;
# for a CSR matrix, the gather of its rows into a dense batch.  Then the
# masks of dropout, drawn from the same kind of stream (dropout_mask).

from kernels cimport real, CsrBatch, batch_row

cdef extern from *:
    void prefetch "__builtin_prefetch" (const void* address) noexcept nogil


cdef inline unsigned long long mix64(unsigned long long z) noexcept nogil:
    # SplitMix64's output function: every bit of z mixed into every bit.
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef inline unsigned long long splitmix64(unsigned long long* state) noexcept nogil:
    # SplitMix64 (Steele, Lea and Flood, 2014): a fast, well-mixed 64-bit
    # stream from a 64-bit state; plenty for shuffling rows.  Draw k (from 1)
    # of the stream from state s is mix64(s + k·γ): any draw can be made alone.
    state[0] += 0x9E3779B97F4A7C15ULL
    return mix64(state[0])


cdef inline Py_ssize_t below(unsigned long long* state, Py_ssize_t bound) noexcept nogil:
    # A uniform integer in [0, bound): Lemire's multiply-shift on 32 random
    # bits, rejecting the few draws that would favour some values.
    cdef unsigned long long m, threshold
    if bound > 0xFFFFFFFFLL:                     # beyond 2^32 rows: bias < bound/2^64
        return <Py_ssize_t>(splitmix64(state) % <unsigned long long>bound)
    m = (splitmix64(state) >> 32) * <unsigned long long>bound
    if (m & 0xFFFFFFFFULL) < <unsigned long long>bound:
        threshold = (0x100000000ULL - <unsigned long long>bound) % <unsigned long long>bound
        while (m & 0xFFFFFFFFULL) < threshold:
            m = (splitmix64(state) >> 32) * <unsigned long long>bound
    return <Py_ssize_t>(m >> 32)


cdef inline void shuffle(Py_ssize_t* perm, Py_ssize_t n, unsigned long long seed) noexcept nogil:
    # Fisher–Yates: every order of perm (n,) equally likely, fixed by the seed.
    cdef unsigned long long state = seed
    cdef Py_ssize_t i, j, keep
    for i in range(n - 1, 0, -1):
        j = below(&state, i + 1)
        keep = perm[i]
        perm[i] = perm[j]
        perm[j] = keep


cdef inline void gather_rows(real* out, const real* src, const Py_ssize_t* perm,
                             Py_ssize_t rows, Py_ssize_t cols) noexcept nogil:
    # out (rows, cols) ← src[perm[i]] for each i: a plain loop, which the
    # compiler vectorises, beats a memcpy call per short row.
    cdef Py_ssize_t i, j
    cdef const real* row
    for i in range(rows):
        row = src + perm[i] * cols
        for j in range(cols):
            out[i * cols + j] = row[j]


cdef inline void gather_csr_rows(real* out, const CsrBatch* x, Py_ssize_t rows,
                                 Py_ssize_t cols) noexcept nogil:
    # out (rows, cols) ← the batch x of a CSR matrix, dense: each row zeroed,
    # then its nonzeros added in at their columns (repeats add up, as in
    # scipy's toarray, which this equals exactly).
    cdef const real* data = <const real*>x.data
    cdef real* row
    cdef Py_ssize_t i, j, k, r
    for i in range(rows):
        row = out + i * cols
        for j in range(cols):
            row[j] = 0
        r = batch_row(x, i)
        for k in range(x.indptr[r], x.indptr[r + 1]):
            row[x.indices[k]] += data[k]


cdef inline void prefetch_rows(const char* base, const Py_ssize_t* perm,
                               Py_ssize_t count, Py_ssize_t row_bytes) noexcept nogil:
    # Ask for the rows perm[0 … count) of a row-major array to be brought into
    # cache: shuffled rows lie far apart, and fetching them while the current
    # batch computes hides the memory latency of the next gather.
    cdef Py_ssize_t i, line
    for i in range(count):
        for line in range(0, row_bytes, 64):
            prefetch(base + perm[i] * row_bytes + line)


# ---------------------------------------------------------------- dropout ---
# The mask of a dropout layer in a training pass: unit j of row r is kept
# (1) or dropped (0) by 32 random bits, dropped when they fall below
# ⌊rate · 2³²⌋, so with probability rate (to within 2⁻³²).  The bits are
# counter-based: pass `step` through layer `layer` has a stream of its own,
# keyed from the seed, and row r takes its draws r·⌈cols/2⌉ … of it, two
# units a draw (the low half, then the high).  So the same seed, pass, layer
# and row always give the same mask, whatever rows the call takes: a rank of
# distributed training draws its share of the batch alone, the per-layer
# Python path draws what the engine draws, and a run resumed from a file
# draws what an uninterrupted one would.

cdef inline unsigned long long drop_threshold(double rate) noexcept nogil:
    # ⌊rate · 2³²⌋ for rate in [0, 1): the draws below it drop their unit.
    cdef unsigned long long t = <unsigned long long>(rate * 4294967296.0)
    return t if t < 0xFFFFFFFFULL else 0xFFFFFFFFULL


cdef inline void dropout_mask(unsigned char* mask, Py_ssize_t rows, Py_ssize_t cols,
                              unsigned long long seed, unsigned long long step,
                              Py_ssize_t layer, Py_ssize_t first_row,
                              double rate) noexcept nogil:
    # OUT mask (rows, cols): the mask of the rows first_row … first_row + rows
    # of training pass `step` through the dropout after layer `layer`.
    cdef unsigned long long gamma = 0x9E3779B97F4A7C15ULL
    cdef unsigned long long key = mix64(mix64(seed + (step + 1) * gamma)
                                        + <unsigned long long>(layer + 1) * gamma)
    cdef unsigned long long threshold = drop_threshold(rate)
    cdef unsigned long long half = <unsigned long long>((cols + 1) // 2)
    cdef unsigned long long draw, counter
    cdef unsigned char* row
    cdef Py_ssize_t i, j
    for i in range(rows):
        row = mask + i * cols
        counter = <unsigned long long>(first_row + i) * half
        for j in range(0, cols - 1, 2):
            counter += 1
            draw = mix64(key + counter * gamma)
            row[j] = (draw & 0xFFFFFFFFULL) >= threshold
            row[j + 1] = (draw >> 32) >= threshold
        if cols % 2:
            draw = mix64(key + (counter + 1) * gamma)
            row[cols - 1] = (draw & 0xFFFFFFFFULL) >= threshold
