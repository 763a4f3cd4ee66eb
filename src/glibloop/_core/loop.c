/* The Loop type: lifecycle, scheduling, the ready queue, batches of
 * asyncio rounds, readers and writers, and the thread-safe queue.
 * Cold paths that are naturally coroutines or logging (shutdown_*,
 * run_in_executor, the default exception handler) live in _loop.py. */
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>
#include <sys/epoll.h>
#include <structmember.h>

#define GL_DEFAULT_BUDGET_NS (1 * GL_NS_PER_MS)
/* asyncio's longest stretch of work before GLib gets a turn (run_rounds) */
#define GL_FAIR_STRETCH_NS (1 * GL_NS_PER_MS)
#define GL_TURN_ITERATIONS 4     /* GLib iterations in one turn, at most */
/* call_soon_threadsafe's flow control: handles queued, pause of a pusher */
#define GL_FLOOD_HIGH 2048
#define GL_FLOOD_PAUSE_US 50

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
gl_loop_push_ready(gl_loop *loop, gl_handle *h)
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
        if (rc == 0 && gl_loop_push_ready(loop, freed[i]) < 0) {
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

/* ------------------------------------------------------------------ */
/* contexts of the C watchers' protocol calls                         */

PyObject *
gl_loop_context(PyObject *context)
{
    if (context == NULL || context == Py_None) {
        return PyContext_CopyCurrent();
    }
    if (!PyContext_CheckExact(context)) {
        PyErr_Format(PyExc_TypeError,
                     "context must be a contextvars.Context object, not %.200s",
                     Py_TYPE(context)->tp_name);
        return NULL;
    }
    return Py_NewRef(context);
}

void
gl_loop_enter(gl_loop *loop, PyObject *ctx, gl_loop_frame *f)
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
gl_loop_leave(gl_loop *loop, gl_loop_frame *f, int rc)
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
/* errors and checks                                                  */

int
gl_loop_check_not_closed(gl_loop *loop)
{
    if (loop->context == NULL && !loop->closed) {
        PyErr_SetString(PyExc_RuntimeError,
                        "the loop was not initialised: Loop.__init__() was not called");
        return -1;
    }
    if (loop->closed) {
        PyErr_SetString(PyExc_RuntimeError, "Event loop is closed");
        return -1;
    }
    return 0;
}

static int
check_thread(gl_loop *loop)
{
    if (loop->debug && loop->running &&
        loop->thread_id != PyThread_get_thread_ident()) {
        PyErr_SetString(PyExc_RuntimeError,
                        "Non-thread-safe operation invoked on an event loop "
                        "other than the current one");
        return -1;
    }
    return 0;
}

static int
is_coroutine_function(PyObject *cb)
{
    if (PyMethod_Check(cb)) {
        cb = PyMethod_GET_FUNCTION(cb);
    }
    if (PyFunction_Check(cb)) {
        PyCodeObject *code = (PyCodeObject *)PyFunction_GET_CODE(cb);
        return (code->co_flags & CO_COROUTINE) != 0;
    }
    return 0;
}

static int
check_callback(PyObject *cb, const char *method)
{
    if (PyCoro_CheckExact(cb) || is_coroutine_function(cb)) {
        PyErr_Format(PyExc_TypeError, "coroutines cannot be used with %s()",
                     method);
        return -1;
    }
    if (!PyCallable_Check(cb)) {
        PyErr_Format(PyExc_TypeError,
                     "a callable object was expected by %s(), got %R",
                     method, cb);
        return -1;
    }
    return 0;
}

int
gl_loop_report_error(gl_loop *loop, PyObject *exc, gl_handle *h,
                     PyObject *transport, PyObject *protocol, PyObject *sock,
                     const char *format, ...)
{
    if (exc != NULL && gl_exc_is_fatal(exc)) {
        gl_err_restore(Py_NewRef(exc));
        return -1;
    }
    gl_state *st = loop->st;
    va_list va;
    va_start(va, format);
    PyObject *message = PyUnicode_FromFormatV(format, va);
    va_end(va);
    PyObject *ctx = message ? PyDict_New() : NULL;
    if (ctx == NULL ||
        PyDict_SetItem(ctx, st->s_message, message) < 0 ||
        (exc && PyDict_SetItem(ctx, st->s_exception, exc) < 0) ||
        (h && PyDict_SetItem(ctx, st->s_handle, (PyObject *)h) < 0) ||
        (h && h->source_traceback &&
         PyDict_SetItem(ctx, st->s_source_traceback, h->source_traceback) < 0) ||
        (transport && PyDict_SetItem(ctx, st->s_transport, transport) < 0) ||
        (protocol && PyDict_SetItem(ctx, st->s_protocol, protocol) < 0) ||
        (sock && PyDict_SetItem(ctx, st->s_socket, sock) < 0)) {
        Py_XDECREF(message);
        Py_XDECREF(ctx);
        PyErr_WriteUnraisable((PyObject *)loop);
        return 0;
    }
    Py_DECREF(message);
    PyObject *res = PyObject_CallMethodOneArg(
        (PyObject *)loop, st->s_call_exception_handler, ctx);
    Py_DECREF(ctx);
    if (res == NULL) {
        /* asyncio lets SystemExit/KeyboardInterrupt from a handler escape
         * the loop; anything else the handler machinery already logged. */
        if (PyErr_ExceptionMatches(PyExc_SystemExit) ||
            PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
            return -1;
        }
        PyErr_WriteUnraisable((PyObject *)loop);
        return 0;
    }
    Py_DECREF(res);
    return 0;
}

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
/* futures and call_soon for the C files                              */

PyObject *
gl_loop_future_new(gl_loop *loop)
{
    PyObject *args[1] = {(PyObject *)loop};
    return PyObject_Vectorcall(loop->st->future_type, args, 0,
                               loop->st->kwnames_loop);
}

int
gl_loop_future_set_result(gl_state *st, PyObject *fut, PyObject *value)
{
    PyObject *r = PyObject_CallMethodOneArg(fut, st->s_set_result, value);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

int
gl_loop_future_set_exception(gl_state *st, PyObject *fut, PyObject *exc)
{
    PyObject *r = PyObject_CallMethodOneArg(fut, st->s_set_exception, exc);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

int
gl_loop_future_done(gl_state *st, PyObject *fut)
{
    PyObject *r = PyObject_CallMethodNoArgs(fut, st->s_done);
    if (r == NULL) {
        return -1;
    }
    int done = PyObject_IsTrue(r);
    Py_DECREF(r);
    return done;
}

int
gl_loop_call_soon(gl_loop *loop, PyObject *callable, PyObject *args,
                  PyObject *context)
{
    gl_handle *h = gl_handle_new(loop->st, (PyObject *)loop, callable, args,
                                 context);
    if (h == NULL) {
        return -1;
    }
    int rc = gl_loop_push_ready(loop, h);
    /* The queue's reference keeps it; untracked while queued as any
     * call_soon handle (see gl_handle_release). */
    Py_DECREF(h);
    return rc;
}

/* ------------------------------------------------------------------ */
/* timers                                                             */

void
gl_loop_update_deadline(gl_loop *loop)
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
    gl_loop_update_deadline(loop);
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
gl_loop_run_batch(gl_loop *loop, int epoll_readable)
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
        gl_loop_update_deadline(loop);
    }
}

/* ------------------------------------------------------------------ */
/* argument helpers                                                   */

static int
kw_is(PyObject *name, PyObject *interned)
{
    return name == interned ||
           PyUnicode_Compare(name, interned) == 0;
}

/* Parses the only keyword of call_soon & co, `context`. */
static int
parse_context_kw(gl_loop *loop, PyObject *const *args, Py_ssize_t nargs,
                 PyObject *kwnames, const char *method, PyObject **context)
{
    *context = NULL;
    if (kwnames == NULL) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(kwnames); i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i);
        if (!kw_is(name, loop->st->s_context)) {
            PyErr_Format(PyExc_TypeError,
                         "%s() got an unexpected keyword argument '%U'",
                         method, name);
            return -1;
        }
        *context = args[nargs + i];
    }
    if (*context == Py_None) {
        *context = NULL;
    }
    if (*context != NULL && !PyContext_CheckExact(*context)) {
        PyErr_Format(PyExc_TypeError,
                     "%s(): context must be a contextvars.Context, not %s",
                     method, Py_TYPE(*context)->tp_name);
        return -1;
    }
    return 0;
}

static PyObject *
args_tuple(PyObject *const *args, Py_ssize_t n)
{
    PyObject *t = PyTuple_New(n);
    if (t == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyTuple_SET_ITEM(t, i, Py_NewRef(args[i]));
    }
    return t;
}

static int
need_args(Py_ssize_t nargs, Py_ssize_t min, const char *method,
          const char *names)
{
    if (nargs < min) {
        PyErr_Format(PyExc_TypeError,
                     "%s() missing required positional argument(s): %s",
                     method, names);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* call_soon and timers                                               */

static PyObject *
schedule_soon(gl_loop *loop, PyObject *const *args, Py_ssize_t nargs,
              PyObject *kwnames, const char *method)
{
    PyObject *context;
    if (need_args(nargs, 1, method, "'callback'") < 0 ||
        parse_context_kw(loop, args, nargs, kwnames, method, &context) < 0 ||
        gl_loop_check_not_closed(loop) < 0 ||
        check_callback(args[0], method) < 0) {
        return NULL;
    }
    PyObject *cbargs = args_tuple(args + 1, nargs - 1);
    if (cbargs == NULL) {
        return NULL;
    }
    gl_handle *h = gl_handle_new(loop->st, (PyObject *)loop, args[0], cbargs,
                                 context);
    Py_DECREF(cbargs);
    return (PyObject *)h;
}

static PyObject *
loop_call_soon(gl_loop *loop, PyObject *const *args, Py_ssize_t nargs,
               PyObject *kwnames)
{
    if (loop->debug && check_thread(loop) < 0) {
        return NULL;
    }
    gl_handle *h = (gl_handle *)schedule_soon(loop, args, nargs, kwnames,
                                              "call_soon");
    if (h == NULL) {
        return NULL;
    }
    if (gl_loop_push_ready(loop, h) < 0) {
        Py_DECREF(h);
        return NULL;
    }
    return (PyObject *)h;
}

static PyObject *
loop_call_soon_threadsafe(gl_loop *loop, PyObject *const *args,
                          Py_ssize_t nargs, PyObject *kwnames)
{
    gl_handle *h = (gl_handle *)schedule_soon(loop, args, nargs, kwnames,
                                              "call_soon_threadsafe");
    if (h == NULL) {
        return NULL;
    }
    /* The same ready queue as call_soon, so callbacks keep the order they
     * were scheduled in, whatever the thread.  Every push holds the GIL
     * (CPython re-enables it for extensions that do not declare
     * free-threading support), and GLib's prepare/check read only the
     * queue's counters: no lock is needed.  Wake GLib's poll when the loop
     * might be sleeping: the queue was empty and we are not its thread. */
    int was_empty = loop->ready.head == loop->ready.tail;
    if (gl_loop_push_ready(loop, h) < 0) {
        Py_DECREF(h);
        return NULL;
    }
    int foreign = !(loop->running &&
                    loop->thread_id == PyThread_get_thread_ident());
    if (was_empty && foreign) {
        gl_source_wakeup(loop);
    }
    else if (foreign && loop->running &&
             loop->ready.tail - loop->ready.head > GL_FLOOD_HIGH) {
        /* Flow control.  Threads that push faster than the loop runs would
         * hold the GIL most of the time (each keeps it for the switch
         * interval, 5 ms, the loop thread gets one turn in five) and the
         * queue would grow without bound: timers and everything else the
         * loop does would fall behind.  Past the high-water mark a pushing
         * thread lets the GIL go for a moment, so the loop thread takes it. */
        Py_BEGIN_ALLOW_THREADS
        g_usleep(GL_FLOOD_PAUSE_US);
        Py_END_ALLOW_THREADS
    }
    return (PyObject *)h;
}

static int64_t
seconds_to_ns(double s)
{
    if (isnan(s)) {
        return GL_NO_DEADLINE - 1;  /* never: callers reject NaN first */
    }
    /* Round up so a timer never fires before its time. */
    double ns = ceil(s * 1e9);
    if (ns >= 9.2e18) {
        return GL_NO_DEADLINE - 1;
    }
    if (ns <= -9.2e18) {
        return INT64_MIN + 1;
    }
    return (int64_t)ns;
}

static PyObject *
schedule_timer(gl_loop *loop, double when, int64_t when_ns,
               PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
               const char *method)
{
    PyObject *context;
    if (parse_context_kw(loop, args, nargs, kwnames, method, &context) < 0 ||
        gl_loop_check_not_closed(loop) < 0 ||
        (loop->debug && check_thread(loop) < 0) ||
        check_callback(args[0], method) < 0) {
        return NULL;
    }
    PyObject *cbargs = args_tuple(args + 1, nargs - 1);
    if (cbargs == NULL) {
        return NULL;
    }
    gl_timer *t = gl_timer_new(loop->st, (PyObject *)loop, when, when_ns,
                               args[0], cbargs, context);
    Py_DECREF(cbargs);
    if (t == NULL) {
        return NULL;
    }
    if (gl_timers_push(&loop->timers, t) < 0) {
        Py_DECREF(t);
        return NULL;
    }
    if (when_ns < __atomic_load_n(&loop->next_deadline_ns, __ATOMIC_RELAXED)) {
        __atomic_store_n(&loop->next_deadline_ns, when_ns, __ATOMIC_RELAXED);
    }
    return (PyObject *)t;
}

static int
number_arg(PyObject *v, const char *what, double *out)
{
    if (v == Py_None) {
        PyErr_Format(PyExc_TypeError, "%s %s be None", what,
                     strcmp(what, "delay") == 0 ? "must not" : "cannot");
        return -1;
    }
    if (PyFloat_CheckExact(v) && !isnan(PyFloat_AS_DOUBLE(v))) {
        *out = PyFloat_AS_DOUBLE(v);
        return 0;
    }
    if (!PyNumber_Check(v)) {
        PyErr_Format(PyExc_TypeError, "%s must be a number, not %s", what,
                     Py_TYPE(v)->tp_name);
        return -1;
    }
    *out = PyFloat_AsDouble(v);
    if (*out == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    if (isnan(*out)) {
        PyErr_Format(PyExc_ValueError, "%s must not be NaN", what);
        return -1;
    }
    return 0;
}

static PyObject *
loop_call_later(gl_loop *loop, PyObject *const *args, Py_ssize_t nargs,
                PyObject *kwnames)
{
    double delay;
    if (need_args(nargs, 2, "call_later", "'delay' and 'callback'") < 0 ||
        number_arg(args[0], "delay", &delay) < 0) {
        return NULL;
    }
    int64_t now = gl_monotonic_ns();
    int64_t delay_ns = seconds_to_ns(delay);
    int64_t when_ns = (delay_ns > 0 && now > GL_NO_DEADLINE - 1 - delay_ns)
        ? GL_NO_DEADLINE - 1 : now + delay_ns;
    double when = (double)now / 1e9 + delay;
    return schedule_timer(loop, when, when_ns, args + 1, nargs - 1, kwnames,
                          "call_later");
}

static PyObject *
loop_call_at(gl_loop *loop, PyObject *const *args, Py_ssize_t nargs,
             PyObject *kwnames)
{
    double when;
    if (need_args(nargs, 2, "call_at", "'when' and 'callback'") < 0 ||
        number_arg(args[0], "when", &when) < 0) {
        return NULL;
    }
    return schedule_timer(loop, when, seconds_to_ns(when), args + 1,
                          nargs - 1, kwnames, "call_at");
}

static PyObject *
loop_time(gl_loop *Py_UNUSED(loop), PyObject *Py_UNUSED(ignored))
{
    return PyFloat_FromDouble((double)gl_monotonic_ns() / 1e9);
}

/* ------------------------------------------------------------------ */
/* readers and writers                                                */

/* selectors' _fileobj_to_fd: the fd of an int or of obj.fileno(), or
 * -1 with an exception set.  Two numbers that are no fd are told apart, as
 * asyncio treats them apart: GL_FD_HUGE, an int too large for an fd (no
 * exception set: asyncio finds no registration for it, and epoll refuses
 * to register it), and GL_FD_NEGATIVE (ValueError set: a closed socket's
 * fileno(), which asyncio looks up by the object). */
#define GL_FD_HUGE (-2)
#define GL_FD_NEGATIVE (-3)

static int
fileobj_to_fd(PyObject *obj)
{
    PyObject *num;
    if (PyLong_Check(obj)) {
        num = Py_NewRef(obj);
    }
    else {
        num = PyObject_CallMethod(obj, "fileno", NULL);
        if (num == NULL || !PyLong_Check(num)) {
            if (num == NULL && !PyErr_ExceptionMatches(PyExc_AttributeError) &&
                !PyErr_ExceptionMatches(PyExc_TypeError) &&
                !PyErr_ExceptionMatches(PyExc_ValueError)) {
                return -1;
            }
            Py_XDECREF(num);
            PyErr_Clear();
            PyErr_Format(PyExc_ValueError, "Invalid file object: %R", obj);
            return -1;
        }
    }
    int overflow;
    long fd = PyLong_AsLongAndOverflow(num, &overflow);
    if (overflow > 0 || fd > INT32_MAX) {
        Py_DECREF(num);
        return GL_FD_HUGE;
    }
    if (overflow < 0 || fd < 0) {
        PyErr_Format(PyExc_ValueError, "Invalid file descriptor: %S", num);
        Py_DECREF(num);
        return GL_FD_NEGATIVE;
    }
    Py_DECREF(num);
    return (int)fd;
}

static PyObject *
add_fd_handler(gl_loop *loop, PyObject *const *args, Py_ssize_t nargs,
               int is_writer)
{
    const char *method = is_writer ? "add_writer" : "add_reader";
    if (need_args(nargs, 2, method, "'fd' and 'callback'") < 0) {
        return NULL;
    }
    int fd = fileobj_to_fd(args[0]);
    if (fd == GL_FD_HUGE) {
        /* as epoll.register() answers it */
        PyErr_SetString(PyExc_OverflowError, "Python int too large to convert to C int");
        return NULL;
    }
    if (fd < 0 || gl_loop_check_not_closed(loop) < 0 ||
        gl_poll_check_not_owned(&loop->poll, fd, args[0]) < 0 ||
        check_callback(args[1], method) < 0) {
        return NULL;
    }
    PyObject *cbargs = args_tuple(args + 2, nargs - 2);
    if (cbargs == NULL) {
        return NULL;
    }
    gl_handle *h = gl_handle_new(loop->st, (PyObject *)loop, args[1], cbargs,
                                 NULL);
    Py_DECREF(cbargs);
    if (h == NULL) {
        return NULL;
    }
    /* Readers and writers stay registered for long: let the GC see them. */
    PyObject_GC_Track(h);
    int rc = gl_poll_set(&loop->poll, fd, is_writer, h, args[0]);
    Py_DECREF(h);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
loop_add_reader(gl_loop *loop, PyObject *const *args, Py_ssize_t nargs)
{
    return add_fd_handler(loop, args, nargs, 0);
}

static PyObject *
loop_add_writer(gl_loop *loop, PyObject *const *args, Py_ssize_t nargs)
{
    return add_fd_handler(loop, args, nargs, 1);
}

static PyObject *
remove_fd_handler(gl_loop *loop, PyObject *fileobj, int is_writer)
{
    int fd = fileobj_to_fd(fileobj);
    if (fd == -1) {
        return NULL;
    }
    if (fd == GL_FD_NEGATIVE) {
        if (loop->closed) {
            PyErr_Clear();
            Py_RETURN_FALSE;
        }
        /* A closed socket (fileno() is -1) is found by the object it was
         * registered with, as selectors find it. */
        int found = PyLong_Check(fileobj) ? -1 : gl_poll_find_fileobj(&loop->poll, fileobj);
        if (found < 0) {
            return NULL;
        }
        PyErr_Clear();
        return PyBool_FromLong(gl_poll_remove(&loop->poll, found, is_writer));
    }
    if (fd == GL_FD_HUGE || loop->closed) {
        Py_RETURN_FALSE;
    }
    if (gl_poll_check_not_owned(&loop->poll, fd, fileobj) < 0) {
        return NULL;
    }
    int rc = gl_poll_remove(&loop->poll, fd, is_writer);
    if (rc < 0) {
        return NULL;
    }
    return PyBool_FromLong(rc);
}

static PyObject *
loop_remove_reader(gl_loop *loop, PyObject *fileobj)
{
    return remove_fd_handler(loop, fileobj, 0);
}

static PyObject *
loop_remove_writer(gl_loop *loop, PyObject *fileobj)
{
    return remove_fd_handler(loop, fileobj, 1);
}

/* ------------------------------------------------------------------ */
/* futures and tasks                                                  */

static PyObject *
loop_create_future(gl_loop *loop, PyObject *Py_UNUSED(ignored))
{
    return gl_loop_future_new(loop);
}

static PyObject *
create_task_with_factory(gl_loop *loop, PyObject *coro, PyObject *kwargs)
{
    PyObject *args = PyTuple_Pack(2, (PyObject *)loop, coro);
    if (args == NULL) {
        return NULL;
    }
#if PY_VERSION_HEX >= 0x030E0000
    PyObject *task = PyObject_Call(loop->task_factory, args, kwargs);
    Py_DECREF(args);
    return task;
#else
    /* Before 3.14 a factory gets the context only when one was given, and
     * the name is set on the task it returns. */
    gl_state *st = loop->st;
    PyObject *name = NULL, *context = NULL, *factory_kw = NULL;
    if (kwargs != NULL) {
        name = PyDict_GetItemWithError(kwargs, st->s_name);
        context = PyDict_GetItemWithError(kwargs, st->s_context);
        if (PyErr_Occurred()) {
            Py_DECREF(args);
            return NULL;
        }
    }
    if (context != NULL && context != Py_None) {
        factory_kw = PyDict_New();
        if (factory_kw == NULL ||
            PyDict_SetItem(factory_kw, st->s_context, context) < 0) {
            Py_XDECREF(factory_kw);
            Py_DECREF(args);
            return NULL;
        }
    }
    PyObject *task = PyObject_Call(loop->task_factory, args, factory_kw);
    Py_DECREF(args);
    Py_XDECREF(factory_kw);
    if (task != NULL && name != NULL && name != Py_None) {
        PyObject *r = PyObject_CallMethodOneArg(task, st->s_set_name, name);
        if (r == NULL) {
            Py_CLEAR(task);
        }
        Py_XDECREF(r);
    }
    return task;
#endif
}

static PyObject *
loop_create_task(gl_loop *loop, PyObject *args, PyObject *kwargs)
{
    /* create_task(coro, **kwargs): coro may come by keyword too.  kw is our
     * own copy of the keywords (without coro), passed on to the task. */
    PyObject *kw = kwargs ? PyDict_Copy(kwargs) : PyDict_New();
    if (kw == NULL) {
        return NULL;
    }
    PyObject *coro = NULL;
    if (PyTuple_GET_SIZE(args) == 1) {
        coro = Py_NewRef(PyTuple_GET_ITEM(args, 0));
    }
    else if (PyTuple_GET_SIZE(args) == 0) {
        coro = PyDict_GetItemString(kw, "coro");
        if (coro != NULL) {
            Py_INCREF(coro);
            if (PyDict_DelItemString(kw, "coro") < 0) {
                goto error;
            }
        }
    }
    if (coro == NULL) {
        PyErr_SetString(PyExc_TypeError,
                        "create_task() takes one positional argument: 'coro'");
        goto error;
    }
    if (gl_loop_check_not_closed(loop) < 0) {
        goto error;
    }
    PyObject *task = NULL;
    if (loop->task_factory != NULL) {
        task = create_task_with_factory(loop, coro, kw);
    }
    else {
        PyObject *targs = PyTuple_Pack(1, coro);
        if (targs != NULL &&
            PyDict_SetItem(kw, loop->st->s_loop, (PyObject *)loop) == 0) {
            task = PyObject_Call(loop->st->task_type, targs, kw);
        }
        Py_XDECREF(targs);
    }
    Py_DECREF(coro);
    Py_DECREF(kw);
    return task;
error:
    Py_XDECREF(coro);
    Py_DECREF(kw);
    return NULL;
}

static PyObject *
loop_set_task_factory(gl_loop *loop, PyObject *factory)
{
    if (factory != Py_None && !PyCallable_Check(factory)) {
        PyErr_SetString(PyExc_TypeError,
                        "task factory must be a callable or None");
        return NULL;
    }
    Py_XSETREF(loop->task_factory,
               factory == Py_None ? NULL : Py_NewRef(factory));
    Py_RETURN_NONE;
}

static PyObject *
loop_get_task_factory(gl_loop *loop, PyObject *Py_UNUSED(ignored))
{
    return Py_NewRef(loop->task_factory ? loop->task_factory : Py_None);
}

/* ------------------------------------------------------------------ */
/* exception handler and debug                                        */

static PyObject *
loop_set_exception_handler(gl_loop *loop, PyObject *handler)
{
    if (handler != Py_None && !PyCallable_Check(handler)) {
        PyErr_Format(PyExc_TypeError,
                     "A callable object or None is expected, got %R", handler);
        return NULL;
    }
    Py_XSETREF(loop->exception_handler,
               handler == Py_None ? NULL : Py_NewRef(handler));
    Py_RETURN_NONE;
}

static PyObject *
loop_get_exception_handler(gl_loop *loop, PyObject *Py_UNUSED(ignored))
{
    return Py_NewRef(loop->exception_handler ? loop->exception_handler
                                             : Py_None);
}

static PyObject *
loop_get_debug(gl_loop *loop, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(loop->debug);
}

static PyObject *
loop_set_debug(gl_loop *loop, PyObject *enabled)
{
    int v = PyObject_IsTrue(enabled);
    if (v < 0) {
        return NULL;
    }
    loop->debug = v;
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ */
/* lifecycle                                                          */

static PyObject *
loop_stop(gl_loop *loop, PyObject *Py_UNUSED(ignored))
{
    __atomic_store_n(&loop->stopping, 1, __ATOMIC_RELAXED);
    if (loop->running && loop->thread_id != PyThread_get_thread_ident() &&
        loop->context != NULL) {
        gl_source_wakeup(loop);
    }
    Py_RETURN_NONE;
}

static PyObject *
loop_is_running(gl_loop *loop, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(loop->running);
}

static PyObject *
loop_is_closed(gl_loop *loop, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(loop->closed);
}

static PyObject *
loop_check_closed(gl_loop *loop, PyObject *Py_UNUSED(ignored))
{
    if (gl_loop_check_not_closed(loop) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static int
owns_thread_default(gl_loop *loop)
{
    return loop->context != g_main_context_default();
}

PyDoc_STRVAR(run_native_doc,
"_run_forever_native()\n--\n\n"
"Run the loop's GLib main context until stop().  The Python run_forever()\n"
"wraps this with the running-loop and asyncgen bookkeeping.");

static PyObject *
loop_run_forever_native(gl_loop *loop, PyObject *Py_UNUSED(ignored))
{
    if (gl_loop_check_not_closed(loop) < 0) {
        return NULL;
    }
    if (loop->running) {
        PyErr_SetString(PyExc_RuntimeError, "This event loop is already running");
        return NULL;
    }
    GMainLoop *ml = g_main_loop_new(loop->context, FALSE);
    loop->mainloop = ml;
    loop->running = 1;
    loop->thread_id = PyThread_get_thread_ident();
    int push = owns_thread_default(loop);
    if (push) {
        g_main_context_push_thread_default(loop->context);
    }
    Py_BEGIN_ALLOW_THREADS
    g_main_loop_run(ml);
    Py_END_ALLOW_THREADS
    if (push) {
        g_main_context_pop_thread_default(loop->context);
    }
    loop->mainloop = NULL;
    g_main_loop_unref(ml);
    loop->running = 0;
    loop->thread_id = 0;
    __atomic_store_n(&loop->stopping, 0, __ATOMIC_RELAXED);
    if (loop->pending_exc != NULL) {
        PyObject *exc = loop->pending_exc;
        loop->pending_exc = NULL;
        gl_source_set_paused(loop, 0);
        gl_err_restore(exc);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
loop_begin_external_run(gl_loop *loop, PyObject *quit_func)
{
    if (gl_loop_check_not_closed(loop) < 0) {
        return NULL;
    }
    if (loop->running) {
        PyErr_SetString(PyExc_RuntimeError, "This event loop is already running");
        return NULL;
    }
    if (quit_func != Py_None && !PyCallable_Check(quit_func)) {
        PyErr_SetString(PyExc_TypeError, "quit_func must be callable or None");
        return NULL;
    }
    Py_XSETREF(loop->quit_func, quit_func == Py_None ? NULL : Py_NewRef(quit_func));
    loop->running = 1;
    loop->thread_id = PyThread_get_thread_ident();
    if (owns_thread_default(loop)) {
        g_main_context_push_thread_default(loop->context);
    }
    Py_RETURN_NONE;
}

static PyObject *
loop_end_external_run(gl_loop *loop, PyObject *Py_UNUSED(ignored))
{
    if (!loop->running || loop->mainloop != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the loop is not in an external run");
        return NULL;
    }
    if (owns_thread_default(loop)) {
        g_main_context_pop_thread_default(loop->context);
    }
    Py_CLEAR(loop->quit_func);
    loop->running = 0;
    loop->thread_id = 0;
    __atomic_store_n(&loop->stopping, 0, __ATOMIC_RELAXED);
    if (loop->pending_exc != NULL) {
        PyObject *exc = loop->pending_exc;
        loop->pending_exc = NULL;
        gl_source_set_paused(loop, 0);
        gl_err_restore(exc);
        return NULL;
    }
    Py_RETURN_NONE;
}

static void
release_resources(gl_loop *loop)
{
    if (loop->source != NULL) {
        GSource *source = loop->source;
        loop->source = NULL;
        g_source_destroy(source);
        g_source_unref(source);
    }
    ready_clear(&loop->ready);
    gl_timers_clear(&loop->timers);
    deferred_clear(loop);
    gl_signals_close(loop);
    gl_poll_close(&loop->poll);
    __atomic_store_n(&loop->next_deadline_ns, GL_NO_DEADLINE, __ATOMIC_RELAXED);
}

static PyObject *
loop_close_native(gl_loop *loop, PyObject *Py_UNUSED(ignored))
{
    if (loop->running || loop->dispatch_depth > 0) {
        /* dispatch_depth: GLib is running one of our callbacks even though
         * no run_forever is (MainContext.iteration(), a foreign MainLoop) */
        PyErr_SetString(PyExc_RuntimeError, "Cannot close a running event loop");
        return NULL;
    }
    if (loop->closed) {
        Py_RETURN_NONE;
    }
    loop->closed = 1;
    release_resources(loop);
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ */
/* construction and GC                                                */

/* PyGObject's wrapper of a boxed GLib struct keeps the C pointer right
 * after the object header (PyGBoxed in pygobject.h, stable since 3.0). */
typedef struct {
    PyObject_HEAD
    gpointer boxed;
} gl_pygboxed;

static GMainContext *
context_from_pygobject(PyObject *obj)
{
    PyObject *gtype = PyObject_GetAttrString(obj, "__gtype__");
    if (gtype == NULL) {
        PyErr_Clear();
        goto bad;
    }
    PyObject *gname = PyObject_GetAttrString(gtype, "name");
    Py_DECREF(gtype);
    if (gname == NULL) {
        PyErr_Clear();
        goto bad;
    }
    int ok = PyUnicode_Check(gname) &&
             PyUnicode_CompareWithASCIIString(gname, "GMainContext") == 0;
    Py_DECREF(gname);
    if (!ok) {
        goto bad;
    }
    GMainContext *ctx = ((gl_pygboxed *)obj)->boxed;
    /* Cross-check the layout: PyGObject hashes boxed values by pointer. */
    Py_hash_t h = PyObject_Hash(obj);
    if (h == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (ctx == NULL || h != (Py_hash_t)(uintptr_t)ctx) {
        PyErr_SetString(PyExc_TypeError,
                        "cannot read the GMainContext of this GLib.MainContext "
                        "(unsupported PyGObject?)");
        return NULL;
    }
    return ctx;
bad:
    PyErr_Format(PyExc_TypeError,
                 "context must be a GLib.MainContext or None, not %s",
                 Py_TYPE(obj)->tp_name);
    return NULL;
}

static int
loop_init(gl_loop *loop, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"context", "default_context", NULL};
    PyObject *context = Py_None;
    int use_default = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O$p:Loop", kwlist,
                                     &context, &use_default)) {
        return -1;
    }
    if (loop->context != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Loop.__init__() called twice");
        return -1;
    }
    GMainContext *ctx;
    if (context != Py_None) {
        ctx = context_from_pygobject(context);
        if (ctx == NULL) {
            return -1;
        }
        g_main_context_ref(ctx);
    }
    else if (use_default) {
        ctx = g_main_context_ref(g_main_context_default());
    }
    else {
        ctx = g_main_context_new();
    }
    if (gl_poll_init(&loop->poll) < 0) {
        g_main_context_unref(ctx);
        return -1;
    }
    loop->context = ctx;
    loop->source = gl_source_new(loop);
    g_source_attach(loop->source, ctx);
    return 0;
}

static PyObject *
loop_new(PyTypeObject *type, PyObject *Py_UNUSED(args),
         PyObject *Py_UNUSED(kwds))
{
    gl_loop *loop = (gl_loop *)type->tp_alloc(type, 0);
    if (loop == NULL) {
        return NULL;
    }
    loop->st = gl_module_state_of_type(type);
    if (loop->st == NULL) {
        Py_DECREF(loop);
        return NULL;
    }
    loop->poll.epfd = -1;
    loop->poll.timerfd = -1;
    loop->sig_rfd = loop->sig_wfd = -1;
    loop->next_deadline_ns = GL_NO_DEADLINE;
    loop->slow_callback_duration = 0.1;
    loop->batch_budget_ns = GL_DEFAULT_BUDGET_NS;
    return (PyObject *)loop;
}

static int
loop_traverse(gl_loop *loop, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(loop));
    for (uint64_t i = loop->ready.head; i < loop->ready.tail; i++) {
        int rc = gl_handle_traverse_queued(
            loop->ready.items[i & loop->ready.mask], visit, arg);
        if (rc != 0) {
            return rc;
        }
    }
    if (gl_timers_traverse(&loop->timers, visit, arg) < 0 ||
        gl_poll_traverse(&loop->poll, visit, arg) < 0 ||
        gl_signals_traverse(loop, visit, arg) < 0) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < loop->deferred_size; i++) {
        int rc = gl_handle_traverse_queued(loop->deferred[i], visit, arg);
        if (rc != 0) {
            return rc;
        }
    }
    Py_VISIT(loop->quit_func);
    Py_VISIT(loop->exception_handler);
    Py_VISIT(loop->task_factory);
    Py_VISIT(loop->pending_exc);
    Py_VISIT(loop->dict);
    return 0;
}

static int
loop_clear(gl_loop *loop)
{
    ready_clear(&loop->ready);
    gl_timers_clear(&loop->timers);
    gl_poll_clear_handlers(&loop->poll);
    gl_signals_clear(loop);
    deferred_clear(loop);
    Py_CLEAR(loop->quit_func);
    Py_CLEAR(loop->exception_handler);
    Py_CLEAR(loop->task_factory);
    Py_CLEAR(loop->pending_exc);
    Py_CLEAR(loop->dict);
    return 0;
}

static void
loop_finalize(gl_loop *loop)
{
    if (loop->closed || loop->context == NULL) {
        return;
    }
    PyObject *exc = gl_err_fetch();
    if (PyErr_ResourceWarning((PyObject *)loop, 1,
                              "unclosed event loop %R", loop) < 0) {
        PyErr_WriteUnraisable((PyObject *)loop);
    }
    if (!loop->running) {
        PyObject *r = PyObject_CallMethod((PyObject *)loop, "close", NULL);
        if (r == NULL) {
            PyErr_WriteUnraisable((PyObject *)loop);
        }
        Py_XDECREF(r);
    }
    if (exc != NULL) {
        gl_err_restore(exc);
    }
}

static void
loop_dealloc(gl_loop *loop)
{
    PyTypeObject *tp = Py_TYPE(loop);
    PyObject_GC_UnTrack(loop);
    if (PyObject_CallFinalizerFromDealloc((PyObject *)loop) < 0) {
        return;  /* resurrected */
    }
    if (loop->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)loop);
    }
    release_resources(loop);
    loop_clear(loop);
    if (loop->context != NULL) {
        g_main_context_unref(loop->context);
        loop->context = NULL;
    }
    tp->tp_free(loop);
    Py_DECREF(tp);
}

/* ------------------------------------------------------------------ */
/* attributes                                                         */

static PyObject *
loop_get_closed(gl_loop *loop, void *Py_UNUSED(c))
{
    return PyBool_FromLong(loop->closed);
}

static PyObject *
loop_get_stopping(gl_loop *loop, void *Py_UNUSED(c))
{
    return PyBool_FromLong(loop->stopping);
}

static PyObject *
loop_get_thread_id(gl_loop *loop, void *Py_UNUSED(c))
{
    if (!loop->running) {
        Py_RETURN_NONE;
    }
    return PyLong_FromUnsignedLong(loop->thread_id);
}

static PyObject *
loop_get_current_handle(gl_loop *loop, void *Py_UNUSED(c))
{
    return Py_NewRef(loop->current_handle ? (PyObject *)loop->current_handle
                                          : Py_None);
}

static PyObject *
loop_get_slow(gl_loop *loop, void *Py_UNUSED(c))
{
    return PyFloat_FromDouble(loop->slow_callback_duration);
}

static int
loop_set_slow(gl_loop *loop, PyObject *v, void *Py_UNUSED(c))
{
    double d;
    if (v == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete attribute");
        return -1;
    }
    if (number_arg(v, "slow_callback_duration", &d) < 0) {
        return -1;
    }
    loop->slow_callback_duration = d;
    return 0;
}

static PyObject *
loop_get_budget(gl_loop *loop, void *Py_UNUSED(c))
{
    return PyFloat_FromDouble((double)loop->batch_budget_ns / 1e9);
}

static int
loop_set_budget(gl_loop *loop, PyObject *v, void *Py_UNUSED(c))
{
    double d;
    if (v == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete attribute");
        return -1;
    }
    if (number_arg(v, "batch_budget", &d) < 0) {
        return -1;
    }
    if (!(d >= 0.0 && d <= 1.0)) {
        PyErr_SetString(PyExc_ValueError,
                        "batch_budget must be between 0 and 1 second");
        return -1;
    }
    loop->batch_budget_ns = (int64_t)(d * 1e9);
    return 0;
}

static PyObject *
loop_get_priority(gl_loop *loop, void *Py_UNUSED(c))
{
    if (gl_loop_check_not_closed(loop) < 0) {
        return NULL;
    }
    return PyLong_FromLong(g_source_get_priority(loop->source));
}

static int
loop_set_priority(gl_loop *loop, PyObject *v, void *Py_UNUSED(c))
{
    if (v == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete attribute");
        return -1;
    }
    if (!PyLong_Check(v)) {
        PyErr_Format(PyExc_TypeError, "priority must be an int, not %s",
                     Py_TYPE(v)->tp_name);
        return -1;
    }
    int overflow;
    long p = PyLong_AsLongAndOverflow(v, &overflow);
    if (p == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow || p < INT_MIN || p > INT_MAX) {
        PyErr_SetString(PyExc_OverflowError, "priority out of range");
        return -1;
    }
    if (gl_loop_check_not_closed(loop) < 0) {
        return -1;
    }
    g_source_set_priority(loop->source, (gint)p);
    return 0;
}

static PyObject *
loop_get_ready_count(gl_loop *loop, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLongLong(loop->ready.tail - loop->ready.head);
}

static PyObject *
loop_get_timer_count(gl_loop *loop, void *Py_UNUSED(c))
{
    return PyLong_FromSsize_t(loop->timers.size - loop->timers.cancelled);
}

static PyObject *
loop_get_reader_count(gl_loop *loop, void *Py_UNUSED(c))
{
    return PyLong_FromLong(loop->poll.active);
}

static PyGetSetDef loop_getset[] = {
    {"_closed", (getter)loop_get_closed, NULL, NULL, NULL},
    {"_stopping", (getter)loop_get_stopping, NULL, NULL, NULL},
    {"_thread_id", (getter)loop_get_thread_id, NULL, NULL, NULL},
    {"_current_handle", (getter)loop_get_current_handle, NULL, NULL, NULL},
    {"priority", (getter)loop_get_priority, (setter)loop_set_priority,
     PyDoc_STR("GLib priority of the loop's source (default GLib.PRIORITY_DEFAULT,\n"
               "0). A larger number lets GTK input and redraw go first."),
     NULL},
    {"_ready_count", (getter)loop_get_ready_count, NULL,
     PyDoc_STR("Number of callbacks waiting in the ready queue."), NULL},
    {"_timer_count", (getter)loop_get_timer_count, NULL,
     PyDoc_STR("Number of scheduled, not cancelled, timers."), NULL},
    {"_fd_count", (getter)loop_get_reader_count, NULL,
     PyDoc_STR("Number of fds with a reader or a writer."), NULL},
    {"slow_callback_duration", (getter)loop_get_slow, (setter)loop_set_slow,
     PyDoc_STR("In debug mode, callbacks slower than this (seconds) are logged."),
     NULL},
    {"batch_budget", (getter)loop_get_budget, (setter)loop_set_budget,
     PyDoc_STR("Seconds of asyncio rounds run back to back before GLib's other "
               "sources get a turn (default 0.001)."),
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef loop_members[] = {
    {"__dictoffset__", T_PYSSIZET, offsetof(gl_loop, dict), READONLY, NULL},
    {"__weaklistoffset__", T_PYSSIZET, offsetof(gl_loop, weakreflist),
     READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

#define FASTKW (METH_FASTCALL | METH_KEYWORDS)

PyMethodDef gl_loop_core_methods[] = {
    {"call_soon", (PyCFunction)(void (*)(void))loop_call_soon, FASTKW,
     PyDoc_STR("call_soon(callback, *args, context=None)\n--\n\n"
               "Arrange for callback(*args) to run in the next round.")},
    {"call_soon_threadsafe",
     (PyCFunction)(void (*)(void))loop_call_soon_threadsafe, FASTKW,
     PyDoc_STR("call_soon_threadsafe(callback, *args, context=None)\n--\n\n"
               "Like call_soon(), callable from any thread.")},
    {"call_later", (PyCFunction)(void (*)(void))loop_call_later, FASTKW,
     PyDoc_STR("call_later(delay, callback, *args, context=None)\n--\n\n"
               "Arrange for callback(*args) to run after delay seconds.")},
    {"call_at", (PyCFunction)(void (*)(void))loop_call_at, FASTKW,
     PyDoc_STR("call_at(when, callback, *args, context=None)\n--\n\n"
               "Arrange for callback(*args) to run at loop time when.")},
    {"time", (PyCFunction)loop_time, METH_NOARGS,
     PyDoc_STR("Return the loop's time: CLOCK_MONOTONIC in seconds.")},
    {"add_reader", (PyCFunction)(void (*)(void))loop_add_reader, METH_FASTCALL,
     PyDoc_STR("add_reader(fd, callback, *args)\n--\n\n"
               "Watch fd for reading.")},
    {"add_writer", (PyCFunction)(void (*)(void))loop_add_writer, METH_FASTCALL,
     PyDoc_STR("add_writer(fd, callback, *args)\n--\n\n"
               "Watch fd for writing.")},
    {"remove_reader", (PyCFunction)loop_remove_reader, METH_O,
     PyDoc_STR("Stop watching fd for reading; return True if it was watched.")},
    {"remove_writer", (PyCFunction)loop_remove_writer, METH_O,
     PyDoc_STR("Stop watching fd for writing; return True if it was watched.")},
    {"create_future", (PyCFunction)loop_create_future, METH_NOARGS,
     PyDoc_STR("Create an asyncio.Future attached to the loop.")},
    {"create_task", (PyCFunction)(void (*)(void))loop_create_task,
     METH_VARARGS | METH_KEYWORDS,
     PyDoc_STR("create_task(coro, *, name=None, context=None)\n--\n\n"
               "Schedule the execution of a coroutine; return a Task.")},
    {"set_task_factory", (PyCFunction)loop_set_task_factory, METH_O, NULL},
    {"get_task_factory", (PyCFunction)loop_get_task_factory, METH_NOARGS, NULL},
    {"set_exception_handler", (PyCFunction)loop_set_exception_handler, METH_O,
     NULL},
    {"get_exception_handler", (PyCFunction)loop_get_exception_handler,
     METH_NOARGS, NULL},
    {"get_debug", (PyCFunction)loop_get_debug, METH_NOARGS, NULL},
    {"_set_debug_flag", (PyCFunction)loop_set_debug, METH_O, NULL},
    {"stop", (PyCFunction)loop_stop, METH_NOARGS,
     PyDoc_STR("Stop running the loop after the current round.")},
    {"is_running", (PyCFunction)loop_is_running, METH_NOARGS, NULL},
    {"is_closed", (PyCFunction)loop_is_closed, METH_NOARGS, NULL},
    {"_check_closed", (PyCFunction)loop_check_closed, METH_NOARGS, NULL},
    {"_run_forever_native", (PyCFunction)loop_run_forever_native, METH_NOARGS,
     run_native_doc},
    {"_close_native", (PyCFunction)loop_close_native, METH_NOARGS, NULL},
    {"_begin_external_run", (PyCFunction)loop_begin_external_run, METH_O,
     PyDoc_STR("Mark the loop running while something else (an application's\n"
               "run()) iterates its context; quit_func is called by stop().")},
    {"_end_external_run", (PyCFunction)loop_end_external_run, METH_NOARGS,
     PyDoc_STR("End an external run; raise a KeyboardInterrupt/SystemExit kept\n"
               "from a callback.")},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(loop_doc,
"Loop(context=None, *, default_context=False)\n--\n\n"
"The C core of glibloop's event loop: one GSource on a GMainContext.\n"
"Use glibloop.Loop or glibloop.new_event_loop(), which add the rest of\n"
"the asyncio API.");

static PyType_Slot loop_slots[] = {
    {Py_tp_doc, (void *)loop_doc},
    {Py_tp_new, loop_new},
    {Py_tp_init, loop_init},
    {Py_tp_dealloc, loop_dealloc},
    {Py_tp_finalize, loop_finalize},
    {Py_tp_traverse, loop_traverse},
    {Py_tp_clear, loop_clear},
    {Py_tp_methods, NULL},  /* filled by module.c: every file's methods */
    {Py_tp_getset, loop_getset},
    {Py_tp_members, loop_members},
    {0, NULL},
};

PyType_Spec gl_loop_spec = {
    .name = "glibloop._core.Loop",
    .basicsize = sizeof(gl_loop),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .slots = loop_slots,
};
