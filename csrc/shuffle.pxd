# cython: language_level=3, boundscheck=False, wraparound=False
# cython: initializedcheck=False, cdivision=True
#
# The epoch's row order and its batches: a seeded random stream
# (splitmix64, below), the Fisher–Yates shuffle fit runs each epoch, and
# the gather of shuffled rows into a batch, with a prefetch of the next;
# for a CSR matrix, the gather of its rows into a dense batch.

from kernels cimport real, CsrBatch, batch_row

cdef extern from *:
    void prefetch "__builtin_prefetch" (const void* address) noexcept nogil


cdef inline unsigned long long splitmix64(unsigned long long* state) noexcept nogil:
    # SplitMix64 (Steele, Lea and Flood, 2014): a fast, well-mixed 64-bit
    # stream from a 64-bit state; plenty for shuffling rows.
    cdef unsigned long long z
    state[0] += 0x9E3779B97F4A7C15ULL
    z = state[0]
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    return z ^ (z >> 31)


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
