/* The Loop type and its Python-facing core: construction and GC, stop and
 * close, call_soon (and the thread-safe queue), call_later/call_at, the
 * exception handler and debug settings, the attributes; futures, call_soon
 * and the one exception reporter for the C files.  The scheduler that runs
 * what these queue is sched.c; readers and writers are poll.c's methods,
 * running on GLib source.c's, futures and tasks tasks.c's.  Cold paths
 * that are naturally coroutines or logging (shutdown_*, run_in_executor,
 * the default exception handler) live in _loop.py. */
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>
#include <sys/epoll.h>
#include <structmember.h>

#define GL_DEFAULT_BUDGET_NS (1 * GL_NS_PER_MS)
/* call_soon_threadsafe's flow control: handles queued, pause of a pusher */
#define GL_FLOOD_HIGH 2048
#define GL_FLOOD_PAUSE_US 50

/* ------------------------------------------------------------------ */
/* contexts                                                           */

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

int
gl_loop_check_callback(PyObject *cb, const char *method)
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
    int rc = gl_sched_push(loop, h);
    /* The queue's reference keeps it; untracked while queued as any
     * call_soon handle (see gl_handle_release). */
    Py_DECREF(h);
    return rc;
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

PyObject *
gl_loop_args_tuple(PyObject *const *args, Py_ssize_t n)
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

int
gl_loop_need_args(Py_ssize_t nargs, Py_ssize_t min, const char *method,
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
              PyObject *kwnames, const char *method, int threadsafe)
{
    PyObject *context;
    if (gl_loop_need_args(nargs, 1, method, "'callback'") < 0 ||
        parse_context_kw(loop, args, nargs, kwnames, method, &context) < 0 ||
        gl_loop_check_not_closed(loop) < 0 ||
        gl_loop_check_callback(args[0], method) < 0) {
        return NULL;
    }
    PyObject *cbargs = gl_loop_args_tuple(args + 1, nargs - 1);
    if (cbargs == NULL) {
        return NULL;
    }
    gl_handle *h = (threadsafe ? gl_handle_new_threadsafe : gl_handle_new)(
        loop->st, (PyObject *)loop, args[0], cbargs, context);
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
                                              "call_soon", 0);
    if (h == NULL) {
        return NULL;
    }
    if (gl_sched_push(loop, h) < 0) {
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
                                              "call_soon_threadsafe", 1);
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
    if (gl_sched_push(loop, h) < 0) {
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
        gl_loop_check_callback(args[0], method) < 0) {
        return NULL;
    }
    PyObject *cbargs = gl_loop_args_tuple(args + 1, nargs - 1);
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
    if (gl_loop_need_args(nargs, 2, "call_later", "'delay' and 'callback'") < 0 ||
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
    if (gl_loop_need_args(nargs, 2, "call_at", "'when' and 'callback'") < 0 ||
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

static void
release_resources(gl_loop *loop)
{
    if (loop->source != NULL) {
        GSource *source = loop->source;
        loop->source = NULL;
        g_source_destroy(source);
        g_source_unref(source);
    }
    gl_sched_clear(loop);
    gl_timers_clear(&loop->timers);
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
        ctx = gl_source_context_of(context);
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
    int rc = gl_sched_traverse(loop, visit, arg);
    if (rc != 0) {
        return rc;
    }
    if (gl_timers_traverse(&loop->timers, visit, arg) < 0 ||
        gl_poll_traverse(&loop->poll, visit, arg) < 0 ||
        gl_signals_traverse(loop, visit, arg) < 0) {
        return -1;
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
    gl_sched_clear(loop);
    gl_timers_clear(&loop->timers);
    gl_poll_clear_handlers(&loop->poll);
    gl_signals_clear(loop);
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
    {"_close_native", (PyCFunction)loop_close_native, METH_NOARGS, NULL},
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
