/* What the C transports share: the stream transport (stream.c), the pipe
 * transports (pipe.c) and the datagram transport (udp.c) begin with the
 * same fields (GL_TRANSPORT_HEAD, see internal.h), and this file holds the
 * code that works on those alone (but the write queue, wq.c): flow
 * control and its mirrors in the asyncio base's slots, scheduling, error
 * reporting, closing the file, GC, the type slots and the methods whose
 * behaviour asyncio gives every transport alike.  What differs by kind of
 * fd (reading, the write attempt, EOF, when connection_lost runs) stays in
 * the transport's own file. */
#include "internal.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include <structmember.h>

#define GL_TRANSPORT_HIGH_WATER (64 * 1024)   /* asyncio's defaults */
/* After a read at least this large the next one asks FIONREAD (see
 * gl_transport_read_data): above it the copy costs more than the ioctl. */
#define GL_TRANSPORT_EXACT_MIN (16 * 1024)
#define GL_TRANSPORT_READS_PER_EVENT 16

/* ------------------------------------------------------------------ */
/* set-up and small helpers                                           */

static void
mirror_paused(gl_transport *t)
{
    if (t->fc_loop != NULL) {
        Py_XSETREF(t->fc_protocol_paused, PyBool_FromLong(t->protocol_paused));
    }
}

static int
mirror_limits(gl_transport *t)
{
    if (t->fc_loop == NULL) {
        return 0;
    }
    PyObject *high = PyLong_FromSsize_t(t->high_water);
    PyObject *low = PyLong_FromSsize_t(t->low_water);
    if (high == NULL || low == NULL) {
        Py_XDECREF(high);
        Py_XDECREF(low);
        return -1;
    }
    Py_XSETREF(t->fc_high_water, high);
    Py_XSETREF(t->fc_low_water, low);
    return 0;
}

int
gl_transport_init(gl_transport *t, gl_loop *loop, int fd, int flow_control,
                  PyObject *context)
{
    t->loop = (gl_loop *)Py_NewRef(loop);
    t->fd = fd;
    t->context = gl_loop_context(context);
    if (t->context == NULL) {
        return -1;
    }
    t->high_water = GL_TRANSPORT_HIGH_WATER;
    t->low_water = GL_TRANSPORT_HIGH_WATER / 4;
    if (flow_control) {
        t->fc_loop = Py_NewRef((PyObject *)loop);
        mirror_paused(t);
        return mirror_limits(t);
    }
    return 0;
}

int
gl_transport_set_protocol(gl_transport *t, PyObject *protocol, int detect_buffered)
{
    int buffered = 0;
    if (detect_buffered) {
        buffered = PyObject_IsInstance(protocol, GL_ST(t)->buffered_protocol);
        if (buffered < 0) {
            return -1;
        }
    }
    Py_XSETREF(t->protocol, Py_NewRef(protocol));
    Py_CLEAR(t->data_received);
    Py_CLEAR(t->get_buffer);
    Py_CLEAR(t->buffer_updated);
    t->buffered = buffered;
    return 0;
}

PyObject *
gl_transport_protocol_method(gl_transport *t, PyObject **cache, PyObject *name)
{
    if (*cache == NULL) {
        *cache = PyObject_GetAttr(t->protocol, name);
    }
    return *cache;
}

int
gl_transport_schedule_call(gl_transport *t, PyObject *callable, PyObject *arg)
{
    if (gl_loop_check_not_closed(t->loop) < 0) {
        return -1;
    }
    PyObject *args = arg ? PyTuple_Pack(1, arg) : PyTuple_New(0);
    int rc = args ? gl_loop_call_soon(t->loop, callable, args, t->context) : -1;
    Py_XDECREF(args);
    return rc;
}

int
gl_transport_schedule_method(gl_transport *t, PyObject *name, PyObject *arg)
{
    if (gl_loop_check_not_closed(t->loop) < 0) {
        return -1;
    }
    PyObject *bound = PyObject_GetAttr((PyObject *)t, name);
    if (bound == NULL) {
        return -1;
    }
    int rc = gl_transport_schedule_call(t, bound, arg);
    Py_DECREF(bound);
    return rc;
}

int
gl_transport_schedule_start(gl_transport *t, PyObject *waiter, int start_reading)
{
    gl_state *n = GL_ST(t);
    PyObject *made = PyObject_GetAttr(t->protocol, n->s_connection_made);
    if (made == NULL) {
        return -1;
    }
    int rc = gl_transport_schedule_call(t, made, (PyObject *)t);
    Py_DECREF(made);
    if (rc < 0 ||
        (start_reading && gl_transport_schedule_method(t, n->s__start_reading, NULL) < 0)) {
        return -1;
    }
    if (waiter == NULL || waiter == Py_None) {
        return 0;
    }
    PyObject *args = PyTuple_Pack(2, waiter, Py_None);
    rc = args ? gl_loop_call_soon(t->loop, n->set_result_unless_cancelled, args,
                                  t->context)
              : -1;
    Py_XDECREF(args);
    return rc;
}

void
gl_transport_log(gl_transport *t, const char *level, const char *fmt)
{
    PyObject *r = PyObject_CallMethod(GL_ST(t)->logger, level, "sO", fmt, (PyObject *)t);
    if (r == NULL) {
        PyErr_WriteUnraisable((PyObject *)t);
    }
    Py_XDECREF(r);
}

void
gl_transport_unwatch(gl_transport *t)
{
    if (t->watching) {
        t->watching = 0;
        gl_poll_unwatch(&t->loop->poll, t->fd, (PyObject *)t);
    }
}

void
gl_transport_close_file(gl_transport *t)
{
    PyObject *file = t->file;
    if (file == NULL) {
        return;
    }
    t->file = NULL;
    PyObject *r = PyObject_CallMethod(file, "close", NULL);
    if (r == NULL) {
        PyErr_WriteUnraisable((PyObject *)t);
    }
    Py_XDECREF(r);
    Py_DECREF(file);
}

/* ------------------------------------------------------------------ */
/* reading                                                            */

/* The read straight into the bytes object; GL_RC_NOT_DONE: not done
 * (nothing queued, or no FIONREAD on this fd), use the read buffer. */
static Py_ssize_t
read_exact(gl_transport *t, gl_transport_read_fn read_fn, PyObject **data,
           Py_ssize_t *queued)
{
    int avail = 0;
    if (ioctl(t->fd, FIONREAD, &avail) < 0) {
        t->no_fionread = 1;
        return GL_RC_NOT_DONE;
    }
    if (avail <= 0) {
        return GL_RC_NOT_DONE;  /* maybe EOF or an error: the read buffer's read says */
    }
    Py_ssize_t want = avail < GL_READBUF_SIZE ? avail : GL_READBUF_SIZE;
    PyObject *bytes = PyBytes_FromStringAndSize(NULL, want);
    if (bytes == NULL) {
        return GL_RC_ERROR;
    }
    Py_ssize_t n = read_fn(t, PyBytes_AS_STRING(bytes), (size_t)want);
    if (n <= 0) {
        Py_DECREF(bytes);
        return n;
    }
    if (n < want && _PyBytes_Resize(&bytes, n) < 0) {
        return GL_RC_ERROR;
    }
    *data = bytes;
    *queued = avail;
    return n;
}

Py_ssize_t
gl_transport_read_data(gl_transport *t, int can_ask, gl_transport_read_fn read_fn,
                       PyObject **data, Py_ssize_t *queued)
{
    *data = NULL;
    *queued = 0;
    Py_ssize_t n = GL_RC_NOT_DONE;
    if (can_ask && !t->no_fionread && t->last_read >= GL_TRANSPORT_EXACT_MIN) {
        n = read_exact(t, read_fn, data, queued);
    }
    if (n == GL_RC_NOT_DONE) {
        char *buf = gl_poll_readbuf(&t->loop->poll);
        if (buf == NULL) {
            return GL_RC_ERROR;
        }
        n = read_fn(t, buf, GL_READBUF_SIZE);
        if (n > 0 && (*data = PyBytes_FromStringAndSize(buf, n)) == NULL) {
            return GL_RC_ERROR;
        }
    }
    if (n > 0) {
        t->last_read = n;
    }
    return n;
}

int
gl_transport_data_received(gl_transport *t, PyObject *data)
{
    PyObject *cb = gl_transport_protocol_method(t, &t->data_received,
                                                GL_ST(t)->s_data_received);
    PyObject *r = cb ? PyObject_CallOneArg(cb, data) : NULL;
    Py_DECREF(data);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

int
gl_transport_get_buffer(gl_transport *t, Py_buffer *view)
{
    PyObject *cb = gl_transport_protocol_method(t, &t->get_buffer, GL_ST(t)->s_get_buffer);
    PyObject *hint = PyLong_FromLong(-1);
    PyObject *buf = (cb && hint) ? PyObject_CallOneArg(cb, hint) : NULL;
    Py_XDECREF(hint);
    if (buf == NULL) {
        return -1;
    }
    int rc = PyObject_GetBuffer(buf, view, PyBUF_WRITABLE);  /* view keeps buf */
    Py_DECREF(buf);
    if (rc < 0) {
        return -1;
    }
    if (view->len == 0) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_RuntimeError, "get_buffer() returned an empty buffer");
        return -1;
    }
    return 0;
}

int
gl_transport_buffer_updated(gl_transport *t, Py_ssize_t n)
{
    PyObject *cb = gl_transport_protocol_method(t, &t->buffer_updated,
                                                GL_ST(t)->s_buffer_updated);
    PyObject *count = PyLong_FromSsize_t(n);
    PyObject *r = (cb && count) ? PyObject_CallOneArg(cb, count) : NULL;
    Py_XDECREF(count);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

/* ------------------------------------------------------------------ */
/* the reading state machine                                          */

int
gl_transport_can_read(gl_transport *t)
{
    return t->started && !t->paused && !t->closing && !t->read_eof && t->file != NULL;
}

static int
schedule_read(gl_transport *t)
{
    if (t->read_scheduled) {
        return 0;
    }
    if (gl_transport_schedule_method(t, GL_ST(t)->s__read_ready, NULL) < 0) {
        return -1;
    }
    t->read_scheduled = 1;
    return 0;
}

int
gl_transport_read_loop(gl_transport *t)
{
    t->read_pending = 1;
    for (int i = 0; i < GL_TRANSPORT_READS_PER_EVENT; i++) {
        if (!gl_transport_can_read(t)) {
            return 0;  /* read_pending stays set for resume_reading() */
        }
        int rc = t->kind_ops->read_once(t);
        if (rc <= 0) {
            return rc;
        }
    }
    if (gl_transport_can_read(t) && schedule_read(t) < 0) {
        PyErr_WriteUnraisable((PyObject *)t);
    }
    return 0;
}

/* The events, and those that arrive meanwhile, in the current context. */
static int
handle_events(gl_transport *t, uint32_t ev)
{
    t->busy = 1;
    int rc;
    for (;;) {
        rc = t->kind_ops->handle_events(t, ev);
        if (rc < 0 || !t->deferred) {
            break;
        }
        ev = t->deferred;
        t->deferred = 0;
    }
    t->busy = 0;
    return rc;
}

int
gl_transport_on_event(gl_loop *loop, PyObject *owner, uint32_t ev)
{
    gl_transport *t = GL_TRANSPORT(owner);
    if (t->busy) {
        /* A protocol callback of ours runs a nested main loop: handle this
         * when it returns, never re-enter the protocol. */
        t->deferred |= ev;
        return 0;
    }
    gl_sched_frame f;
    gl_sched_enter(loop, t->context, &f);
    return gl_sched_leave(loop, &f, handle_events(t, ev));
}

PyObject *
gl_transport_read_ready(PyObject *self, PyObject *Py_UNUSED(unused))
{
    gl_transport *t = GL_TRANSPORT(self);
    t->read_scheduled = 0;
    if (t->busy) {
        t->deferred |= EPOLLIN;
        Py_RETURN_NONE;
    }
    if (!gl_transport_can_read(t)) {
        Py_RETURN_NONE;
    }
    t->busy = 1;
    int rc = gl_transport_read_loop(t);
    t->busy = 0;
    if (rc == 0 && t->deferred) {
        /* a handle queued in the transport's context: already in it */
        uint32_t ev = t->deferred;
        t->deferred = 0;
        Py_INCREF(t);
        rc = handle_events(t, ev);
        Py_DECREF(t);
    }
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

PyObject *
gl_transport_start_reading(PyObject *self, PyObject *Py_UNUSED(unused))
{
    gl_transport *t = GL_TRANSPORT(self);
    t->started = 1;
    if (gl_transport_can_read(t) && t->read_pending && schedule_read(t) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

PyObject *
gl_transport_is_reading(PyObject *self, PyObject *Py_UNUSED(unused))
{
    gl_transport *t = GL_TRANSPORT(self);
    return PyBool_FromLong(!t->paused && !t->closing);
}

PyObject *
gl_transport_pause_reading(PyObject *self, PyObject *Py_UNUSED(unused))
{
    gl_transport *t = GL_TRANSPORT(self);
    if (t->closing || t->paused) {
        Py_RETURN_NONE;
    }
    t->paused = 1;
    if (t->loop->debug) {
        gl_transport_log(t, "debug", "%r pauses reading");
    }
    Py_RETURN_NONE;
}

PyObject *
gl_transport_resume_reading(PyObject *self, PyObject *Py_UNUSED(unused))
{
    gl_transport *t = GL_TRANSPORT(self);
    if (t->closing || !t->paused) {
        Py_RETURN_NONE;
    }
    t->paused = 0;
    /* No edge comes for data that arrived while paused: go and look. */
    if (gl_transport_can_read(t) && t->read_pending && schedule_read(t) < 0) {
        return NULL;
    }
    if (t->loop->debug) {
        gl_transport_log(t, "debug", "%r resumes reading");
    }
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ */
/* errors and the end of the connection                               */

static int
is_quiet(PyObject *exc, int eio_only)
{
    if (!PyErr_GivenExceptionMatches(exc, PyExc_OSError)) {
        return 0;
    }
    if (!eio_only) {
        return 1;
    }
    PyObject *no = PyObject_GetAttrString(exc, "errno");
    int quiet = no != NULL && PyLong_Check(no) && PyLong_AsLong(no) == EIO;
    Py_XDECREF(no);
    PyErr_Clear();
    return quiet;
}

int
gl_transport_fatal_error(gl_transport *t, const char *message, int eio_only,
                         gl_transport_close_fn close)
{
    PyObject *exc = gl_err_fetch();
    if (exc == NULL) {
        return 0;
    }
    Py_INCREF(t);
    if (!is_quiet(exc, eio_only) &&
        gl_loop_report_error(t->loop, exc, NULL, (PyObject *)t, t->protocol, NULL,
                             "%s", message) < 0) {
        /* The handler raised SystemExit/KeyboardInterrupt: as asyncio's
         * _fatal_error, it propagates before the transport is closed. */
        Py_DECREF(exc);
        Py_DECREF(t);
        return -1;
    }
    else if (t->loop->debug) {
        PyObject *r = PyObject_CallMethod(GL_ST(t)->logger, "debug", "sOs", "%r: %s",
                                          (PyObject *)t, message);
        if (r == NULL) {
            PyErr_WriteUnraisable((PyObject *)t);
        }
        Py_XDECREF(r);
    }
    if (close(t, exc) < 0) {
        PyErr_WriteUnraisable((PyObject *)t);
    }
    Py_DECREF(exc);
    Py_DECREF(t);
    return 0;
}

int
gl_transport_close(gl_transport *t)
{
    if (t->closing) {
        return 0;
    }
    t->closing = 1;
    if (t->wsize > 0) {
        return 0;  /* the writable edge that empties the queue finishes */
    }
    t->conn_lost++;
    return gl_transport_schedule_method(t, GL_ST(t)->s__call_connection_lost, Py_None);
}

int
gl_transport_force_close(gl_transport *t, PyObject *exc)
{
    if (t->conn_lost) {
        return 0;
    }
    gl_wq_clear(t);
    t->closing = 1;
    t->conn_lost++;
    return gl_transport_schedule_method(t, GL_ST(t)->s__call_connection_lost,
                                        exc ? exc : Py_None);
}

PyObject *
gl_transport_connection_lost(gl_transport *t, PyObject *exc, int call)
{
    PyObject *res = NULL;
    if (call && t->protocol != NULL) {
        res = PyObject_CallMethodOneArg(t->protocol, GL_ST(t)->s_connection_lost, exc);
    }
    else {
        res = Py_NewRef(Py_None);
    }
    PyObject *raised = res ? NULL : gl_err_fetch();
    Py_XDECREF(res);
    gl_transport_unwatch(t);
    gl_transport_close_file(t);
    Py_CLEAR(t->protocol);
    Py_CLEAR(t->data_received);
    Py_CLEAR(t->get_buffer);
    Py_CLEAR(t->buffer_updated);
    if (t->fc_loop != NULL) {
        Py_SETREF(t->fc_loop, Py_NewRef(Py_None));
    }
    return raised;
}

/* ------------------------------------------------------------------ */
/* flow control                                                       */

static int
call_protocol_hook(gl_transport *t, PyObject *name, const char *message)
{
    PyObject *proto = Py_NewRef(t->protocol);
    PyObject *r = PyObject_CallMethodNoArgs(proto, name);
    if (r == NULL) {
        PyObject *exc = gl_err_fetch();
        int rc = gl_loop_report_error(t->loop, exc, NULL, (PyObject *)t, proto, NULL,
                                      "%s", message);
        Py_DECREF(exc);
        Py_DECREF(proto);
        return rc;
    }
    Py_DECREF(r);
    Py_DECREF(proto);
    return 0;
}

int
gl_transport_maybe_pause(gl_transport *t)
{
    if (t->wsize <= t->high_water || t->protocol_paused || t->protocol == NULL) {
        return 0;
    }
    t->protocol_paused = 1;
    mirror_paused(t);
    return call_protocol_hook(t, GL_ST(t)->s_pause_writing,
                              "protocol.pause_writing() failed");
}

int
gl_transport_maybe_resume(gl_transport *t)
{
    if (!t->protocol_paused || t->wsize > t->low_water || t->protocol == NULL) {
        return 0;
    }
    t->protocol_paused = 0;
    mirror_paused(t);
    return call_protocol_hook(t, GL_ST(t)->s_resume_writing,
                              "protocol.resume_writing() failed");
}

/* ------------------------------------------------------------------ */
/* GC and the type slots                                              */

int
gl_transport_traverse(gl_transport *t, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(t));
    Py_VISIT(t->extra);
    Py_VISIT(t->fc_high_water);
    Py_VISIT(t->fc_loop);
    Py_VISIT(t->fc_low_water);
    Py_VISIT(t->fc_protocol_paused);
    Py_VISIT(t->loop);
    Py_VISIT(t->context);
    Py_VISIT(t->file);
    Py_VISIT(t->protocol);
    Py_VISIT(t->data_received);
    Py_VISIT(t->get_buffer);
    Py_VISIT(t->buffer_updated);
    Py_VISIT(t->dict);
    for (Py_ssize_t i = 0; i < t->wq_len; i++) {
        Py_VISIT(t->wq[t->wq_head + i].obj);
    }
    return 0;
}

int
gl_transport_clear(gl_transport *t)
{
    Py_CLEAR(t->extra);
    Py_CLEAR(t->fc_high_water);
    Py_CLEAR(t->fc_loop);
    Py_CLEAR(t->fc_low_water);
    Py_CLEAR(t->fc_protocol_paused);
    Py_CLEAR(t->protocol);
    Py_CLEAR(t->data_received);
    Py_CLEAR(t->get_buffer);
    Py_CLEAR(t->buffer_updated);
    Py_CLEAR(t->dict);
    gl_wq_clear(t);
    Py_CLEAR(t->file);
    Py_CLEAR(t->context);
    Py_CLEAR(t->loop);
    return 0;
}

void
gl_transport_finalize(PyObject *self)
{
    gl_transport *t = GL_TRANSPORT(self);
    if (t->file == NULL) {
        return;
    }
    PyObject *exc = gl_err_fetch();
    if (PyErr_ResourceWarning(self, 1, "unclosed transport %R", self) < 0) {
        PyErr_WriteUnraisable(self);
    }
    if (t->loop != NULL) {
        gl_transport_unwatch(t);
    }
    gl_transport_close_file(t);
    if (exc != NULL) {
        gl_err_restore(exc);
    }
}

void
gl_transport_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (PyObject_CallFinalizerFromDealloc(self) < 0) {
        return;
    }
    if (GL_TRANSPORT(self)->weakreflist != NULL) {
        PyObject_ClearWeakRefs(self);
    }
    tp->tp_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

/* The base's instance fields must be exactly the slots our first fields
 * stand for: _extra alone (asyncio's BaseTransport and its ABC
 * subclasses), or _extra and _FlowControlMixin's four. */
static int
layout_matches(PyObject *base)
{
    if (!PyType_Check(base)) {
        return 0;
    }
    Py_ssize_t size = ((PyTypeObject *)base)->tp_basicsize;
    if (gl_module_slot_offset(base, "_extra") != offsetof(gl_transport, extra)) {
        return 0;
    }
    if (size == (Py_ssize_t)(offsetof(gl_transport, extra) + sizeof(PyObject *))) {
        return 1;
    }
    return size == (Py_ssize_t)(offsetof(gl_transport, fc_protocol_paused) +
                                sizeof(PyObject *)) &&
           gl_module_slot_offset(base, "_high_water") == offsetof(gl_transport, fc_high_water) &&
           gl_module_slot_offset(base, "_loop") == offsetof(gl_transport, fc_loop) &&
           gl_module_slot_offset(base, "_low_water") == offsetof(gl_transport, fc_low_water) &&
           gl_module_slot_offset(base, "_protocol_paused") ==
               offsetof(gl_transport, fc_protocol_paused);
}

PyObject *
gl_transport_bases(const char *base_name, const char *base2_name)
{
    PyObject *mod = PyImport_ImportModule("asyncio.transports");
    if (mod == NULL) {
        return NULL;
    }
    PyObject *base = PyObject_GetAttrString(mod, base_name);
    PyObject *base2 = (base && base2_name) ? PyObject_GetAttrString(mod, base2_name) : NULL;
    Py_DECREF(mod);
    if (base == NULL || (base2_name != NULL && base2 == NULL)) {
        Py_XDECREF(base);
        return NULL;
    }
    PyObject *bases = NULL;
    if (layout_matches(base)) {
        bases = base2 ? PyTuple_Pack(2, base, base2) : PyTuple_Pack(1, base);
    }
    else {
        PyErr_Format(PyExc_RuntimeError,
                     "asyncio.transports.%s has an unexpected layout", base_name);
    }
    Py_DECREF(base);
    Py_XDECREF(base2);
    return bases;
}

/* ------------------------------------------------------------------ */
/* extra info                                                         */

static int
set_sock_info(PyObject *dict, PyObject *sock, PyObject *name, PyObject *method)
{
    PyObject *v = PyObject_CallMethodNoArgs(sock, method);
    if (v == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_OSError)) {
            return -1;
        }
        PyErr_Clear();
        v = Py_NewRef(Py_None);
    }
    int rc = PyDict_SetItem(dict, name, v);
    Py_DECREF(v);
    return rc;
}

PyObject *
gl_transport_extra(gl_state *st, PyObject *sock, PyObject *extra)
{
    gl_state *n = st;
    PyObject *d = extra && extra != Py_None ? PyDict_Copy(extra) : PyDict_New();
    if (d == NULL) {
        return NULL;
    }
    PyObject *trsock = PyObject_CallOneArg(n->transport_socket, sock);
    if (trsock == NULL || PyDict_SetItem(d, n->s_socket, trsock) < 0 ||
        set_sock_info(d, sock, n->s_sockname, n->s_getsockname) < 0) {
        Py_XDECREF(trsock);
        Py_DECREF(d);
        return NULL;
    }
    Py_DECREF(trsock);
    int has = PyDict_Contains(d, n->s_peername);
    if (has < 0 || (has == 0 && set_sock_info(d, sock, n->s_peername,
                                              n->s_getpeername) < 0)) {
        Py_DECREF(d);
        return NULL;
    }
    return d;
}

/* ------------------------------------------------------------------ */
/* methods                                                            */

PyObject *
gl_transport_get_extra_info(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames)
{
    static const char *const names[] = {"name", "default"};
    PyObject *vals[2] = {NULL, Py_None};
    Py_ssize_t nk = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "get_extra_info() takes at most 2 arguments");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        vals[i] = args[i];
    }
    for (Py_ssize_t i = 0; i < nk; i++) {
        PyObject *k = PyTuple_GET_ITEM(kwnames, i);
        int found = 0;
        for (int j = 0; j < 2; j++) {
            if (PyUnicode_CompareWithASCIIString(k, names[j]) == 0) {
                vals[j] = args[nargs + i];
                found = 1;
            }
        }
        if (!found) {
            PyErr_Format(PyExc_TypeError,
                         "get_extra_info() got an unexpected keyword argument '%U'", k);
            return NULL;
        }
    }
    if (vals[0] == NULL) {
        PyErr_SetString(PyExc_TypeError, "get_extra_info() missing argument 'name'");
        return NULL;
    }
    PyObject *extra = GL_TRANSPORT(self)->extra;
    PyObject *v = extra ? PyDict_GetItemWithError(extra, vals[0]) : NULL;
    if (v == NULL && PyErr_Occurred()) {
        return NULL;
    }
    return Py_NewRef(v ? v : vals[1]);
}

PyObject *
gl_transport_is_closing(PyObject *self, PyObject *Py_UNUSED(unused))
{
    return PyBool_FromLong(GL_TRANSPORT(self)->closing);
}

PyObject *
gl_transport_get_protocol(PyObject *self, PyObject *Py_UNUSED(unused))
{
    PyObject *protocol = GL_TRANSPORT(self)->protocol;
    return Py_NewRef(protocol ? protocol : Py_None);
}

static int
water_arg(PyObject *obj, Py_ssize_t *out)
{
    if (obj == Py_None) {
        *out = -1;
        return 0;
    }
    *out = PyNumber_AsSsize_t(obj, PyExc_OverflowError);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

PyObject *
gl_transport_set_write_buffer_limits(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"high", "low", NULL};
    gl_transport *t = GL_TRANSPORT(self);
    PyObject *high_obj = Py_None, *low_obj = Py_None;
    Py_ssize_t high, low;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|OO:set_write_buffer_limits",
                                     kwlist, &high_obj, &low_obj) ||
        water_arg(high_obj, &high) < 0 || water_arg(low_obj, &low) < 0) {
        return NULL;
    }
    if (high_obj == Py_None) {
        high = low_obj == Py_None ? GL_TRANSPORT_HIGH_WATER : 4 * low;
    }
    if (low_obj == Py_None) {
        low = high / 4;
    }
    if (!(high >= low && low >= 0)) {
        PyErr_Format(PyExc_ValueError, "high (%zd) must be >= low (%zd) must be >= 0",
                     high, low);
        return NULL;
    }
    t->high_water = high;
    t->low_water = low;
    if (mirror_limits(t) < 0 || gl_transport_maybe_pause(t) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

PyObject *
gl_transport_get_write_buffer_limits(PyObject *self, PyObject *Py_UNUSED(unused))
{
    gl_transport *t = GL_TRANSPORT(self);
    return Py_BuildValue("(nn)", t->low_water, t->high_water);
}

PyObject *
gl_transport_get_write_buffer_size(PyObject *self, PyObject *Py_UNUSED(unused))
{
    return PyLong_FromSsize_t(GL_TRANSPORT(self)->wsize);
}
