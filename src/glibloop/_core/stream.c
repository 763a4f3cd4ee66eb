/* The stream transport (TCP and Unix sockets).
 *
 * The socket is registered once in the loop's epoll set, edge-triggered
 * for reading and writing, and stays so until the connection is lost:
 * pausing reading or having nothing to write costs no epoll_ctl.  Because
 * edges are not repeated, the transport remembers an edge it could not act
 * on (reading paused or not started yet) in read_pending and reads when
 * reading resumes.
 *
 * A read goes from the epoll event into the loop's one read buffer and on
 * to protocol.data_received() (bulk data straight into the bytes object,
 * see gl_transport_read_data), or straight into the buffer a
 * BufferedProtocol hands out.  A write tries send() at once and queues only
 * what the kernel did not take; the queue is flushed with sendmsg() on the
 * next writable edge.  Behaviour (flow control, EOF, errors, messages)
 * follows asyncio's selector transport.
 *
 * The type subclasses asyncio.transports._FlowControlMixin (a Transport;
 * asyncio's sendfile fallback insists on it).  What every C transport
 * shares (the base's slots, the write queue, flow control, closing the
 * socket, the type's slots) is in transport.c. */
#include "internal.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <structmember.h>

typedef struct {
    GL_TRANSPORT_HEAD            /* file: the socket, NULL once lost */
    PyObject *server;
    PyObject *empty_waiter;
    int peer_closed;             /* EPOLLRDHUP/HUP/ERR seen: a short read no
                                    longer means drained, EOF may follow */
    int eof;                     /* write_eof() */
    int protocol_connected;
} gl_stream;

#define T(t) GL_TRANSPORT(t)

/* ------------------------------------------------------------------ */
/* errors                                                             */

/* asyncio's _fatal_error (see transport.c); takes the current exception.
 * -1 only for SystemExit/KeyboardInterrupt, which are put back. */
static int
fatal_error(gl_stream *t, const char *message)
{
    return gl_transport_fatal_error(T(t), message, 0, gl_transport_force_close);
}

/* ------------------------------------------------------------------ */
/* reading                                                            */

static int
on_eof(gl_stream *t)
{
    if (t->loop->debug) {
        gl_transport_log(T(t), "debug", "%r received EOF");
    }
    PyObject *r = PyObject_CallMethodNoArgs(t->protocol, GL_ST(t)->s_eof_received);
    if (r == NULL) {
        return fatal_error(t, "Fatal error: protocol.eof_received() call failed.");
    }
    int keep_open = PyObject_IsTrue(r);
    Py_DECREF(r);
    if (keep_open < 0) {
        return fatal_error(t, "Fatal error: protocol.eof_received() call failed.");
    }
    if (keep_open) {
        /* The protocol may still write; we cannot receive any more. */
        t->read_eof = 1;
        return 0;
    }
    PyObject *c = PyObject_CallMethodNoArgs((PyObject *)t, GL_ST(t)->s_close);
    if (c == NULL) {
        return fatal_error(t, "Fatal error on transport");
    }
    Py_DECREF(c);
    return 0;
}

/* recv() with the error handling shared by both protocol kinds: returns
 * the byte count, 0 for EOF (after on_eof), GL_RC_AGAIN when nothing more
 * can be read now (would block, or the transport failed and was closed),
 * GL_RC_STOP for an exception that must stop the loop. */
static Py_ssize_t
recv_some(gl_stream *t, char *buf, size_t size)
{
    ssize_t n;
    do {
        n = recv(t->fd, buf, size, MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n > 0) {
        return n;
    }
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            t->read_pending = 0;
            return GL_RC_AGAIN;
        }
        PyErr_SetFromErrno(PyExc_OSError);
        return fatal_error(t, "Fatal read error on socket transport") < 0 ? GL_RC_STOP : GL_RC_AGAIN;
    }
    t->read_pending = 0;
    return on_eof(t) < 0 ? GL_RC_STOP : 0;
}

static Py_ssize_t
read_fn(gl_transport *t, char *buf, size_t size)
{
    return recv_some((gl_stream *)t, buf, size);
}

/* One read.  1: there may be more; 0: drained or stopped; -1:
 * SystemExit/KeyboardInterrupt. */
static int
read_once_data(gl_stream *t)
{
    PyObject *data;
    Py_ssize_t queued;
    Py_ssize_t n = gl_transport_read_data(T(t), 1, read_fn, &data, &queued);
    if (n == GL_RC_ERROR) {
        return fatal_error(t, "Fatal read error on socket transport");
    }
    if (n <= 0) {
        return n == GL_RC_STOP ? -1 : 0;
    }
    /* A short read drained the socket: later data makes a new edge.  Not
     * so once the peer closed: its FIN came with this edge. */
    t->read_pending = (queued ? queued > n : n == GL_READBUF_SIZE) || t->peer_closed;
    if (gl_transport_data_received(T(t), data) < 0) {
        return fatal_error(t, "Fatal error: protocol.data_received() call failed.");
    }
    return t->read_pending;
}

static int
read_once_buffered(gl_stream *t)
{
    Py_buffer view;
    if (gl_transport_get_buffer(T(t), &view) < 0) {
        return fatal_error(t, "Fatal error: protocol.get_buffer() call failed.");
    }
    Py_ssize_t size = view.len;
    Py_ssize_t n = recv_some(t, view.buf, (size_t)size);
    PyBuffer_Release(&view);
    if (n <= 0) {
        return n == GL_RC_STOP ? -1 : 0;
    }
    t->read_pending = n == size || t->peer_closed;
    if (gl_transport_buffer_updated(T(t), n) < 0) {
        return fatal_error(t, "Fatal error: protocol.buffer_updated() call failed.");
    }
    return t->read_pending;
}

/* ------------------------------------------------------------------ */
/* writing                                                            */

static int
shutdown_write(gl_stream *t)
{
    PyObject *how = PyLong_FromLong(SHUT_WR);
    PyObject *r = how ? PyObject_CallMethodOneArg(t->file, GL_ST(t)->s_shutdown, how)
                      : NULL;
    Py_XDECREF(how);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

static void
empty_waiter_done(gl_stream *t, PyObject *exc)
{
    if (t->empty_waiter == NULL) {
        return;
    }
    int r = exc ? gl_loop_future_set_exception(t->loop->st, t->empty_waiter, exc)
                : gl_loop_future_set_result(t->loop->st, t->empty_waiter, Py_None);
    if (r < 0) {
        PyErr_WriteUnraisable((PyObject *)t);
    }
}

/* Sends as much of the queue as the kernel takes.  0 on success or a
 * handled failure, -1 for SystemExit/KeyboardInterrupt. */
static int
flush(gl_stream *t)
{
    if (gl_wq_flush(T(t), 1) == 0) {
        return 0;
    }
    PyObject *exc = gl_err_fetch();
    gl_wq_clear(T(t));
    gl_err_restore(Py_NewRef(exc));
    int rc = fatal_error(t, "Fatal write error on socket transport");
    empty_waiter_done(t, exc);
    Py_DECREF(exc);
    return rc;
}

/* The writable edge: flush, then what asyncio does once the buffer is
 * empty (resume the protocol, wake sendfile, finish closing or EOF). */
static int
write_ready(gl_stream *t)
{
    if (t->conn_lost || t->wsize == 0) {
        return 0;
    }
    if (flush(t) < 0) {
        return -1;
    }
    if (t->conn_lost) {
        return 0;
    }
    if (gl_transport_maybe_resume(T(t)) < 0) {
        return -1;
    }
    if (t->wsize > 0 || t->conn_lost) {
        return 0;
    }
    empty_waiter_done(t, NULL);
    if (t->closing) {
        t->conn_lost++;
        PyObject *r = PyObject_CallMethodOneArg((PyObject *)t,
                                                GL_ST(t)->s__call_connection_lost,
                                                Py_None);
        if (r == NULL) {
            return fatal_error(t, "Fatal error on transport");
        }
        Py_DECREF(r);
    }
    else if (t->eof && shutdown_write(t) < 0) {
        return fatal_error(t, "Fatal write error on socket transport");
    }
    return 0;
}

static PyObject *
stream_write(gl_stream *t, PyObject *data)
{
    if (gl_wq_check_data(data) < 0) {
        return NULL;
    }
    if (t->eof) {
        PyErr_SetString(PyExc_RuntimeError, "Cannot call write() after write_eof()");
        return NULL;
    }
    if (t->empty_waiter != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "unable to write; sendfile is in progress");
        return NULL;
    }
    int rc = gl_wq_write(T(t), data, 1, t->conn_lost || t->file == NULL,
                                "socket.send() raised exception.");
    if (rc < 0 || (rc == 0 && fatal_error(t, "Fatal write error on socket transport") < 0)) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
stream_writelines(gl_stream *t, PyObject *list)
{
    PyObject *joined = gl_wq_join(list);
    if (joined == NULL) {
        return NULL;
    }
    PyObject *r = stream_write(t, joined);
    Py_DECREF(joined);
    return r;
}

static PyObject *
stream_write_eof(gl_stream *t, PyObject *Py_UNUSED(ignored))
{
    if (t->closing || t->eof) {
        Py_RETURN_NONE;
    }
    t->eof = 1;
    if (t->wsize == 0 && shutdown_write(t) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ */
/* the epoll event                                                    */

static int
handle_events(gl_transport *tt, uint32_t ev)
{
    gl_stream *t = (gl_stream *)tt;
    if (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        t->peer_closed = 1;
    }
    if ((ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)) && t->wsize > 0 && write_ready(t) < 0) {
        return -1;
    }
    if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP)) {
        if (gl_transport_can_read(tt)) {
            return gl_transport_read_loop(tt);
        }
        t->read_pending = 1;
    }
    return 0;
}

static int
read_once(gl_transport *t)
{
    return t->buffered ? read_once_buffered((gl_stream *)t) : read_once_data((gl_stream *)t);
}

static const struct gl_transport_kind stream_kind = {
    .handle_events = handle_events,
    .read_once = read_once,
};

/* ------------------------------------------------------------------ */
/* the rest of the transport API                                      */

static PyObject *
stream_call_connection_lost(gl_stream *t, PyObject *exc)
{
    PyObject *raised = gl_transport_connection_lost(T(t), exc, t->protocol_connected);
    PyObject *server = t->server;
    t->server = NULL;
    if (server != NULL) {
#if PY_VERSION_HEX >= 0x030D0000
        PyObject *r = PyObject_CallMethodOneArg(server, GL_ST(t)->s__detach,
                                                (PyObject *)t);
#else
        PyObject *r = PyObject_CallMethodNoArgs(server, GL_ST(t)->s__detach);
#endif
        if (r == NULL) {
            PyErr_WriteUnraisable((PyObject *)t);
        }
        Py_XDECREF(r);
        Py_DECREF(server);
    }
    if (t->empty_waiter != NULL) {
        PyObject *err = PyObject_CallFunction(PyExc_ConnectionError, "s",
                                              "Connection is closed by peer");
        if (err != NULL) {
            empty_waiter_done(t, err);
            Py_DECREF(err);
        }
        else {
            PyErr_WriteUnraisable((PyObject *)t);
        }
    }
    if (raised != NULL) {
        gl_err_restore(raised);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
stream_close(gl_stream *t, PyObject *Py_UNUSED(ignored))
{
    if (gl_transport_close(T(t)) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
stream_abort(gl_stream *t, PyObject *Py_UNUSED(ignored))
{
    if (gl_transport_force_close(T(t), NULL) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* asyncio's SSLProtocol closes its transport this way on fatal errors. */
static PyObject *
stream_force_close(gl_stream *t, PyObject *exc)
{
    if (gl_transport_force_close(T(t), exc == Py_None ? NULL : exc) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static int
set_protocol(gl_stream *t, PyObject *protocol)
{
    if (gl_transport_set_protocol(T(t), protocol, 1) < 0) {
        return -1;
    }
    t->protocol_connected = 1;
    return 0;
}

static PyObject *
stream_set_protocol(gl_stream *t, PyObject *protocol)
{
    if (set_protocol(t, protocol) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
stream_can_write_eof(gl_stream *Py_UNUSED(t), PyObject *Py_UNUSED(ignored))
{
    Py_RETURN_TRUE;
}

static PyObject *
stream_make_empty_waiter(gl_stream *t, PyObject *Py_UNUSED(ignored))
{
    if (t->empty_waiter != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Empty waiter is already set");
        return NULL;
    }
    t->empty_waiter = gl_loop_future_new(t->loop);
    if (t->empty_waiter == NULL) {
        return NULL;
    }
    if (t->wsize == 0 &&
        gl_loop_future_set_result(t->loop->st, t->empty_waiter, Py_None) < 0) {
        return NULL;
    }
    return Py_NewRef(t->empty_waiter);
}

static PyObject *
stream_reset_empty_waiter(gl_stream *t, PyObject *Py_UNUSED(ignored))
{
    Py_CLEAR(t->empty_waiter);
    Py_RETURN_NONE;
}

/* loop.sendfile() hands the socket to sock_sendfile(), whose add_writer
 * must not find the fd owned: the transport steps out of the epoll set
 * (it has nothing to write and reading is paused) and back in after. */
static PyObject *
stream_release_fd(gl_stream *t, PyObject *Py_UNUSED(ignored))
{
    gl_transport_unwatch(T(t));
    Py_RETURN_NONE;
}

static PyObject *
stream_reclaim_fd(gl_stream *t, PyObject *Py_UNUSED(ignored))
{
    if (t->watching || t->file == NULL || t->loop->closed) {
        Py_RETURN_NONE;
    }
    if (gl_poll_watch(&t->loop->poll, t->fd, (PyObject *)t, gl_transport_on_event,
                      EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, GL_WATCH_OWNED) < 0) {
        return NULL;
    }
    t->watching = 1;
    t->read_pending = 1;
    Py_RETURN_NONE;
}

static PyObject *
stream_repr(gl_stream *t)
{
    const char *state = t->file == NULL ? " closed" : t->closing ? " closing" : "";
    if (t->file == NULL) {
        return PyUnicode_FromFormat("<%s%s fd=%d>", _PyType_Name(Py_TYPE(t)),
                                    state, t->fd);
    }
    return PyUnicode_FromFormat(
        "<%s%s fd=%d read=%s write=<%s, bufsize=%zd>>", _PyType_Name(Py_TYPE(t)),
        state, t->fd, gl_transport_can_read(T(t)) || (!t->started && !t->closing) ? "polling" : "idle",
        t->wsize ? "polling" : "idle", t->wsize);
}

/* ------------------------------------------------------------------ */
/* creation                                                           */

static int
set_nodelay(gl_stream *t)
{
    /* As asyncio: only for sockets made as IPPROTO_TCP stream sockets. */
    gl_state *n = GL_ST(t);
    long family = -1, type = -1, proto = -1;
    PyObject *names[3] = {n->s_family, n->s_type, n->s_proto};
    long *outs[3] = {&family, &type, &proto};
    for (int i = 0; i < 3; i++) {
        PyObject *v = PyObject_GetAttr(t->file, names[i]);
        if (v == NULL) {
            return -1;
        }
        *outs[i] = PyLong_AsLong(v);
        Py_DECREF(v);
        if (*outs[i] == -1 && PyErr_Occurred()) {
            return -1;
        }
    }
    if ((family == AF_INET || family == AF_INET6) && type == SOCK_STREAM &&
        proto == IPPROTO_TCP) {
        int one = 1;
        if (setsockopt(t->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
    }
    return 0;
}

PyObject *
gl_stream_new(gl_loop *loop, PyObject *sock, PyObject *protocol,
              PyObject *waiter, PyObject *extra, PyObject *server,
              PyObject *context)
{
    gl_state *st = loop->st;
    if (gl_loop_check_not_closed(loop) < 0) {
        return NULL;
    }
    int fd = gl_sock_fileno(st, sock);
    if (fd == GL_RC_ERROR) {
        return NULL;
    }
    if (fd < 0) {
        PyErr_SetString(PyExc_ValueError, "Invalid file descriptor: -1");
        return NULL;
    }
    PyTypeObject *tp = st->StreamType;
    gl_stream *t = (gl_stream *)tp->tp_alloc(tp, 0);
    if (t == NULL) {
        return NULL;
    }
    t->file = Py_NewRef(sock);
    t->kind_ops = &stream_kind;
    if (gl_transport_init(T(t), loop, fd, 1, context) < 0 ||
        set_protocol(t, protocol) < 0 ||
        (t->extra = gl_transport_extra(st, sock, extra)) == NULL ||
        set_nodelay(t) < 0) {
        goto fail;
    }
    if (gl_poll_check_not_owned(&loop->poll, fd, sock) < 0 ||
        gl_poll_watch(&loop->poll, fd, (PyObject *)t, gl_transport_on_event,
                      EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, GL_WATCH_OWNED) < 0) {
        goto fail;
    }
    t->watching = 1;
    if (server != NULL && server != Py_None) {
        t->server = Py_NewRef(server);
#if PY_VERSION_HEX >= 0x030D0000
        PyObject *r = PyObject_CallMethodOneArg(server, st->s__attach,
                                                (PyObject *)t);
#else
        PyObject *r = PyObject_CallMethodNoArgs(server, st->s__attach);
#endif
        if (r == NULL) {
            goto fail;
        }
        Py_DECREF(r);
    }
    if (gl_transport_schedule_start(T(t), waiter, 1) < 0) {
        goto fail;
    }
    return (PyObject *)t;
fail:
    /* The socket stays the caller's: it closes it on error. */
    gl_transport_unwatch(T(t));
    Py_CLEAR(t->file);
    Py_CLEAR(t->server);
    Py_DECREF(t);
    return NULL;
}

static PyObject *
loop_make_socket_transport(gl_loop *loop, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"sock", "protocol", "waiter", "extra", "server",
                             "context", NULL};
    PyObject *sock, *protocol, *waiter = Py_None, *extra = Py_None,
             *server = Py_None, *context = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|O$OOO:_make_socket_transport",
                                     kwlist, &sock, &protocol, &waiter, &extra,
                                     &server, &context)) {
        return NULL;
    }
    return gl_stream_new(loop, sock, protocol, waiter, extra, server, context);
}

PyMethodDef gl_stream_methods[] = {
    {"_make_socket_transport", (PyCFunction)(void (*)(void))loop_make_socket_transport,
     METH_VARARGS | METH_KEYWORDS,
     PyDoc_STR("_make_socket_transport(sock, protocol, waiter=None, *, extra=None, "
               "server=None, context=None)\n--\n\nA C stream transport on a connected "
               "socket; its protocol is called in context (default: a copy of the "
               "current one).")},
    {NULL, NULL, 0, NULL},
};

/* ------------------------------------------------------------------ */
/* the type                                                           */

static int
stream_traverse(gl_stream *t, visitproc visit, void *arg)
{
    Py_VISIT(t->server);
    Py_VISIT(t->empty_waiter);
    return gl_transport_traverse(T(t), visit, arg);
}

static int
stream_clear(gl_stream *t)
{
    Py_CLEAR(t->server);
    Py_CLEAR(t->empty_waiter);
    gl_transport_clear(T(t));
    return 0;
}

static PyObject *
stream_get_sock(gl_stream *t, void *Py_UNUSED(c))
{
    return Py_NewRef(t->file ? t->file : Py_None);
}

static PyObject *
stream_get_sock_fd(gl_stream *t, void *Py_UNUSED(c))
{
    return PyLong_FromLong(t->fd);
}

static PyObject *
stream_get_closing(gl_stream *t, void *Py_UNUSED(c))
{
    return PyBool_FromLong(t->closing);
}

static PyGetSetDef stream_getset[] = {
    GL_TRANSPORT_GETSET,
    {"_sock", (getter)stream_get_sock, NULL, NULL, NULL},
    {"_sock_fd", (getter)stream_get_sock_fd, NULL, NULL, NULL},
    {"_closing", (getter)stream_get_closing, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef stream_members[] = {
    GL_TRANSPORT_MEMBERS,
    {"_server", T_OBJECT, offsetof(gl_stream, server), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

#define NOARGS(name, fn) {name, (PyCFunction)fn, METH_NOARGS, NULL}

static PyMethodDef stream_methods[] = {
    {"write", (PyCFunction)stream_write, METH_O,
     PyDoc_STR("Send data; what the socket does not take at once is buffered.")},
    {"writelines", (PyCFunction)stream_writelines, METH_O, NULL},
    NOARGS("write_eof", stream_write_eof),
    NOARGS("can_write_eof", stream_can_write_eof),
    NOARGS("close", stream_close),
    NOARGS("abort", stream_abort),
    {"_force_close", (PyCFunction)stream_force_close, METH_O, NULL},
    {"set_protocol", (PyCFunction)stream_set_protocol, METH_O, NULL},
    NOARGS("_make_empty_waiter", stream_make_empty_waiter),
    NOARGS("_reset_empty_waiter", stream_reset_empty_waiter),
    NOARGS("_release_fd", stream_release_fd),
    NOARGS("_reclaim_fd", stream_reclaim_fd),
    {"_call_connection_lost", (PyCFunction)stream_call_connection_lost, METH_O, NULL},
    GL_TRANSPORT_BASE_METHODS,
    GL_TRANSPORT_FLOW_METHODS,
    GL_TRANSPORT_READ_METHODS,
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(stream_doc,
"A stream transport (TCP or Unix socket) written in C; behaves as\n"
"asyncio's selector socket transport.");

static PyType_Slot stream_slots[] = {
    {Py_tp_doc, (void *)stream_doc},
    {Py_tp_dealloc, gl_transport_dealloc},
    {Py_tp_finalize, gl_transport_finalize},
    {Py_tp_traverse, stream_traverse},
    {Py_tp_clear, stream_clear},
    {Py_tp_repr, stream_repr},
    {Py_tp_methods, stream_methods},
    {Py_tp_getset, stream_getset},
    {Py_tp_members, stream_members},
    {0, NULL},
};

PyType_Spec gl_stream_spec = {
    .name = "glibloop._core.StreamTransport",
    .basicsize = sizeof(gl_stream),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = stream_slots,
};
