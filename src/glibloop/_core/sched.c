/* The scheduler: batches of asyncio rounds run from the GSource's
 * dispatch, in asyncio's order.
 *
 * A round runs the callbacks that were ready when it started, then the
 * timers due by then (run_round).  C watchers (transports, listeners,
 * sock_* operations) get their epoll events straight from the poll; when
 * callbacks were queued before the poll that read them, their events are
 * held back until the ready queue's head reaches the callbacks queued
 * after that poll, which is where asyncio would run them
 * (gl_sched_hold_watchers; poll.c keeps and replays the events).  A batch
 * runs rounds until the ready queue is empty or its budget is spent, and
 * gives GLib its turn: a hand-off iteration when asyncio ran dry, a fair
 * one after GL_FAIR_STRETCH_NS of work, and a long round is cut every
 * GL_CUT_EVERY callbacks for it.  Handles whose Context a callback further
 * up the stack has entered (a nested main loop) wait until it returns.
 * The ready queue is a ring buffer indexed by ever-growing counters. */
#include "internal.h"

#include <string.h>

/* asyncio's longest stretch of work before GLib gets a turn (run_rounds) */
#define GL_FAIR_STRETCH_NS (1 * GL_NS_PER_MS)
#define GL_TURN_ITERATIONS 4     /* GLib iterations in one turn, at most */

/* ------------------------------------------------------------------ */
/* ready queue                                                        */

static int
ready_grow(gl_ready *q)
{
    uint64_t cap = q->items ? (q->mask + 1) * 2 : 256;
    gl_handle **items = PyMem_Malloc((size_t)cap * sizeof(*items));
    if (items == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (uint64_t i = q->head; i < q->tail; i++) {
        items[i & (cap - 1)] = q->items[i & q->mask];
    }
    PyMem_Free(q->items);
    q->items = items;
    q->mask = cap - 1;
    return 0;
}

int
gl_sched_push(gl_loop *loop, gl_handle *h)
{
    gl_ready *q = &loop->ready;
    if (q->items == NULL || q->tail - q->head > q->mask) {
        if (ready_grow(q) < 0) {
            return -1;
        }
    }
    q->items[q->tail & q->mask] = (gl_handle *)Py_NewRef(h);
    /* release: a GLib prepare on the loop's thread may read it without
     * the GIL, after being woken by another thread's push */
    __atomic_store_n(&q->tail, q->tail + 1, __ATOMIC_RELEASE);
    return 0;
}

static void
ready_clear(gl_ready *q)
{
    /* Detach first: a finalizer run by a DECREF may call back in. */
    gl_handle **items = q->items;
    uint64_t head = q->head, tail = q->tail, mask = q->mask;
    q->items = NULL;
    q->head = q->tail = 0;
    q->mask = 0;
    for (uint64_t i = head; i < tail; i++) {
        gl_handle_release(items[i & mask]);
    }
    PyMem_Free(items);
}

/* ------------------------------------------------------------------ */
/* handles put aside while a nested main loop runs                    */

/* The dispatch depth whose running callback has ctx entered, or 0. */
static int
entered_level(gl_loop *loop, PyObject *ctx, int depth)
{
    for (int level = 1; level < depth && level <= GL_MAX_DEPTH; level++) {
        if (loop->entered[level] == ctx) {
            return level;
        }
    }
    return 0;
}

/* Takes over the queue's reference to h. */
static int
defer_handle(gl_loop *loop, gl_handle *h, int level)
{
    if (loop->deferred_size == loop->deferred_capacity) {
        Py_ssize_t cap = loop->deferred_capacity ? loop->deferred_capacity * 2 : 16;
        gl_handle **items = PyMem_Realloc(loop->deferred, (size_t)cap * sizeof(*items));
        if (items == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        loop->deferred = items;
        int *levels = PyMem_Realloc(loop->deferred_level, (size_t)cap * sizeof(*levels));
        if (levels == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        loop->deferred_level = levels;
        loop->deferred_capacity = cap;
    }
    loop->deferred[loop->deferred_size] = h;
    loop->deferred_level[loop->deferred_size] = level;
    loop->deferred_size++;
    return 0;
}

/* The callback at `level` returned: what waited for its Context may run. */
static int
requeue_deferred(gl_loop *loop, int level)
{
    /* Compact first, push and release after: a release may run a finalizer
     * and a GC pass that traverses the deferred array. */
    Py_ssize_t kept = 0, n = 0;
    gl_handle *ready_now[64];
    gl_handle **freed = ready_now;
    if (loop->deferred_size > 64) {
        freed = PyMem_Malloc(sizeof(gl_handle *) * (size_t)loop->deferred_size);
        if (freed == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    for (Py_ssize_t i = 0; i < loop->deferred_size; i++) {
        if (loop->deferred_level[i] >= level) {
            freed[n++] = loop->deferred[i];
        }
        else {
            loop->deferred[kept] = loop->deferred[i];
            loop->deferred_level[kept] = loop->deferred_level[i];
            kept++;
        }
    }
    loop->deferred_size = kept;
    int rc = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (rc == 0 && gl_sched_push(loop, freed[i]) < 0) {
            rc = -1;
        }
        gl_handle_release(freed[i]);
    }
    if (freed != ready_now) {
        PyMem_Free(freed);
    }
    return rc;
}

static void
deferred_clear(gl_loop *loop)
{
    gl_handle **items = loop->deferred;
    Py_ssize_t n = loop->deferred_size;
    loop->deferred = NULL;
    loop->deferred_size = loop->deferred_capacity = 0;
    PyMem_Free(loop->deferred_level);
    loop->deferred_level = NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        gl_handle_release(items[i]);
    }
    PyMem_Free(items);
}

/* The ready queue and the handles put aside. */
void
gl_sched_clear(gl_loop *loop)
{
    ready_clear(&loop->ready);
    deferred_clear(loop);
}

int
gl_sched_traverse(gl_loop *loop, visitproc visit, void *arg)
{
    for (uint64_t i = loop->ready.head; i < loop->ready.tail; i++) {
        int rc = gl_handle_traverse_queued(
            loop->ready.items[i & loop->ready.mask], visit, arg);
        if (rc != 0) {
            return rc;
        }
    }
    for (Py_ssize_t i = 0; i < loop->deferred_size; i++) {
        int rc = gl_handle_traverse_queued(loop->deferred[i], visit, arg);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* a C watcher's protocol calls in its context                        */

void
gl_sched_enter(gl_loop *loop, PyObject *ctx, gl_sched_frame *f)
{
    f->depth = loop->dispatch_depth;
    f->ctx = NULL;
    if (ctx == NULL) {
        return;  /* its owner was cleared by the GC: no context any more */
    }
    if (PyContext_Enter(ctx) < 0) {
        /* Entered further up the stack: a callback running in it (say
         * connection_made) started a nested main loop that dispatches us.
         * The call runs where we are rather than not at all. */
        PyErr_Clear();
        return;
    }
    f->ctx = ctx;
    if (f->depth <= GL_MAX_DEPTH) {
        /* Handles of this context that a nested main loop meets must wait
         * until we return, as for a handle running in it (run_round). */
        f->outer = loop->entered[f->depth];
        loop->entered[f->depth] = ctx;
    }
}

int
gl_sched_leave(gl_loop *loop, gl_sched_frame *f, int rc)
{
    if (f->ctx == NULL) {
        return rc;
    }
    if (f->depth <= GL_MAX_DEPTH) {
        loop->entered[f->depth] = f->outer;
    }
    PyObject *exc = gl_err_fetch();  /* SystemExit/KeyboardInterrupt */
    if (PyContext_Exit(f->ctx) < 0 ||
        (loop->deferred_size > 0 && requeue_deferred(loop, f->depth) < 0)) {
        PyErr_WriteUnraisable((PyObject *)loop);
    }
    if (exc != NULL) {
        gl_err_restore(exc);
    }
    return rc;
}

/* ------------------------------------------------------------------ */
/* the timers' deadline                                              */

void
gl_sched_update_deadline(gl_loop *loop)
{
    gl_timer *top;
    while ((top = gl_timers_peek(&loop->timers)) && top->base.cancelled) {
        gl_handle_release(&gl_timers_pop(&loop->timers)->base);
    }
    int64_t deadline = top ? top->when_ns : GL_NO_DEADLINE;
    __atomic_store_n(&loop->next_deadline_ns, deadline, __ATOMIC_RELAXED);
}

static void
compact_timers(gl_loop *loop)
{
    gl_timers *t = &loop->timers;
    if (t->size > 64 && t->cancelled * 2 > t->size) {
        gl_timers_compact(t);
    }
}

static int
timer_due(gl_loop *loop, int64_t now)
{
    gl_timer *top = gl_timers_peek(&loop->timers);
    return top && (top->base.cancelled || top->when_ns <= now);
}

/* ------------------------------------------------------------------ */
/* asyncio's order for the C watchers                                 */

/* asyncio runs the callbacks queued before a poll ahead of what the poll
 * delivers; C watchers call their protocols directly, so when callbacks
 * are queued (or events are held back already) the events of this poll
 * are held back (poll.c keeps them) until the ready queue's head reaches
 * the callbacks queued after it: run_round replays them there. */
int
gl_sched_hold_watchers(gl_loop *loop)
{
    gl_poll *p = &loop->poll;
    int pending = p->nheld > p->held_next;
    int hold = pending || loop->ready.head != loop->ready.tail;
    if (hold && !pending) {
        p->nheld = p->held_next = 0;
        p->held_mark = loop->ready.tail;
    }
    return hold;
}

/* ------------------------------------------------------------------ */
/* stopping                                                           */

static void
call_quit_func(gl_loop *loop)
{
    /* The call may end the external run, which clears the field. */
    PyObject *quit = Py_NewRef(loop->quit_func);
    PyObject *r = PyObject_CallNoArgs(quit);
    if (r == NULL) {
        PyErr_WriteUnraisable(quit);
    }
    Py_XDECREF(r);
    Py_DECREF(quit);
}

/* Keeps a SystemExit/KeyboardInterrupt (the current exception) to be
 * raised by run_forever once GLib returns, and asks GLib to return. */
static void
stash_exception(gl_loop *loop)
{
    PyObject *exc = gl_err_fetch();
    if (loop->pending_exc == NULL && exc != NULL) {
        loop->pending_exc = exc;
        gl_source_set_paused(loop, 1);
    }
    else {
        Py_XDECREF(exc);
    }
    if (loop->mainloop != NULL) {
        g_main_loop_quit(loop->mainloop);
    }
    else if (loop->quit_func != NULL) {
        /* run_application(): quit the application; it re-raises after. */
        call_quit_func(loop);
    }
    else if (loop->pending_exc != NULL) {
        /* GLib is iterating us from elsewhere and nobody will re-raise it:
         * hand it to Python's unraisable hook rather than lose it. */
        gl_err_restore(loop->pending_exc);
        loop->pending_exc = NULL;
        gl_source_set_paused(loop, 0);
        PyErr_WriteUnraisable((PyObject *)loop);
    }
}

static void
quit_running(gl_loop *loop)
{
    if (loop->mainloop != NULL) {
        g_main_loop_quit(loop->mainloop);
    }
    else if (loop->quit_func != NULL) {
        call_quit_func(loop);
    }
}

/* ------------------------------------------------------------------ */
/* one batch of rounds                                                */

static void
run_timed(gl_loop *loop, gl_handle *h, int *rc)
{
    int64_t t0 = gl_monotonic_ns();
    *rc = gl_handle_run(h);
    double dt = (double)(gl_monotonic_ns() - t0) / 1e9;
    if (*rc == 0 && dt >= loop->slow_callback_duration) {
        PyObject *res = PyObject_CallMethod((PyObject *)loop,
                                            "_log_slow_callback", "Od",
                                            (PyObject *)h, dt);
        if (res == NULL) {
            PyErr_WriteUnraisable((PyObject *)loop);
        }
        Py_XDECREF(res);
    }
}

/* Runs one handle taken off the ready queue or the timer heap, and
 * releases the caller's reference.  In a nested dispatch, a handle whose
 * Context a callback further up the stack has entered (a step of the task
 * that started the nested main loop) cannot run now: it waits, in order,
 * until that callback returns. */
static int
run_one(gl_loop *loop, gl_handle *h, int depth)
{
    if (h->cancelled) {
        gl_handle_release(h);
        return 0;
    }
    if (depth > 1) {
        int level = entered_level(loop, h->context, depth);
        if (level > 0) {
            if (defer_handle(loop, h, level) < 0) {
                gl_handle_release(h);
                return -1;
            }
            return 0;
        }
    }
    int rc = 0;
    gl_handle *outer_handle = loop->current_handle;
    loop->current_handle = h;
    if (depth <= GL_MAX_DEPTH) {
        loop->entered[depth] = h->context;
    }
    if (loop->debug) {
        run_timed(loop, h, &rc);
    }
    else {
        rc = gl_handle_run(h);
    }
    if (depth <= GL_MAX_DEPTH) {
        loop->entered[depth] = NULL;
    }
    loop->current_handle = outer_handle;
    gl_handle_release(h);
    if (loop->deferred_size > 0 && requeue_deferred(loop, depth) < 0) {
        rc = -1;
    }
    return rc < 0 ? -1 : 0;
}

static void glib_turn(gl_loop *loop, int fair);

/* A round that outlives its batch's budget (300,000 callbacks queued at
 * once, a call_soon_threadsafe flood) is cut every GL_CUT_EVERY callbacks:
 * GLib gets the turn it is owed (see run_rounds), and timers that fell due
 * run there, with the callbacks they schedule (a sleeping task's wake-up)
 * moved to the front of the queue: a sleep ends on time instead of after
 * the whole round.  A round within the budget keeps asyncio's order. */
#define GL_CUT_EVERY 64

/* Runs, in order, the timers due at `due` that were scheduled before the
 * sequence number `seq_end`, straight from the heap. */
static int
run_due_timers(gl_loop *loop, int64_t due, uint64_t seq_end, int depth)
{
    gl_timer *top;
    while ((top = gl_timers_peek(&loop->timers)) &&
           (top->base.cancelled || (top->when_ns <= due && top->seq < seq_end))) {
        if (run_one(loop, &gl_timers_pop(&loop->timers)->base, depth) < 0) {
            return -1;
        }
        if (loop->closed || loop->pending_exc != NULL) {
            return 0;
        }
    }
    return 0;
}

static int
cut_round(gl_loop *loop, int64_t now, int depth)
{
    if (now - loop->fair_since_ns >= GL_FAIR_STRETCH_NS) {
        glib_turn(loop, 1);
        if (loop->closed || loop->pending_exc != NULL) {
            return 0;
        }
        now = gl_monotonic_ns();
    }
    gl_ready *q = &loop->ready;
    uint64_t mark = q->tail;
    if (run_due_timers(loop, now, UINT64_MAX, depth) < 0) {
        return -1;
    }
    if (loop->closed || loop->pending_exc != NULL) {
        return 0;
    }
    /* Move what the timers queued from the tail to the head, in order
     * (with whatever another thread pushed while a timer's callback let
     * the GIL go).  The GIL is held: no other thread pushes meanwhile. */
    uint64_t n = q->tail - mark;
    if (n == 0) {
        return 0;
    }
    gl_handle *small[16];
    gl_handle **moved = n <= 16 ? small : PyMem_New(gl_handle *, n);
    if (moved == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (uint64_t i = 0; i < n; i++) {
        moved[i] = q->items[(mark + i) & q->mask];
    }
    /* the slots before head are free: the queue holds no more than it did */
    uint64_t head = q->head - n;
    for (uint64_t i = 0; i < n; i++) {
        q->items[(head + i) & q->mask] = moved[i];
    }
    __atomic_store_n(&q->head, head, __ATOMIC_RELAXED);
    __atomic_store_n(&q->tail, mark, __ATOMIC_RELEASE);
    if (moved != small) {
        PyMem_Free(moved);
    }
    return 0;
}

/* Runs the handles that were ready when the round started (`start`), then
 * the timers due by then: where asyncio's _run_once appends them to its
 * ready queue, after the callbacks queued before and the I/O the round's
 * poll found.  They stay in the heap until then, so a cut can run them
 * early. */
static int
run_round(gl_loop *loop, int64_t start, int64_t budget_end)
{
    gl_ready *q = &loop->ready;
    uint64_t end = q->tail;
    uint64_t seq_end = loop->timers.next_seq;
    int depth = loop->dispatch_depth;
    unsigned int count = 0;
    for (;;) {
        /* C watcher events held back by the poll run where that poll's
         * own callbacks begin (gl_poll_dispatch) */
        if (loop->poll.nheld > loop->poll.held_next &&
            q->head >= loop->poll.held_mark) {
            if (gl_poll_run_held(loop) < 0) {
                return -1;
            }
            if (loop->closed || loop->pending_exc != NULL) {
                return 0;
            }
        }
        if (q->head >= end) {
            return run_due_timers(loop, start, seq_end, depth);
        }
        if (++count % GL_CUT_EVERY == 0) {
            int64_t now = gl_monotonic_ns();
            if (now >= budget_end && cut_round(loop, now, depth) < 0) {
                return -1;
            }
            if (loop->closed || loop->pending_exc != NULL) {
                return 0;
            }
            if (q->head >= end) {
                continue;
            }
        }
        gl_handle *h = q->items[q->head & q->mask];
        __atomic_store_n(&q->head, q->head + 1, __ATOMIC_RELAXED);
        if (run_one(loop, h, depth) < 0) {
            return -1;
        }
        if (loop->closed || loop->pending_exc != NULL) {
            /* closed by a finalizer, or a nested dispatch kept a fatal
             * exception: run nothing more until run_forever raises it */
            return 0;
        }
    }
    return 0;
}

/* Around a nested dispatch: the task whose step started the nested main
 * loop is asyncio's current task; the tasks run inside must not see it
 * (asyncio would refuse to enter them). */
static PyObject *
swap_current_task(gl_loop *loop, PyObject *task)
{
    gl_state *st = loop->st;
    if (st->swap_current_task != NULL) {
        /* 3.12's _swap_current_task(loop, None) raises KeyError when no task
         * is current: ask first, and swap only a real task out or in. */
        if (task == Py_None) {
            PyObject *current = PyObject_CallOneArg(st->current_task, (PyObject *)loop);
            if (current == NULL || current == Py_None) {
                return current;
            }
            Py_DECREF(current);
        }
        return PyObject_CallFunctionObjArgs(st->swap_current_task,
                                            (PyObject *)loop, task, NULL);
    }
    /* 3.11: the C Task's dict of current tasks, keyed by loop */
    PyObject *tasks = st->current_tasks;
    PyObject *old = PyDict_GetItemWithError(tasks, (PyObject *)loop);
    if (old == NULL && PyErr_Occurred()) {
        return NULL;
    }
    old = Py_NewRef(old ? old : Py_None);
    int rc;
    if (task != Py_None) {
        rc = PyDict_SetItem(tasks, (PyObject *)loop, task);
    }
    else {
        rc = old != Py_None ? PyDict_DelItem(tasks, (PyObject *)loop) : 0;
    }
    if (rc < 0) {
        Py_DECREF(old);
        return NULL;
    }
    return old;
}

/* When GLib iterates the context outside run_forever/run_application
 * (GLib.MainLoop().run(), MainContext.iteration()), callbacks must still
 * find this loop with asyncio.get_running_loop(). */
static PyObject *
enter_running_loop(gl_loop *loop)
{
    gl_state *st = loop->st;
    PyObject *prev = PyObject_CallNoArgs(st->get_running_loop);
    if (prev == NULL) {
        return NULL;
    }
    if (prev != (PyObject *)loop) {
        PyObject *r = PyObject_CallOneArg(st->set_running_loop, (PyObject *)loop);
        if (r == NULL) {
            Py_DECREF(prev);
            return NULL;
        }
        Py_DECREF(r);
    }
    return prev;
}

static void
leave_running_loop(gl_loop *loop, PyObject *prev)
{
    if (prev != (PyObject *)loop) {
        PyObject *r = PyObject_CallOneArg(loop->st->set_running_loop, prev);
        if (r == NULL) {
            PyErr_WriteUnraisable((PyObject *)loop);
        }
        Py_XDECREF(r);
    }
    Py_DECREF(prev);
}

static void run_rounds(gl_loop *loop, int epoll_readable);

/* asyncio ran dry.  The commonest way GLib code hands asyncio work is a
 * GLib callback (an idle, a Gio completion) resolving a future that a task
 * awaits: returning to GLib then costs one iteration to run that callback
 * and a second one to dispatch us again.  Running one non-blocking
 * iteration of our own context from here (a nested iteration, which the
 * source supports) dispatches those callbacks at once, and if they queued
 * asyncio work the batch goes on: one GLib iteration per hand-off instead
 * of two.  When such turns keep finding nothing for asyncio (I/O-driven
 * loads), they are tried exponentially less often, up to every 64th time,
 * so they cost next to nothing there. */
static int
glib_turn_gave_work(gl_loop *loop)
{
    if (loop->glib_turn_skip > 0) {
        loop->glib_turn_skip--;
        return 0;
    }
    if (loop->dispatch_depth > 1 || loop->closed || loop->pending_exc != NULL) {
        return 0;
    }
    glib_turn(loop, 0);
    if (loop->closed || loop->pending_exc != NULL || loop->stopping) {
        return loop->stopping && !loop->closed;
    }
    if (loop->ready.head != loop->ready.tail) {
        loop->glib_turn_backoff = 0;
        return 1;
    }
    loop->glib_turn_backoff = loop->glib_turn_backoff ? loop->glib_turn_backoff * 2 : 1;
    if (loop->glib_turn_backoff > 64) {
        loop->glib_turn_backoff = 64;
    }
    loop->glib_turn_skip = loop->glib_turn_backoff;
    return 0;
}

/* Non-blocking iterations of our context from inside our dispatch, with
 * our own source sitting out (in_glib_turn holds the g_main_depth() the
 * turn's sources run at; a main loop nested in one of them dispatches
 * asyncio again, and reads the deadline brought up to date here).  C
 * sources run in the turn (GTK
 * drawing, Gio, GStreamer) must not hold other Python threads back: the
 * GIL is released, as GLib's own loop would have it.
 *
 * A hand-off turn (glib_turn_gave_work) is one plain iteration.  A fair
 * turn must let every ready source run, whatever its priority: GLib counts
 * a source whose fd polled readable as ready whatever check says, so the
 * epoll fd is muted for it; and an iteration dispatches only the highest
 * priority that is ready while a GTK frame is a chain of sources (flush,
 * then layout and paint at 120): a few iterations, while they find
 * something, let the chain finish in one turn. */
static void
glib_turn(gl_loop *loop, int fair)
{
    gl_sched_update_deadline(loop);
    int outer = loop->in_glib_turn;
    loop->in_glib_turn = g_main_depth();
    if (fair) {
        gl_source_mute_turn(loop);
    }
    Py_BEGIN_ALLOW_THREADS
    for (int i = 0; i < (fair ? GL_TURN_ITERATIONS : 1); i++) {
        if (!g_main_context_iteration(loop->context, FALSE)) {
            break;
        }
    }
    Py_END_ALLOW_THREADS
    if (fair) {
        gl_source_unmute_turn(loop);
    }
    loop->in_glib_turn = outer;
    loop->fair_since_ns = gl_monotonic_ns();
}

void
gl_sched_run_batch(gl_loop *loop, int epoll_readable)
{
    if (loop->closed || loop->pending_exc != NULL) {
        return;
    }
    PyObject *prev_loop = NULL, *outer_task = NULL;
    PyObject *exc = gl_err_fetch();  /* GLib may call us with one pending */
    /* Even a running loop: another loop on the same context (every loop
     * made on the main thread shares GLib's default one) may be the one
     * whose dispatch runs ours, and it made itself the running loop. */
    prev_loop = enter_running_loop(loop);
    if (prev_loop == NULL) {
        PyErr_WriteUnraisable((PyObject *)loop);
        goto out;
    }
    loop->dispatch_depth++;
    if (loop->dispatch_depth > 1) {
        outer_task = swap_current_task(loop, Py_None);
        if (outer_task == NULL) {
            PyErr_WriteUnraisable((PyObject *)loop);
            loop->dispatch_depth--;
            goto restore_loop;
        }
    }
    run_rounds(loop, epoll_readable);
    if (outer_task != NULL && outer_task != Py_None) {
        PyObject *r = swap_current_task(loop, outer_task);
        if (r == NULL) {
            PyErr_WriteUnraisable((PyObject *)loop);
        }
        Py_XDECREF(r);
    }
    Py_XDECREF(outer_task);
    loop->dispatch_depth--;
restore_loop:
    if (prev_loop != NULL) {
        leave_running_loop(loop, prev_loop);
    }
out:
    if (exc != NULL) {
        gl_err_restore(exc);
    }
}

static void
run_rounds(gl_loop *loop, int epoll_readable)
{
    int64_t now = gl_monotonic_ns();
    int64_t budget_end = now + loop->batch_budget_ns;
    /* Fairness.  GLib's priorities are strict: while our source is ready,
     * no source of a lower priority (GTK's redraw at 120, idles at 200)
     * is dispatched, and under load it is always ready.  So asyncio counts
     * how long it has worked without GLib getting an iteration of its own
     * (fair_since_ns; source_check resets it when an iteration passes us
     * by) and, once that reaches GL_FAIR_STRETCH_NS, gives GLib one turn
     * from here.  A batch that starts long after the last one ended found
     * GLib idle or busy elsewhere: the stretch starts again. */
    if (loop->fair_since_ns == 0 ||
        now - loop->batch_end_ns >= GL_FAIR_STRETCH_NS) {
        loop->fair_since_ns = now;
    }
    for (;;) {
        gl_poll_drain_timer(&loop->poll);
        /* only a poll in this round may say C watchers ran (not a stale
         * value from before the last transport went away) */
        loop->poll.watchers_ran = 0;
        if ((loop->poll.active > 0 || epoll_readable) &&
            gl_poll_dispatch(loop) < 0) {
            goto fail;
        }
        epoll_readable = 0;
        now = gl_monotonic_ns();
        compact_timers(loop);
        if (run_round(loop, now, budget_end) < 0) {
            goto fail;
        }
        if (loop->closed || loop->pending_exc != NULL) {
            break;
        }
        if (loop->stopping) {
            loop->stopping = 0;
            quit_running(loop);
            break;
        }
        now = gl_monotonic_ns();
        if (now - loop->fair_since_ns >= GL_FAIR_STRETCH_NS) {
            glib_turn(loop, 1);
            if (loop->closed || loop->pending_exc != NULL) {
                break;
            }
            now = loop->fair_since_ns;
        }
        if (now >= budget_end) {
            break;
        }
        /* A transport's callback that wrote usually made another socket
         * of this loop readable (both ends of a loopback connection, or
         * a reply): poll again before handing the turn to GLib. */
        if (loop->ready.head == loop->ready.tail && !timer_due(loop, now) &&
            !loop->poll.watchers_ran && !glib_turn_gave_work(loop)) {
            break;
        }
    }
    goto done;
fail:
    stash_exception(loop);
done:
    loop->batch_end_ns = now;
    if (!loop->closed) {
        gl_sched_update_deadline(loop);
    }
}
