/* Handle and TimerHandle: a scheduled callback with its arguments and its
 * contextvars Context, as asyncio.Handle and asyncio.TimerHandle. */
#include "internal.h"

#include <structmember.h>

static gl_state *
handle_state(gl_handle *h)
{
    return ((gl_loop *)h->loop)->st;
}

static int
handle_init_fields(gl_handle *h, PyObject *loop, PyObject *callback,
                   PyObject *args, PyObject *context)
{
    h->context = NULL;
    h->callback = Py_NewRef(callback);
    h->args = Py_NewRef(args);
    h->loop = Py_NewRef(loop);
    h->source_traceback = NULL;
    h->repr_cache = NULL;
    h->unused = NULL;
    h->weakreflist = NULL;
    h->cancelled = 0;
    h->threadsafe = 0;
    h->running = 0;
    h->waiters = 0;
    if (context == NULL || context == Py_None) {
        h->context = PyContext_CopyCurrent();
        if (h->context == NULL) {
            return -1;
        }
    }
    else {
        h->context = Py_NewRef(context);
    }
    if (((gl_loop *)loop)->debug) {
        gl_state *st = ((gl_loop *)loop)->st;
        /* extract_stack() starts at its caller: called from C that is the
         * Python frame that called call_soon/call_later. */
        PyObject *tb = PyObject_CallNoArgs(st->extract_stack);
        if (tb == NULL) {
            return -1;
        }
        h->source_traceback = tb;
    }
    return 0;
}

gl_handle *
gl_handle_new(gl_state *st, PyObject *loop, PyObject *callback,
              PyObject *args, PyObject *context)
{
    gl_handle *h = PyObject_GC_New(gl_handle, st->HandleType);
    if (h == NULL) {
        return NULL;
    }
    if (handle_init_fields(h, loop, callback, args, context) < 0) {
        Py_DECREF(h);
        return NULL;
    }
    return h;
}

gl_handle *
gl_handle_new_threadsafe(gl_state *st, PyObject *loop, PyObject *callback,
                         PyObject *args, PyObject *context)
{
#if PY_VERSION_HEX >= 0x030E0000
    PyTypeObject *tp = st->ThreadSafeHandleType ? st->ThreadSafeHandleType
                                                : st->HandleType;
    gl_handle *h = PyObject_GC_New(gl_handle, tp);
    if (h == NULL) {
        return NULL;
    }
    if (handle_init_fields(h, loop, callback, args, context) < 0) {
        Py_DECREF(h);
        return NULL;
    }
    h->threadsafe = 1;
    return h;
#else
    return gl_handle_new(st, loop, callback, args, context);
#endif
}

gl_timer *
gl_timer_new(gl_state *st, PyObject *loop, double when, int64_t when_ns,
             PyObject *callback, PyObject *args, PyObject *context)
{
    gl_timer *t = PyObject_GC_New(gl_timer, st->TimerHandleType);
    if (t == NULL) {
        return NULL;
    }
    t->when = when;
    t->when_ns = when_ns;
    t->seq = 0;
    t->scheduled = 0;
    if (handle_init_fields(&t->base, loop, callback, args, context) < 0) {
        Py_DECREF(t);
        return NULL;
    }
    /* As a call_soon handle, a timer is left untracked while the heap holds
     * it: the loop's traverse stands for it, and gl_handle_release() tracks
     * it when it leaves the heap and someone still holds it.  What that
     * leaves out is a kept timer (asyncio.sleep's frame, self._timer = ...)
     * in a cycle with a loop that is dropped without close(): so a timer
     * made while the loop is not running is tracked at once, and the ones
     * still kept in the heap are tracked when a run ends
     * (gl_timers_track_kept).  A tracked handle costs every collection a
     * visit; 50,000 untracked ones cost none. */
    if (!((gl_loop *)loop)->running) {
        PyObject_GC_Track(t);
    }
    return t;
}

/* asyncio's own formatting of "callback(args) at file:line".  From 3.13 it
 * shows the arguments only in debug mode (a keyword it did not take before). */
static PyObject *
format_callback_of(gl_handle *h, PyObject *callback, PyObject *args)
{
    gl_state *st = handle_state(h);
#if PY_VERSION_HEX >= 0x030D0000
    PyObject *kwargs = Py_BuildValue("{s:O}", "debug",
                                     ((gl_loop *)h->loop)->debug ? Py_True : Py_False);
    if (kwargs == NULL) {
        return NULL;
    }
    PyObject *posargs = PyTuple_Pack(2, callback, args);
    PyObject *res = posargs ? PyObject_Call(st->format_callback, posargs, kwargs) : NULL;
    Py_XDECREF(posargs);
    Py_DECREF(kwargs);
    return res;
#else
    return PyObject_CallFunctionObjArgs(st->format_callback, callback, args, NULL);
#endif
}

static PyObject *
format_callback(gl_handle *h)
{
    return format_callback_of(h, h->callback, h->args);
}

/* asyncio's _ThreadSafeHandle (Python 3.14+) holds a lock while its
 * callback runs, and cancel() and cancelled() take it: from another thread
 * they wait for a running callback to end, from the loop's own thread (the
 * callback cancelling itself) they do not.  glibloop keeps that rule without
 * a lock per handle: the GIL already orders the flag's reads and writes, and
 * a waiter sleeps on one condition shared by every handle, woken when a
 * callback it waits for ends.  Waiters are rare (a cancel() racing the very
 * callback it cancels), so the common end of a callback touches no lock. */
static GMutex run_end_lock;
static GCond run_end_cond;

static void
run_begin(gl_handle *h)
{
    h->running = 1;
}

static void
run_end(gl_handle *h)
{
    if (h->waiters == 0) {
        h->running = 0;
        return;
    }
    g_mutex_lock(&run_end_lock);
    h->running = 0;
    g_cond_broadcast(&run_end_cond);
    g_mutex_unlock(&run_end_lock);
}

/* Called with the GIL held: returns once h's callback is not running, or at
 * once on the loop's thread. */
static void
wait_run_end(gl_handle *h)
{
    if (!h->running ||
        ((gl_loop *)h->loop)->thread_id == PyThread_get_thread_ident()) {
        return;
    }
    Py_INCREF(h);
    h->waiters++;
    Py_BEGIN_ALLOW_THREADS
    g_mutex_lock(&run_end_lock);
    while (h->running) {
        g_cond_wait(&run_end_cond, &run_end_lock);
    }
    g_mutex_unlock(&run_end_lock);
    Py_END_ALLOW_THREADS
    h->waiters--;
    Py_DECREF(h);
}

int
gl_handle_run(gl_handle *h)
{
    if (h->cancelled) {
        return 0;
    }
    if (h->threadsafe) {
        run_begin(h);
    }
    PyObject *callback = Py_NewRef(h->callback);
    PyObject *args = Py_NewRef(h->args);
    PyObject *context = Py_NewRef(h->context);
    PyObject *res = NULL;
    if (PyContext_Enter(context) == 0) {
        res = PyObject_Vectorcall(callback, &PyTuple_GET_ITEM(args, 0),
                                  PyTuple_GET_SIZE(args), NULL);
        if (PyContext_Exit(context) < 0) {
            Py_CLEAR(res);
        }
    }
    int rc = 0;
    if (res != NULL) {
        Py_DECREF(res);
        goto done;
    }
    PyObject *exc = gl_err_fetch();
    if (gl_exc_is_fatal(exc)) {
        gl_err_restore(exc);
        rc = -1;
        goto done;
    }
    PyObject *cbrepr = format_callback_of(h, callback, args);
    if (cbrepr == NULL) {
        PyErr_WriteUnraisable(callback);
    }
    else {
        rc = gl_loop_report_error((gl_loop *)h->loop, exc, h, NULL, NULL, NULL,
                                  "Exception in callback %U", cbrepr);
        Py_DECREF(cbrepr);
    }
    Py_DECREF(exc);
done:
    if (h->threadsafe) {
        run_end(h);
    }
    Py_DECREF(callback);
    Py_DECREF(args);
    Py_DECREF(context);
    return rc;
}

static PyObject *
handle_repr_info(gl_handle *h, int is_timer)
{
    PyObject *parts = PyList_New(0);
    if (parts == NULL) {
        return NULL;
    }
    PyObject *item = PyUnicode_FromString(_PyType_Name(Py_TYPE(h)));
    if (item == NULL || PyList_Append(parts, item) < 0) {
        goto error;
    }
    Py_CLEAR(item);
    if (h->cancelled) {
        item = PyUnicode_FromString("cancelled");
        if (item == NULL || PyList_Append(parts, item) < 0) {
            goto error;
        }
        Py_CLEAR(item);
    }
    if (is_timer) {
        PyObject *when = PyFloat_FromDouble(((gl_timer *)h)->when);
        if (when == NULL) {
            goto error;
        }
        item = PyUnicode_FromFormat("when=%R", when);
        Py_DECREF(when);
        if (item == NULL || PyList_Append(parts, item) < 0) {
            goto error;
        }
        Py_CLEAR(item);
    }
    if (h->callback != NULL) {
        item = format_callback(h);
        if (item == NULL || PyList_Append(parts, item) < 0) {
            goto error;
        }
        Py_CLEAR(item);
    }
    if (h->source_traceback != NULL && PyList_Check(h->source_traceback) &&
        PyList_GET_SIZE(h->source_traceback) > 0) {
        PyObject *frame = PyList_GET_ITEM(
            h->source_traceback, PyList_GET_SIZE(h->source_traceback) - 1);
        PyObject *file = PySequence_GetItem(frame, 0);
        PyObject *line = file ? PySequence_GetItem(frame, 1) : NULL;
        if (line != NULL) {
            item = PyUnicode_FromFormat("created at %S:%S", file, line);
        }
        Py_XDECREF(file);
        Py_XDECREF(line);
        if (item == NULL || PyList_Append(parts, item) < 0) {
            goto error;
        }
        Py_CLEAR(item);
    }
    return parts;
error:
    Py_XDECREF(item);
    Py_DECREF(parts);
    return NULL;
}

static PyObject *
handle_build_repr(gl_handle *h)
{
    int is_timer = PyObject_TypeCheck(h, handle_state(h)->TimerHandleType);
    PyObject *parts = handle_repr_info(h, is_timer);
    if (parts == NULL) {
        return NULL;
    }
    PyObject *sep = PyUnicode_FromString(" ");
    PyObject *joined = sep ? PyUnicode_Join(sep, parts) : NULL;
    Py_XDECREF(sep);
    Py_DECREF(parts);
    if (joined == NULL) {
        return NULL;
    }
    PyObject *res = PyUnicode_FromFormat("<%U>", joined);
    Py_DECREF(joined);
    return res;
}

static PyObject *
handle_repr(gl_handle *h)
{
    if (h->repr_cache != NULL) {
        return Py_NewRef(h->repr_cache);
    }
    int rc = Py_ReprEnter((PyObject *)h);
    if (rc != 0) {
        return rc > 0 ? PyUnicode_FromString("<Handle ...>") : NULL;
    }
    PyObject *res = handle_build_repr(h);
    Py_ReprLeave((PyObject *)h);
    return res;
}

void
gl_handle_cancel_internal(gl_handle *h)
{
    if (h->cancelled) {
        return;
    }
    h->cancelled = 1;
    if (((gl_loop *)h->loop)->debug && h->repr_cache == NULL) {
        /* Keep what the handle was for, as asyncio does in debug mode. */
        h->repr_cache = handle_repr(h);
        if (h->repr_cache == NULL) {
            PyErr_Clear();
        }
    }
    Py_CLEAR(h->callback);
    Py_CLEAR(h->args);
}

static PyObject *
handle_cancel(gl_handle *h, PyObject *Py_UNUSED(ignored))
{
    wait_run_end(h);
    gl_handle_cancel_internal(h);
    Py_RETURN_NONE;
}

static PyObject *
timer_cancel(gl_timer *t, PyObject *Py_UNUSED(ignored))
{
    if (!t->base.cancelled && t->scheduled) {
        gl_loop *loop = (gl_loop *)t->base.loop;
        loop->timers.cancelled++;
    }
    gl_handle_cancel_internal(&t->base);
    Py_RETURN_NONE;
}

static PyObject *
handle_cancelled(gl_handle *h, PyObject *Py_UNUSED(ignored))
{
    wait_run_end(h);
    return PyBool_FromLong(h->cancelled);
}

static PyObject *
handle_get_context(gl_handle *h, PyObject *Py_UNUSED(ignored))
{
    return Py_NewRef(h->context);
}

static PyObject *
handle_py_run(gl_handle *h, PyObject *Py_UNUSED(ignored))
{
    if (gl_handle_run(h) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
timer_when(gl_timer *t, PyObject *Py_UNUSED(ignored))
{
    return PyFloat_FromDouble(t->when);
}

static PyObject *
handle_get_callback(gl_handle *h, void *Py_UNUSED(closure))
{
    return Py_NewRef(h->callback ? h->callback : Py_None);
}

static PyObject *
handle_get_args(gl_handle *h, void *Py_UNUSED(closure))
{
    return Py_NewRef(h->args ? h->args : Py_None);
}

static PyObject *
handle_get_source_traceback(gl_handle *h, void *Py_UNUSED(closure))
{
    return Py_NewRef(h->source_traceback ? h->source_traceback : Py_None);
}

static PyObject *
handle_get_repr(gl_handle *h, void *Py_UNUSED(closure))
{
    return Py_NewRef(h->repr_cache ? h->repr_cache : Py_None);
}

static PyObject *
handle_get_cancelled(gl_handle *h, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(h->cancelled);
}

/* The references a handle holds, its type aside. */
static int
visit_fields(gl_handle *h, visitproc visit, void *arg)
{
    Py_VISIT(h->callback);
    Py_VISIT(h->args);
    Py_VISIT(h->context);
    Py_VISIT(h->loop);
    Py_VISIT(h->source_traceback);
    Py_VISIT(h->repr_cache);
    return 0;
}

static int
handle_traverse(gl_handle *h, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(h));
    return visit_fields(h, visit, arg);
}

int
gl_handle_traverse_queued(gl_handle *h, visitproc visit, void *arg)
{
    if (PyObject_GC_IsTracked((PyObject *)h)) {
        Py_VISIT(h);
        return 0;
    }
    if (Py_REFCNT(h) != 1) {
        return 0;
    }
    return visit_fields(h, visit, arg);
}

static int
handle_clear(gl_handle *h)
{
    Py_CLEAR(h->callback);
    Py_CLEAR(h->args);
    Py_CLEAR(h->context);
    Py_CLEAR(h->loop);
    Py_CLEAR(h->source_traceback);
    Py_CLEAR(h->repr_cache);
    return 0;
}

static void
handle_dealloc(gl_handle *h)
{
    PyTypeObject *tp = Py_TYPE(h);
    PyObject_GC_UnTrack(h);
    /* A threadsafe handle's weak references may be Python's managed ones. */
    if (h->weakreflist != NULL || h->threadsafe) {
        PyObject_ClearWeakRefs((PyObject *)h);
    }
    handle_clear(h);
    tp->tp_free(h);
    Py_DECREF(tp);
}

static PyObject *
handle_new_disallowed(PyTypeObject *type, PyObject *Py_UNUSED(args),
                      PyObject *Py_UNUSED(kwds))
{
    PyErr_Format(PyExc_TypeError,
                 "cannot create '%s' instances; use loop.call_soon()",
                 _PyType_Name(type));
    return NULL;
}

static PyMethodDef handle_methods[] = {
    {"cancel", (PyCFunction)handle_cancel, METH_NOARGS,
     PyDoc_STR("Cancel the callback; a no-op if it already ran or was cancelled.")},
    {"cancelled", (PyCFunction)handle_cancelled, METH_NOARGS,
     PyDoc_STR("Return True if the callback was cancelled.")},
    {"get_context", (PyCFunction)handle_get_context, METH_NOARGS,
     PyDoc_STR("Return the contextvars.Context the callback runs in.")},
    {"_run", (PyCFunction)handle_py_run, METH_NOARGS,
     PyDoc_STR("Run the callback now, reporting its exception to the loop.")},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef handle_getset[] = {
    {"_callback", (getter)handle_get_callback, NULL, NULL, NULL},
    {"_args", (getter)handle_get_args, NULL, NULL, NULL},
    {"_source_traceback", (getter)handle_get_source_traceback, NULL, NULL, NULL},
    {"_repr", (getter)handle_get_repr, NULL, NULL, NULL},
    {"_cancelled", (getter)handle_get_cancelled, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

#define HANDLE_MEMBERS \
    {"_loop", T_OBJECT, offsetof(gl_handle, loop), READONLY, NULL}, \
    {"_context", T_OBJECT, offsetof(gl_handle, context), READONLY, NULL}

static PyMemberDef handle_members[] = {
    HANDLE_MEMBERS,
    {"__weaklistoffset__", T_PYSSIZET, offsetof(gl_handle, weakreflist),
     READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

PyDoc_STRVAR(handle_doc,
"A callback scheduled with loop.call_soon(); behaves as asyncio.Handle.");

/* Handle's slots, and those of the 3.14 threadsafe type below. */
#define HANDLE_SLOTS(members) \
    {Py_tp_doc, (void *)handle_doc}, \
    {Py_tp_new, handle_new_disallowed}, \
    {Py_tp_dealloc, handle_dealloc}, \
    {Py_tp_traverse, handle_traverse}, \
    {Py_tp_clear, handle_clear}, \
    {Py_tp_repr, handle_repr}, \
    {Py_tp_methods, handle_methods}, \
    {Py_tp_getset, handle_getset}, \
    {Py_tp_members, members}, \
    {0, NULL}

static PyType_Slot handle_slots[] = {HANDLE_SLOTS(handle_members)};

PyType_Spec gl_handle_spec = {
    .name = "glibloop._core.Handle",
    .basicsize = sizeof(gl_handle),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE |
             Py_TPFLAGS_IMMUTABLETYPE,
    .slots = handle_slots,
};

/* call_soon_threadsafe()'s handles on 3.14+: glibloop's handle in a type
 * derived from asyncio's _ThreadSafeHandle, so they are that class (and an
 * asyncio.Handle) as asyncio's are; every method and attribute is the C
 * handle's.  The base's weak references are managed by Python, so this type
 * declares no __weaklistoffset__. */
static PyMemberDef threadsafe_members[] = {
    HANDLE_MEMBERS,
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot threadsafe_slots[] = {HANDLE_SLOTS(threadsafe_members)};

static PyType_Spec threadsafe_spec = {
    .name = "glibloop._core._ThreadSafeHandle",
    .basicsize = sizeof(gl_handle),
    /* Not immutable: Python refuses that over a mutable (Python) base. */
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = threadsafe_slots,
};

/* The base's slots must lie where gl_handle's first pointers are (see
 * internal.h), and its weak references must be Python's managed ones. */
static int
threadsafe_layout_matches(PyTypeObject *base)
{
    static const struct {
        const char *name;
        size_t offset;
    } slots[] = {
        {"_args", offsetof(gl_handle, args)},
        {"_callback", offsetof(gl_handle, callback)},
        {"_cancelled", offsetof(gl_handle, unused)},
        {"_context", offsetof(gl_handle, context)},
        {"_loop", offsetof(gl_handle, loop)},
        {"_repr", offsetof(gl_handle, repr_cache)},
        {"_source_traceback", offsetof(gl_handle, source_traceback)},
        {"_lock", offsetof(gl_handle, weakreflist)},
    };
    if (base->tp_basicsize != (Py_ssize_t)offsetof(gl_handle, cancelled) ||
        base->tp_weaklistoffset >= 0) {
        return 0;
    }
    for (size_t i = 0; i < sizeof(slots) / sizeof(slots[0]); i++) {
        if (gl_module_slot_offset((PyObject *)base, slots[i].name) !=
            slots[i].offset) {
            return 0;
        }
    }
    return 1;
}

PyTypeObject *
gl_handle_make_threadsafe_type(PyObject *module)
{
#if PY_VERSION_HEX >= 0x030E0000
    PyObject *events = PyImport_ImportModule("asyncio.events");
    if (events == NULL) {
        return NULL;
    }
    PyObject *base = PyObject_GetAttrString(events, "_ThreadSafeHandle");
    Py_DECREF(events);
    if (base == NULL) {
        return NULL;
    }
    PyObject *type = NULL;
    if (!PyType_Check(base) || !threadsafe_layout_matches((PyTypeObject *)base)) {
        PyErr_SetString(PyExc_RuntimeError,
                        "asyncio.events._ThreadSafeHandle has an unexpected layout");
    }
    else {
        type = PyType_FromModuleAndSpec(module, &threadsafe_spec, base);
    }
    Py_DECREF(base);
    return (PyTypeObject *)type;
#else
    (void)module;
    (void)threadsafe_spec;
    (void)threadsafe_layout_matches;
    return NULL;
#endif
}

/* TimerHandle ordering and equality follow asyncio.TimerHandle. */

static PyObject *
timer_richcompare(gl_timer *a, PyObject *other, int op)
{
    gl_state *st = handle_state(&a->base);
    if (!PyObject_TypeCheck(other, st->TimerHandleType)) {
        Py_RETURN_NOTIMPLEMENTED;
    }
    gl_timer *b = (gl_timer *)other;
    if (op == Py_EQ || op == Py_NE) {
        int eq = (a == b);
        if (!eq && a->when == b->when &&
            a->base.cancelled == b->base.cancelled) {
            int same = 1;
            if (a->base.callback != b->base.callback) {
                same = a->base.callback && b->base.callback
                    ? PyObject_RichCompareBool(a->base.callback,
                                               b->base.callback, Py_EQ)
                    : 0;
                if (same < 0) {
                    return NULL;
                }
            }
            if (same && a->base.args != b->base.args) {
                same = a->base.args && b->base.args
                    ? PyObject_RichCompareBool(a->base.args, b->base.args,
                                               Py_EQ)
                    : 0;
                if (same < 0) {
                    return NULL;
                }
            }
            eq = same;
        }
        return PyBool_FromLong(op == Py_EQ ? eq : !eq);
    }
    Py_RETURN_RICHCOMPARE(a->when, b->when, op);
}

static Py_hash_t
timer_hash(gl_timer *t)
{
    PyObject *when = PyFloat_FromDouble(t->when);
    if (when == NULL) {
        return -1;
    }
    Py_hash_t h = PyObject_Hash(when);
    Py_DECREF(when);
    return h;
}

static PyObject *
timer_get_when(gl_timer *t, void *Py_UNUSED(closure))
{
    return PyFloat_FromDouble(t->when);
}

static PyObject *
timer_get_scheduled(gl_timer *t, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(t->scheduled);
}

static PyMethodDef timer_methods[] = {
    {"cancel", (PyCFunction)timer_cancel, METH_NOARGS,
     PyDoc_STR("Cancel the timer; a no-op if it already ran or was cancelled.")},
    {"when", (PyCFunction)timer_when, METH_NOARGS,
     PyDoc_STR("Return the scheduled time as a loop.time() value.")},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef timer_getset[] = {
    {"_when", (getter)timer_get_when, NULL, NULL, NULL},
    {"_scheduled", (getter)timer_get_scheduled, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyDoc_STRVAR(timer_doc,
"A callback scheduled with loop.call_later() or loop.call_at(); behaves as\n"
"asyncio.TimerHandle.");

static PyType_Slot timer_slots[] = {
    {Py_tp_doc, (void *)timer_doc},
    {Py_tp_traverse, handle_traverse},
    {Py_tp_clear, handle_clear},
    {Py_tp_richcompare, timer_richcompare},
    {Py_tp_hash, timer_hash},
    {Py_tp_methods, timer_methods},
    {Py_tp_getset, timer_getset},
    {0, NULL},
};

PyType_Spec gl_timer_spec = {
    .name = "glibloop._core.TimerHandle",
    .basicsize = sizeof(gl_timer),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE,
    .slots = timer_slots,
};
