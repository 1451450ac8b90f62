/* A team of threads for the core's long elementwise passes (kernels.h,
 * bp_team_run).  The calling thread and up to BP_TEAM_MAX − 1 workers (the
 * first threads − 1 started, however many an earlier run started) take the
 * pass's chunks from a shared counter, so a worker that is slow to wake
 * (the other cores busy) leaves its chunks to the caller: a run is never much
 * slower than the caller alone.  Workers start on first use, wait on a
 * condition variable between runs (outside a hold and its grace period,
 * below, they never spin, which would take a core from BLAS's threads),
 * block every signal (Python handles them in its main thread) and are
 * forgotten in the child of a fork.  Their stack holds a split step's
 * chunks (epoch.pxi): the small products' 32 kB buffer (gemm.h) and BLAS.
 *
 * A hold (bp_team_hold … bp_team_release, around an epoch whose steps are
 * split across threads) keeps the first threads − 1 workers spinning between
 * the holder's runs instead: a step's runs are microseconds apart, far less
 * than a wake from the condition variable takes.  Those runs go through one
 * atomic word, `spin`, which holds the run's chunk count (high half) and the
 * next chunk to take (low half), so a thread's claim and the count it
 * claims against are one snapshot: a claim whose chunk lies below the count
 * belongs to a run that is not over (the holder waits for every chunk), so
 * its task and argument are still that run's.
 */
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <time.h>

#include "kernels.h"

#define BP_TEAM_MAX 64

static struct {
    pthread_mutex_t lock;       /* guards the fields below, except next */
    pthread_cond_t wake;        /* a run opened */
    pthread_cond_t left;        /* a worker left a run */
    pthread_mutex_t run;        /* one run at a time */
    int workers;                /* started */
    unsigned long generation;   /* runs opened so far */
    int open;                   /* the current run takes workers */
    int want;                   /* … the first this many of them */
    int active;                 /* workers inside the current run */
    bp_task task;
    void *arg;
    int chunks;
    int next;                   /* the next chunk to take (atomic) */
    int held;                   /* a hold is on: … */
    int hold_want;              /* … the first this many workers spin (atomic) */
    uint64_t spin;              /* the held run: chunks << 32 | next (atomic) */
    int spin_done;              /* its chunks done (atomic) */
    bp_task spin_task;
    void *spin_arg;
} team = {
    PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER,
    PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, 0, 0, NULL, NULL, 0, 0, 0, 0, 0, 0, NULL, NULL,
};

static __thread int holding;    /* this thread holds the team */

static inline void relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void take_chunks(bp_task task, void *arg, int chunks)
{
    int c;
    while ((c = __atomic_fetch_add(&team.next, 1, __ATOMIC_RELAXED)) < chunks)
        task(arg, c, chunks);
}

/* Take the held run's chunks until none is left. */
static void take_spin_chunks(void)
{
    for (;;) {
        uint64_t s = __atomic_fetch_add(&team.spin, 1, __ATOMIC_ACQ_REL);
        uint32_t c = (uint32_t)s, chunks = (uint32_t)(s >> 32);
        if (c >= chunks)
            return;
        team.spin_task(team.spin_arg, (int)c, (int)chunks);
        __atomic_fetch_add(&team.spin_done, 1, __ATOMIC_RELEASE);
    }
}

/* A worker's loop while the hold lasts: take each run's chunks as it opens.
 * After a long stretch without one (the holder between epochs' stretches, or
 * the machine busy) it yields its core at each look.  A hold that ends
 * keeps the worker spinning 20 ms longer (HOLD_GRACE_NS), for the next one:
 * fit holds the team for each stretch of an epoch, with some Python between
 * (callbacks, validation), and a worker gone to sleep can take milliseconds
 * to wake on a shared host (docs/performance.md, Split steps).  An ordinary
 * run (bp_team_run outside a hold) that opens meanwhile ends the grace. */
#define HOLD_GRACE_NS 20000000L
static long long now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void spin_while_held(void)
{
    unsigned idle = 0;
    long long released = 0;
    for (;;) {
        uint64_t s;
        if (!__atomic_load_n(&team.held, __ATOMIC_ACQUIRE)) {
            /* (an ordinary run opening ends the grace: this worker joins it) */
            if (__atomic_load_n(&team.open, __ATOMIC_RELAXED))
                return;
            if (released == 0)
                released = now_ns();
            else if ((idle & 1023) == 0 && now_ns() - released > HOLD_GRACE_NS)
                return;
        } else {
            released = 0;
        }
        s = __atomic_load_n(&team.spin, __ATOMIC_ACQUIRE);
        if ((uint32_t)s < (uint32_t)(s >> 32)) {
            take_spin_chunks();
            idle = 0;
        } else if (++idle < (1u << 16)) {
            relax();
        } else {
            sched_yield();
        }
    }
}

static void *worker(void *index)   /* the worker's number, from 0 */
{
    const int me = (int)(intptr_t)index;
    unsigned long seen = 0;
    bp_task task;
    void *arg;
    int chunks;
    pthread_mutex_lock(&team.lock);
    for (;;) {
        while (!(team.held && me < team.hold_want)
               && (!team.open || team.generation == seen || me >= team.want))
            pthread_cond_wait(&team.wake, &team.lock);
        if (team.held && me < team.hold_want) {
            pthread_mutex_unlock(&team.lock);
            spin_while_held();
            pthread_mutex_lock(&team.lock);
            continue;
        }
        seen = team.generation;
        team.active++;
        task = team.task;
        arg = team.arg;
        chunks = team.chunks;
        pthread_mutex_unlock(&team.lock);
        take_chunks(task, arg, chunks);
        pthread_mutex_lock(&team.lock);
        if (--team.active == 0)
            pthread_cond_signal(&team.left);
    }
    return NULL;
}

static void forget_workers(void)   /* in the child of a fork: none run there */
{
    pthread_mutex_init(&team.lock, NULL);
    pthread_cond_init(&team.wake, NULL);
    pthread_cond_init(&team.left, NULL);
    pthread_mutex_init(&team.run, NULL);
    team.workers = team.open = team.active = team.held = 0;
    holding = 0;
}

static void start_workers(int want)   /* under team.lock */
{
    static int registered = 0;
    pthread_attr_t attr;
    pthread_t id;
    sigset_t all, before;
    if (!registered && pthread_atfork(NULL, NULL, forget_workers) == 0)
        registered = 1;
    if (!registered)
        return;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &before);   /* the workers inherit it */
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 1 << 20);   /* (virtual: touched as used) */
    while (team.workers < want && pthread_create(&id, &attr, worker, (void *)(intptr_t)team.workers) == 0)
        team.workers++;
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &before, NULL);
}

/* A run of the holder's: publish it in `spin`, take chunks, wait for all. */
static void spin_run(bp_task task, void *arg, int chunks)
{
    unsigned waits = 0;
    team.spin_task = task;
    team.spin_arg = arg;
    __atomic_store_n(&team.spin_done, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&team.spin, (uint64_t)chunks << 32, __ATOMIC_RELEASE);
    take_spin_chunks();
    /* (a worker that claimed a chunk may be off its core: yield to it
     * rather than spin out a time slice) */
    while (__atomic_load_n(&team.spin_done, __ATOMIC_ACQUIRE) < chunks)
        if (++waits < (1u << 14))
            relax();
        else
            sched_yield();
}

int bp_team_hold(int threads)
{
    int helpers = threads - 1;
    if (helpers > BP_TEAM_MAX - 1)
        helpers = BP_TEAM_MAX - 1;
    if (helpers <= 0 || holding)
        return 0;
    pthread_mutex_lock(&team.run);
    pthread_mutex_lock(&team.lock);
    if (team.workers < helpers)
        start_workers(helpers);
    if (team.workers < 1) {   /* no thread could start: alone */
        pthread_mutex_unlock(&team.lock);
        pthread_mutex_unlock(&team.run);
        return 0;
    }
    team.hold_want = team.workers < helpers ? team.workers : helpers;
    __atomic_store_n(&team.spin, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&team.held, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&team.wake);
    pthread_mutex_unlock(&team.lock);
    holding = 1;
    return team.hold_want + 1;
}

void bp_team_release(void)
{
    if (!holding)
        return;
    pthread_mutex_lock(&team.lock);
    __atomic_store_n(&team.held, 0, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&team.lock);
    holding = 0;
    pthread_mutex_unlock(&team.run);
}

void bp_team_run(bp_task task, void *arg, int chunks, int threads)
{
    int helpers = threads - 1;
    if (helpers > BP_TEAM_MAX - 1)
        helpers = BP_TEAM_MAX - 1;
    if (helpers > chunks - 1)
        helpers = chunks - 1;
    if (holding && helpers > 0) {
        spin_run(task, arg, chunks);
        return;
    }
    /* alone: one thread asked for, or another thread's run in progress */
    if (helpers <= 0 || pthread_mutex_trylock(&team.run) != 0) {
        for (int c = 0; c < chunks; c++)
            task(arg, c, chunks);
        return;
    }
    pthread_mutex_lock(&team.lock);
    if (team.workers < helpers)
        start_workers(helpers);
    team.task = task;
    team.arg = arg;
    team.chunks = chunks;
    team.want = helpers;
    __atomic_store_n(&team.next, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&team.open, 1, __ATOMIC_RELAXED);   /* (read by the grace spin) */
    team.generation++;
    if (team.workers > 0)
        pthread_cond_broadcast(&team.wake);
    pthread_mutex_unlock(&team.lock);

    take_chunks(task, arg, chunks);

    pthread_mutex_lock(&team.lock);
    __atomic_store_n(&team.open, 0, __ATOMIC_RELAXED);   /* no worker joins from here on, */
    while (team.active > 0)   /* and those inside finish their chunks */
        pthread_cond_wait(&team.left, &team.lock);
    pthread_mutex_unlock(&team.lock);
    pthread_mutex_unlock(&team.run);
}
