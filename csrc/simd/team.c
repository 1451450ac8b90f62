/* A team of threads for the core's long elementwise passes (kernels.h,
 * bp_team_run).  The calling thread and up to BP_TEAM_MAX − 1 workers (the
 * first threads − 1 started, however many an earlier run started) take the
 * pass's chunks from a shared counter, so a worker that is slow to wake
 * (the other cores busy) leaves its chunks to the caller: a run is never much
 * slower than the caller alone.  Workers start on first use, wait on a
 * condition variable between runs (they never spin, which would take a core
 * from BLAS's threads), block every signal (Python handles them in its main
 * thread) and are forgotten in the child of a fork.
 */
#include <pthread.h>
#include <signal.h>
#include <stdint.h>

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
} team = {
    PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER,
    PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, 0, 0, NULL, NULL, 0, 0,
};

static void take_chunks(bp_task task, void *arg, int chunks)
{
    int c;
    while ((c = __atomic_fetch_add(&team.next, 1, __ATOMIC_RELAXED)) < chunks)
        task(arg, c, chunks);
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
        while (!team.open || team.generation == seen || me >= team.want)
            pthread_cond_wait(&team.wake, &team.lock);
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
    team.workers = team.open = team.active = 0;
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
    pthread_attr_setstacksize(&attr, 1 << 16);
    while (team.workers < want && pthread_create(&id, &attr, worker, (void *)(intptr_t)team.workers) == 0)
        team.workers++;
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &before, NULL);
}

void bp_team_run(bp_task task, void *arg, int chunks, int threads)
{
    int helpers = threads - 1;
    if (helpers > BP_TEAM_MAX - 1)
        helpers = BP_TEAM_MAX - 1;
    if (helpers > chunks - 1)
        helpers = chunks - 1;
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
    team.open = 1;
    team.generation++;
    if (team.workers > 0)
        pthread_cond_broadcast(&team.wake);
    pthread_mutex_unlock(&team.lock);

    take_chunks(task, arg, chunks);

    pthread_mutex_lock(&team.lock);
    team.open = 0;   /* no worker joins from here on, */
    while (team.active > 0)   /* and those inside finish their chunks */
        pthread_cond_wait(&team.left, &team.lock);
    pthread_mutex_unlock(&team.lock);
    pthread_mutex_unlock(&team.run);
}
