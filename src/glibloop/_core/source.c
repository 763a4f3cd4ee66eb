/* The GSource that connects a loop to its GMainContext.
 *
 * prepare and check run without the GIL and read only scalars of the
 * loop (ready count, next deadline, flags), so a GLib iteration that has
 * nothing for asyncio never touches Python.  dispatch takes the GIL and
 * runs a batch of asyncio rounds (loop.c). */
#include "internal.h"

#include <limits.h>

typedef struct {
    GSource base;
    gl_loop *loop;       /* borrowed: the loop destroys the source first */
    gpointer epoll_tag;
} gl_gsource;

static inline int
has_immediate_work(gl_loop *loop)
{
    uint64_t head = __atomic_load_n(&loop->ready.head, __ATOMIC_RELAXED);
    uint64_t tail = __atomic_load_n(&loop->ready.tail, __ATOMIC_ACQUIRE);
    /* held watcher events (gl_poll_dispatch): their edges are consumed,
     * epoll will not say again that they are due */
    return head != tail ||
           loop->poll.nheld > loop->poll.held_next ||
           __atomic_load_n(&loop->stopping, __ATOMIC_RELAXED);
}

static gboolean
source_prepare(GSource *source, gint *timeout)
{
    gl_loop *loop = ((gl_gsource *)source)->loop;
    if (loop->in_glib_turn) {
        if (loop->in_glib_turn == g_main_depth()) {
            *timeout = -1;
            return FALSE;
        }
        /* a main loop nested in a callback of the turn (a modal dialog)
         * runs asyncio, I/O included */
        gl_source_unmute_turn(loop);
    }
    if (loop->pending_exc != NULL) {
        /* A KeyboardInterrupt/SystemExit waits for run_forever to raise it
         * (a nested main loop is still unwinding): asyncio stays paused. */
        *timeout = -1;
        return FALSE;
    }
    if (has_immediate_work(loop)) {
        *timeout = 0;
        return TRUE;
    }
    int64_t deadline = __atomic_load_n(&loop->next_deadline_ns, __ATOMIC_RELAXED);
    if (deadline == GL_NO_DEADLINE) {
        *timeout = -1;
        return FALSE;
    }
    int64_t now = gl_monotonic_ns();
    if (deadline <= now) {
        *timeout = 0;
        return TRUE;
    }
    int64_t left = deadline - now;
    if (left < GL_NS_PER_MS) {
        /* GLib polls in whole milliseconds: rounding up would make this
         * timer up to 1 ms late, rounding down would spin.  The timerfd in
         * our epoll set wakes the poll at the exact deadline instead. */
        gl_poll_arm_timer(&loop->poll, deadline);
        *timeout = loop->poll.timerfd_armed_ns == deadline ? -1 : 1;
        return FALSE;
    }
    int64_t ms = (left + GL_NS_PER_MS - 1) / GL_NS_PER_MS;
    *timeout = ms > INT_MAX ? INT_MAX : (gint)ms;
    return FALSE;
}

static gboolean
source_check(GSource *source)
{
    gl_gsource *gs = (gl_gsource *)source;
    gl_loop *loop = gs->loop;
    if (loop->pending_exc != NULL ||
        (loop->in_glib_turn && loop->in_glib_turn == g_main_depth())) {
        return FALSE;
    }
    if (has_immediate_work(loop)) {
        return TRUE;
    }
    int64_t deadline = __atomic_load_n(&loop->next_deadline_ns, __ATOMIC_RELAXED);
    if ((deadline != GL_NO_DEADLINE && deadline <= gl_monotonic_ns()) ||
        g_source_query_unix_fd(source, gs->epoll_tag) != 0) {
        return TRUE;
    }
    /* this iteration passes asyncio by: GLib's other sources had their
     * turn (fairness, run_rounds in loop.c) */
    loop->fair_since_ns = 0;
    return FALSE;
}

static gboolean
source_dispatch(GSource *source, GSourceFunc Py_UNUSED(cb),
                gpointer Py_UNUSED(data))
{
    gl_gsource *gs = (gl_gsource *)source;
    gl_loop *loop = gs->loop;
    int readable = g_source_query_unix_fd(source, gs->epoll_tag) != 0;
    PyGILState_STATE gil = PyGILState_Ensure();
    if (g_source_is_destroyed(source)) {
        /* closed or freed on another thread after GLib's check */
        PyGILState_Release(gil);
        return G_SOURCE_REMOVE;
    }
    Py_INCREF(loop);
    gl_sched_run_batch(loop, readable);
    Py_DECREF(loop);
    PyGILState_Release(gil);
    return G_SOURCE_CONTINUE;
}

static GSourceFuncs gl_source_funcs = {
    .prepare = source_prepare,
    .check = source_check,
    .dispatch = source_dispatch,
    .finalize = NULL,
};

GSource *
gl_source_new(gl_loop *loop)
{
    GSource *source = g_source_new(&gl_source_funcs, sizeof(gl_gsource));
    gl_gsource *gs = (gl_gsource *)source;
    gs->loop = loop;
    gs->epoll_tag = g_source_add_unix_fd(source, loop->poll.epfd, G_IO_IN);
    g_source_set_name(source, "glibloop asyncio");
    /* A main loop nested in a callback (a modal dialog, MainLoop.run() in a
     * coroutine) keeps dispatching asyncio: see gl_sched_run_batch. */
    g_source_set_can_recurse(source, TRUE);
    return source;
}

void
gl_source_set_paused(gl_loop *loop, int paused)
{
    if (loop->source != NULL) {
        g_source_modify_unix_fd(loop->source, ((gl_gsource *)loop->source)->epoll_tag,
                                paused ? 0 : G_IO_IN);
    }
}

/* GLib counts a source whose fd polled readable as ready, whatever its
 * check says: during its own GLib turn (loop.c, glib_turn) the loop mutes
 * its epoll fd, or it would keep the sources of lower priority out of the
 * very turn that is meant for them. */
void
gl_source_mute_turn(gl_loop *loop)
{
    loop->turn_muted = 1;
    gl_source_set_paused(loop, 1);
}

void
gl_source_unmute_turn(gl_loop *loop)
{
    if (loop->turn_muted) {
        loop->turn_muted = 0;
        if (loop->pending_exc == NULL) {
            gl_source_set_paused(loop, 0);
        }
    }
}

void
gl_source_wakeup(gl_loop *loop)
{
    g_main_context_wakeup(loop->context);
}

/* ------------------------------------------------------------------ */
/* running on GLib: run_forever, an application's run          */

static int
owns_thread_default(gl_loop *loop)
{
    return loop->context != g_main_context_default();
}

static int
can_run(gl_loop *loop)
{
    if (gl_loop_check_not_closed(loop) < 0) {
        return -1;
    }
    if (loop->running) {
        PyErr_SetString(PyExc_RuntimeError, "This event loop is already running");
        return -1;
    }
    return 0;
}

/* The loop stops running; a SystemExit/KeyboardInterrupt that a callback
 * raised (kept by the scheduler) is raised now. */
static PyObject *
run_ended(gl_loop *loop)
{
    loop->running = 0;
    loop->thread_id = 0;
    gl_timers_track_kept(&loop->timers);
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

PyDoc_STRVAR(run_native_doc,
"_run_forever_native()\n--\n\n"
"Run the loop's GLib main context until stop().  The Python run_forever()\n"
"wraps this with the running-loop and asyncgen bookkeeping.");

static PyObject *
loop_run_forever_native(gl_loop *loop, PyObject *Py_UNUSED(ignored))
{
    if (can_run(loop) < 0) {
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
    return run_ended(loop);
}

static PyObject *
loop_begin_external_run(gl_loop *loop, PyObject *quit_func)
{
    if (can_run(loop) < 0) {
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
    return run_ended(loop);
}

/* ------------------------------------------------------------------ */
/* the GMainContext of a PyGObject GLib.MainContext                   */

/* PyGObject's wrapper of a boxed GLib struct keeps the C pointer right
 * after the object header (PyGBoxed in pygobject.h, stable since 3.0). */
typedef struct {
    PyObject_HEAD
    gpointer boxed;
} gl_pygboxed;

GMainContext *
gl_source_context_of(PyObject *obj)
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

PyMethodDef gl_source_methods[] = {
    {"_run_forever_native", (PyCFunction)loop_run_forever_native, METH_NOARGS,
     run_native_doc},
    {"_begin_external_run", (PyCFunction)loop_begin_external_run, METH_O,
     PyDoc_STR("Mark the loop running while something else (an application's\n"
               "run()) iterates its context; quit_func is called by stop().")},
    {"_end_external_run", (PyCFunction)loop_end_external_run, METH_NOARGS,
     PyDoc_STR("End an external run; raise a KeyboardInterrupt/SystemExit kept\n"
               "from a callback.")},
    {NULL, NULL, 0, NULL},
};
