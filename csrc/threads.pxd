# cython: language_level=3, boundscheck=False, wraparound=False
# cython: initializedcheck=False, cdivision=True
#
# The BLAS pool's thread count during engine calls.  Every call is bracketed
# by enter_threads and leave_threads, and each layer's products ask
# product_threads first.  The state is C statics of the module that cimports
# this file (only _engine does): the functions that read and set the pool's
# size, and the count of engine calls running right now.

cdef extern from *:
    """
    #include <pthread.h>
    #include <sched.h>
    typedef int (*backprop_get_threads_fn)(void);
    typedef void (*backprop_set_threads_fn)(int);
    /* found by backprop._threads in scipy's OpenBLAS; NULL where there are none */
    static backprop_get_threads_fn backprop_blas_get_threads = NULL;
    static backprop_set_threads_fn backprop_blas_set_threads = NULL;
    /* engine calls running right now, in any thread, and the pool's size when
       the first of them began (what the user set, or threadpoolctl, or the
       default); both change only under the lock */
    static int backprop_running_calls = 0;
    static int backprop_outer_threads = 0;
    /* the running call's thread count for large products, and whether it lets
       each layer choose (see product_threads) */
    static int backprop_call_threads = 0;
    static int backprop_per_product = 0;
    /* A product below this many floating-point operations runs on one thread:
       handing half of it to a second thread costs about what it saves, and on
       a busy machine far more (docs/performance.md, Threads). */
    static const double backprop_product_thread_flops = 4e6;

    /* A spin lock around the bookkeeping of enter_threads and leave_threads (a
       few instructions and the pool's resizing, never a product).  Without it
       a call beginning while the last one ends can read the pool at that
       call's reduced size, take it for the user's, and leave the pool there
       for good. */
    static int backprop_threads_lock = 0;
    static inline void backprop_lock_threads(void) {
        while (__atomic_exchange_n(&backprop_threads_lock, 1, __ATOMIC_ACQUIRE))
            while (__atomic_load_n(&backprop_threads_lock, __ATOMIC_RELAXED))
                sched_yield();      /* the holder may be off its core */
    }
    static inline void backprop_unlock_threads(void) {
        __atomic_store_n(&backprop_threads_lock, 0, __ATOMIC_RELEASE);
    }

    /* The child of a fork has none of the parent's other threads: no call
       of theirs runs there, and none holds the lock.  The pool's size may
       be a running call's, not the user's: the child's first call restores
       the size from before that call (enter_threads). */
    static int backprop_restore_pool = 0;
    static void backprop_forget_calls(void) {
        backprop_threads_lock = 0;
        if (backprop_running_calls > 0)
            backprop_restore_pool = 1;
        backprop_running_calls = 0;
    }
    static void backprop_watch_forks(void) {
        static int registered = 0;
        if (!registered && pthread_atfork(NULL, NULL, backprop_forget_calls) == 0)
            registered = 1;
    }
    """
    ctypedef int (*get_threads_fn "backprop_get_threads_fn")() noexcept nogil
    ctypedef void (*set_threads_fn "backprop_set_threads_fn")(int) noexcept nogil
    get_threads_fn blas_get_threads "backprop_blas_get_threads"
    set_threads_fn blas_set_threads "backprop_blas_set_threads"
    int running_calls "backprop_running_calls"
    int outer_threads "backprop_outer_threads"
    int call_threads "backprop_call_threads"
    bint per_product "backprop_per_product"
    const double PRODUCT_THREAD_FLOPS "backprop_product_thread_flops"
    void lock_threads "backprop_lock_threads" () noexcept nogil
    void unlock_threads "backprop_unlock_threads" () noexcept nogil
    bint restore_pool "backprop_restore_pool"
    void watch_forks "backprop_watch_forks" () noexcept nogil


cdef inline void set_thread_functions(size_t get_address, size_t set_address) noexcept nogil:
    # Install the C functions that read and set the BLAS thread count.
    global blas_get_threads, blas_set_threads
    blas_get_threads = <get_threads_fn>get_address
    blas_set_threads = <set_threads_fn>set_address
    watch_forks()


cdef inline void enter_threads(int want) noexcept nogil:
    # Size the BLAS pool for a call that wants `want` threads (0: choose per
    # product, up to the pool's size as the user set it).  While two engine
    # calls run at once (networks trained in two Python threads), each runs
    # on one thread: two threads each would oversubscribe the cores.
    global running_calls, outer_threads, call_threads, per_product, restore_pool
    cdef int running, target
    if blas_get_threads == NULL or blas_set_threads == NULL:
        return
    lock_threads()
    running_calls += 1
    running = running_calls
    if running == 1:
        if restore_pool:            # (a forked child, see backprop_forget_calls)
            restore_pool = False
            if blas_get_threads() != outer_threads:
                blas_set_threads(outer_threads)
        outer_threads = blas_get_threads()
    target = 1 if running > 1 else (min(want, outer_threads) if want > 0 else outer_threads)
    call_threads = target
    per_product = want <= 0 and target > 1
    if blas_get_threads() != target:
        blas_set_threads(target)
    unlock_threads()


cdef inline void product_threads(double flops) noexcept nogil:
    # Before a layer's products (each of `flops` operations): one thread for
    # small products, the call's count for large ones.  No lock: while a call
    # runs, no other reads or restores the pool's size from before.
    cdef int t
    if not per_product or blas_get_threads == NULL:
        return
    t = 1 if (flops < PRODUCT_THREAD_FLOPS or running_calls > 1) else call_threads
    if blas_get_threads() != t:
        blas_set_threads(t)


cdef inline int pass_threads() noexcept nogil:
    # The threads that a long elementwise pass of the running call (the
    # optimizer's update) may use: the call's count for large products, and
    # one while calls run in several threads.
    if running_calls > 1 or call_threads < 1:
        return 1
    return call_threads


cdef inline bint enter_shares(bint blas) noexcept nogil:
    # While an epoch's steps are split or cut across threads (epoch.pxi),
    # product_threads leaves the pool alone (two threads resizing it at once
    # would race), and when the shares or parts call BLAS (`blas`), it is set
    # to one thread, once, here.  A split whose products all take the small kernels
    # leaves the pool as it is: then no call into OpenBLAS's thread control
    # (whose lock a fork from another thread could leave held in the child).
    # Returns what leave_shares needs to undo it.
    global per_product
    cdef bint before
    if blas_get_threads == NULL or blas_set_threads == NULL:
        return per_product
    lock_threads()
    before = per_product
    per_product = False
    if blas and blas_get_threads() != 1:
        blas_set_threads(1)
    unlock_threads()
    return before


cdef inline void leave_shares(bint before) noexcept nogil:
    # Undo enter_shares: the call's thread count again (one while another
    # call runs), and per-product choice if the call had it.
    global per_product
    cdef int t
    if blas_get_threads == NULL or blas_set_threads == NULL:
        return
    lock_threads()
    t = 1 if running_calls > 1 else call_threads
    per_product = before
    if t >= 1 and blas_get_threads() != t:
        blas_set_threads(t)
    unlock_threads()


cdef inline void leave_threads() noexcept nogil:
    # The last call to finish gives the pool back its size from before.
    global running_calls
    if blas_get_threads == NULL or blas_set_threads == NULL:
        return
    lock_threads()
    running_calls -= 1
    if running_calls == 0 and blas_get_threads() != outer_threads:
        blas_set_threads(outer_threads)
    unlock_threads()
