/* The datagram transport (UDP and Unix datagram sockets).
 *
 * Level-triggered in the epoll set: a datagram socket is either read
 * (EPOLLIN while the transport is open) or has datagrams queued to send
 * (EPOLLOUT only then), so steady traffic costs no epoll_ctl.  Each event
 * reads up to GL_UDP_READS_PER_EVENT datagrams with recvfrom() into the
 * loop's read buffer; sendto() tries the syscall at once, converting the
 * address in C for numeric IPv4/IPv6 and Unix paths (and remembering the
 * last one, the common case of answering the same peer), and queues only
 * when the kernel says it would block.  Behaviour and messages follow
 * asyncio's selector datagram transport.
 *
 * The type subclasses asyncio.DatagramTransport and, as asyncio's own
 * datagram transport, asyncio.transports._FlowControlMixin; what every C
 * transport shares (the bases' slots, flow control, closing the socket,
 * the type's slots) is in transport.c. */
#include "internal.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <structmember.h>

#define GL_UDP_READS_PER_EVENT 32
#define GL_LOG_THRESHOLD_FOR_CONNLOST_WRITES 5

typedef struct {
    PyObject *data;              /* bytes */
    PyObject *addr;              /* None when connected */
} dgram;

typedef struct {
    GL_TRANSPORT_HEAD            /* file: the socket, NULL once lost; the
                                  * write queue unused (see q) */
    PyObject *address;           /* the connected peer, or NULL */
    PyObject *last_addr;         /* last address converted by sendto */
    struct sockaddr_storage last_sa;
    unsigned int last_salen;
    int family;
    int connected;               /* extra['peername'] is true */
    uint32_t armed;
    dgram *q;                    /* queued datagrams, a ring; wsize counts
                                  * their bytes */
    Py_ssize_t q_head, q_len, q_cap;
} gl_udp;

#define T(t) GL_TRANSPORT(t)

static int udp_on_event(gl_loop *loop, PyObject *owner, uint32_t ev);

static void
q_clear(gl_udp *t)
{
    dgram *q = t->q;
    Py_ssize_t head = t->q_head, len = t->q_len, cap = t->q_cap;
    t->q = NULL;
    t->q_head = t->q_len = t->q_cap = 0;
    t->wsize = 0;
    for (Py_ssize_t i = 0; i < len; i++) {
        dgram *d = &q[(head + i) % cap];
        Py_DECREF(d->data);
        Py_DECREF(d->addr);
    }
    PyMem_Free(q);
}

static int
q_push(gl_udp *t, PyObject *data, PyObject *addr)
{
    if (t->q_len == t->q_cap) {
        Py_ssize_t cap = t->q_cap ? t->q_cap * 2 : 8;
        dgram *q = PyMem_Malloc((size_t)cap * sizeof(dgram));
        if (q == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t i = 0; i < t->q_len; i++) {
            q[i] = t->q[(t->q_head + i) % t->q_cap];
        }
        PyMem_Free(t->q);
        t->q = q;
        t->q_head = 0;
        t->q_cap = cap;
    }
    dgram *d = &t->q[(t->q_head + t->q_len) % t->q_cap];
    d->data = Py_NewRef(data);
    d->addr = Py_NewRef(addr);
    t->q_len++;
    t->wsize += PyBytes_GET_SIZE(data);
    return 0;
}

/* Brings the epoll interest in line with the state: reading while open
 * and started, writing while datagrams are queued. */
static int
sync_watch(gl_udp *t)
{
    if (t->loop->closed || t->file == NULL) {
        return 0;
    }
    uint32_t want = ((t->started && !t->closing) ? EPOLLIN : 0) |
                    (t->q_len ? EPOLLOUT : 0);
    if (want == t->armed && t->watching) {
        return 0;
    }
    if (!t->watching) {
        if (gl_poll_watch(&t->loop->poll, t->fd, (PyObject *)t, udp_on_event, want,
                          GL_WATCH_OWNED) < 0) {
            return -1;
        }
        t->watching = 1;
    }
    else if (gl_poll_watch_events(&t->loop->poll, t->fd, (PyObject *)t, want) < 0) {
        return -1;
    }
    t->armed = want;
    return 0;
}

/* ------------------------------------------------------------------ */
/* errors                                                             */

static int
force_close(gl_udp *t, PyObject *exc)
{
    if (!t->conn_lost) {
        q_clear(t);
    }
    return gl_transport_force_close(T(t), exc);
}

static int
force_close_fn(gl_transport *t, PyObject *exc)
{
    return force_close((gl_udp *)t, exc);
}

/* asyncio's _fatal_error (see transport.c); takes the current exception. */
static int
fatal_error(gl_udp *t, const char *message)
{
    return gl_transport_fatal_error(T(t), message, 0, force_close_fn);
}

/* An OSError of a send or receive goes to protocol.error_received(). */
static int
error_received(gl_udp *t)
{
    PyObject *exc = gl_err_fetch();
    PyObject *r = t->protocol
        ? PyObject_CallMethodOneArg(t->protocol, GL_ST(t)->s_error_received, exc)
        : Py_NewRef(Py_None);
    Py_DECREF(exc);
    if (r == NULL) {
        return fatal_error(t, "Fatal error: protocol.error_received() call failed.");
    }
    Py_DECREF(r);
    return 0;
}

/* ------------------------------------------------------------------ */
/* reading                                                            */

/* One datagram.  1: delivered (there may be more), 0: none waiting or
 * the transport stopped, -1: SystemExit/KeyboardInterrupt. */
static int
read_one(gl_udp *t)
{
    char *buf = gl_poll_readbuf(&t->loop->poll);
    if (buf == NULL) {
        return fatal_error(t, "Fatal read error on datagram transport");
    }
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof(ss);
    ssize_t n;
    do {
        n = recvfrom(t->fd, buf, GL_READBUF_SIZE, MSG_DONTWAIT,
                     (struct sockaddr *)&ss, &sslen);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return 0;
        }
        PyErr_SetFromErrno(PyExc_OSError);
        return error_received(t) < 0 ? -1 : 1;
    }
    PyObject *addr = sslen > 0 ? gl_sock_addr_to_py(&ss, sslen) : NULL;
    if (addr == NULL) {
        if (PyErr_Occurred()) {
            return fatal_error(t, "Fatal read error on datagram transport");
        }
        addr = Py_NewRef(Py_None);
    }
    PyObject *data = PyBytes_FromStringAndSize(buf, n);
    if (data == NULL) {
        Py_DECREF(addr);
        return fatal_error(t, "Fatal read error on datagram transport");
    }
    PyObject *vargs[3] = {t->protocol, data, addr};
    PyObject *r = PyObject_VectorcallMethod(GL_ST(t)->s_datagram_received, vargs, 3,
                                            NULL);
    Py_DECREF(data);
    Py_DECREF(addr);
    if (r == NULL) {
        /* asyncio lets the loop log it and keeps the transport open. */
        PyObject *exc = gl_err_fetch();
        int rc = gl_loop_report_error(t->loop, exc, NULL, (PyObject *)t, t->protocol, NULL,
                                      "Fatal error: protocol.datagram_received() call failed.");
        Py_DECREF(exc);
        return rc < 0 ? -1 : 1;
    }
    Py_DECREF(r);
    return 1;
}

/* ------------------------------------------------------------------ */
/* writing                                                            */

static int
addr_to_sockaddr(gl_udp *t, PyObject *addr)
{
    if (t->last_addr != NULL && (addr == t->last_addr ||
                                 PyObject_RichCompareBool(addr, t->last_addr, Py_EQ) == 1)) {
        return 1;
    }
    PyErr_Clear();
    int rc = gl_sock_addr_from_py(t->family, addr, &t->last_sa, &t->last_salen);
    if (rc == 1) {
        Py_XSETREF(t->last_addr, Py_NewRef(addr));
    }
    else {
        Py_CLEAR(t->last_addr);
    }
    return rc;
}

/* Sends one datagram: 1 sent, 0 would block, -1 error set. */
static int
send_one(gl_udp *t, PyObject *data, PyObject *addr)
{
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
        return -1;
    }
    ssize_t n;
    int conv = t->connected ? 1 : addr_to_sockaddr(t, addr);
    if (conv < 0) {
        PyBuffer_Release(&view);
        return -1;
    }
    if (conv == 0) {
        /* A name to resolve or an unusual family: the socket module. */
        PyBuffer_Release(&view);
        PyObject *r = PyObject_CallMethodObjArgs(t->file, GL_ST(t)->s_sendto, data,
                                                 addr, NULL);
        if (r == NULL) {
            if (PyErr_ExceptionMatches(PyExc_BlockingIOError) ||
                PyErr_ExceptionMatches(PyExc_InterruptedError)) {
                PyErr_Clear();
                return 0;
            }
            return -1;
        }
        Py_DECREF(r);
        return 1;
    }
    do {
        if (t->connected) {
            n = send(t->fd, view.buf, (size_t)view.len, MSG_DONTWAIT | MSG_NOSIGNAL);
        }
        else {
            n = sendto(t->fd, view.buf, (size_t)view.len, MSG_DONTWAIT | MSG_NOSIGNAL,
                       (struct sockaddr *)&t->last_sa, t->last_salen);
        }
    } while (n < 0 && errno == EINTR);
    PyBuffer_Release(&view);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return 0;
        }
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 1;
}

/* -1 only for SystemExit/KeyboardInterrupt. */
static int
send_failed(gl_udp *t)
{
    if (PyErr_ExceptionMatches(PyExc_OSError)) {
        return error_received(t);
    }
    return fatal_error(t, "Fatal write error on datagram transport");
}

static int
write_ready(gl_udp *t)
{
    while (t->q_len > 0) {
        dgram d = t->q[t->q_head];
        int rc = send_one(t, d.data, d.addr);
        if (rc == 0) {
            break;
        }
        t->q_head = (t->q_head + 1) % t->q_cap;
        t->q_len--;
        t->wsize -= PyBytes_GET_SIZE(d.data);
        Py_DECREF(d.data);
        Py_DECREF(d.addr);
        if (rc < 0) {
            return send_failed(t);
        }
    }
    if (gl_transport_maybe_resume(T(t)) < 0) {
        return -1;
    }
    if (t->q_len == 0) {
        if (sync_watch(t) < 0) {
            PyErr_WriteUnraisable((PyObject *)t);
        }
        if (t->closing && !t->conn_lost) {
            t->conn_lost++;
            PyObject *r = PyObject_CallMethodOneArg((PyObject *)t,
                                                    GL_ST(t)->s__call_connection_lost,
                                                    Py_None);
            if (r == NULL) {
                return fatal_error(t, "Fatal error on transport");
            }
            Py_DECREF(r);
        }
    }
    return 0;
}

static int
handle_events(gl_udp *t, uint32_t ev)
{
    if ((ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)) && t->q_len > 0 &&
        write_ready(t) < 0) {
        return -1;
    }
    for (int i = 0; i < GL_UDP_READS_PER_EVENT; i++) {
        if (!(ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) || !t->started ||
            t->closing || t->conn_lost || t->file == NULL) {
            break;
        }
        int rc = read_one(t);
        if (rc <= 0) {
            return rc;
        }
    }
    return 0;
}

static int
udp_on_event(gl_loop *loop, PyObject *owner, uint32_t ev)
{
    gl_udp *t = (gl_udp *)owner;
    gl_sched_frame f;
    gl_sched_enter(loop, t->context, &f);
    return gl_sched_leave(loop, &f, handle_events(t, ev));
}

/* ------------------------------------------------------------------ */
/* the transport API                                                  */

static PyObject *
udp_sendto(gl_udp *t, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    /* sendto(data, addr=None): both may be given by keyword (asyncio's
     * selector transport takes them so). */
    PyObject *data = nargs > 0 ? args[0] : NULL;
    PyObject *addr = nargs > 1 ? args[1] : NULL;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs > 2) {
        PyErr_Format(PyExc_TypeError,
                     "sendto() takes at most 2 arguments (%zd given)", nargs);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i);
        PyObject **slot;
        if (PyUnicode_CompareWithASCIIString(name, "data") == 0) {
            slot = &data;
        }
        else if (PyUnicode_CompareWithASCIIString(name, "addr") == 0) {
            slot = &addr;
        }
        else {
            PyErr_Format(PyExc_TypeError,
                         "sendto() got an unexpected keyword argument '%U'", name);
            return NULL;
        }
        if (*slot != NULL) {
            PyErr_Format(PyExc_TypeError,
                         "sendto() got multiple values for argument '%U'", name);
            return NULL;
        }
        *slot = args[nargs + i];
    }
    if (data == NULL) {
        PyErr_SetString(PyExc_TypeError,
                        "sendto() missing required argument 'data'");
        return NULL;
    }
    if (addr == NULL) {
        addr = Py_None;
    }
    if (!PyBytes_Check(data) && !PyByteArray_Check(data) && !PyMemoryView_Check(data)) {
        PyErr_Format(PyExc_TypeError,
                     "data argument must be a bytes-like object, not '%s'",
                     _PyType_Name(Py_TYPE(data)));
        return NULL;
    }
    Py_ssize_t len = PyObject_Length(data);
    if (len < 0) {
        return NULL;
    }
    if (len == 0) {
        Py_RETURN_NONE;
    }
    if (t->address != NULL) {
        if (addr != Py_None) {
            int eq = PyObject_RichCompareBool(addr, t->address, Py_EQ);
            if (eq < 0) {
                return NULL;
            }
            if (!eq) {
                PyErr_Format(PyExc_ValueError, "Invalid address: must be None or %S",
                             t->address);
                return NULL;
            }
        }
        addr = t->address;
    }
    if (t->conn_lost && t->address != NULL) {
        if (t->conn_lost >= GL_LOG_THRESHOLD_FOR_CONNLOST_WRITES) {
            PyObject *r = PyObject_CallMethod(GL_ST(t)->logger, "warning", "s",
                                              "socket.send() raised exception.");
            Py_XDECREF(r);
            if (r == NULL) {
                return NULL;
            }
        }
        t->conn_lost++;
        Py_RETURN_NONE;
    }
    if (t->q_len == 0 && t->file != NULL) {
        int rc = send_one(t, data, addr);
        if (rc > 0) {
            Py_RETURN_NONE;
        }
        if (rc < 0) {
            if (send_failed(t) < 0) {
                return NULL;
            }
            Py_RETURN_NONE;
        }
    }
    PyObject *copy = PyBytes_FromObject(data);
    if (copy == NULL) {
        return NULL;
    }
    int rc = q_push(t, copy, addr);
    Py_DECREF(copy);
    if (rc < 0 || sync_watch(t) < 0 || gl_transport_maybe_pause(T(t)) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
udp_start_reading(gl_udp *t, PyObject *Py_UNUSED(ignored))
{
    t->started = 1;
    if (sync_watch(t) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
udp_call_connection_lost(gl_udp *t, PyObject *exc)
{
    PyObject *raised = gl_transport_connection_lost(T(t), exc, 1);
    if (raised != NULL) {
        gl_err_restore(raised);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
udp_close(gl_udp *t, PyObject *Py_UNUSED(ignored))
{
    int was_closing = t->closing;
    if (gl_transport_close(T(t)) < 0) {
        return NULL;
    }
    if (!was_closing && sync_watch(t) < 0) {
        PyErr_WriteUnraisable((PyObject *)t);
    }
    Py_RETURN_NONE;
}

static PyObject *
udp_abort(gl_udp *t, PyObject *Py_UNUSED(ignored))
{
    if (force_close(t, NULL) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
udp_set_protocol(gl_udp *t, PyObject *protocol)
{
    if (gl_transport_set_protocol(T(t), protocol, 0) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
udp_repr(gl_udp *t)
{
    return PyUnicode_FromFormat("<%s%s fd=%d>", _PyType_Name(Py_TYPE(t)),
                                t->file == NULL ? " closed" : t->closing ? " closing" : "",
                                t->fd);
}

/* ------------------------------------------------------------------ */
/* creation                                                           */

static PyObject *
loop_make_datagram_transport(gl_loop *loop, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"sock", "protocol", "address", "waiter", "extra", NULL};
    PyObject *sock, *protocol, *address = Py_None, *waiter = Py_None, *extra = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|OOO:_make_datagram_transport",
                                     kwlist, &sock, &protocol, &address, &waiter, &extra) ||
        gl_loop_check_not_closed(loop) < 0) {
        return NULL;
    }
    gl_state *st = loop->st;
    int fd = gl_sock_fileno(st, sock);
    if (fd == GL_RC_ERROR) {
        return NULL;
    }
    PyTypeObject *tp = st->DatagramType;
    gl_udp *t = (gl_udp *)tp->tp_alloc(tp, 0);
    if (t == NULL) {
        return NULL;
    }
    t->file = Py_NewRef(sock);
    t->protocol = Py_NewRef(protocol);
    if (gl_transport_init(T(t), loop, fd, 1, NULL) < 0) {
        goto fail;
    }
    if (address != Py_None) {
        t->address = Py_NewRef(address);
    }
    PyObject *family = PyObject_GetAttr(sock, st->s_family);
    if (family == NULL) {
        goto fail;
    }
    t->family = (int)PyLong_AsLong(family);
    Py_DECREF(family);
    if (PyErr_Occurred() || (t->extra = gl_transport_extra(st, sock, extra)) == NULL) {
        goto fail;
    }
    PyObject *peer = PyDict_GetItemWithError(t->extra, st->s_peername);
    if (peer == NULL && PyErr_Occurred()) {
        goto fail;
    }
    t->connected = peer ? PyObject_IsTrue(peer) : 0;
    if (t->connected < 0 || gl_poll_check_not_owned(&loop->poll, fd, sock) < 0 ||
        sync_watch(t) < 0) {
        goto fail;
    }
    /* connection_made, then reading, then the waiter, as asyncio. */
    if (gl_transport_schedule_start(T(t), waiter, 1) < 0) {
        goto fail;
    }
    return (PyObject *)t;
fail:
    gl_transport_unwatch(T(t));
    Py_CLEAR(t->file);
    Py_DECREF(t);
    return NULL;
}

PyMethodDef gl_udp_methods[] = {
    {"_make_datagram_transport", (PyCFunction)(void (*)(void))loop_make_datagram_transport,
     METH_VARARGS | METH_KEYWORDS,
     PyDoc_STR("_make_datagram_transport(sock, protocol, address=None, waiter=None, "
               "extra=None)\n--\n\nA C datagram transport on a bound socket.")},
    {NULL, NULL, 0, NULL},
};

/* ------------------------------------------------------------------ */
/* the type                                                           */

static int
udp_traverse(gl_udp *t, visitproc visit, void *arg)
{
    Py_VISIT(t->address);
    Py_VISIT(t->last_addr);
    for (Py_ssize_t i = 0; i < t->q_len; i++) {
        Py_VISIT(t->q[(t->q_head + i) % t->q_cap].data);
        Py_VISIT(t->q[(t->q_head + i) % t->q_cap].addr);
    }
    return gl_transport_traverse(T(t), visit, arg);
}

static int
udp_clear(gl_udp *t)
{
    Py_CLEAR(t->address);
    Py_CLEAR(t->last_addr);
    q_clear(t);
    gl_transport_clear(T(t));
    return 0;
}

static PyObject *
udp_get_sock(gl_udp *t, void *Py_UNUSED(c))
{
    return Py_NewRef(t->file ? t->file : Py_None);
}

static PyObject *
udp_get_address(gl_udp *t, void *Py_UNUSED(c))
{
    return Py_NewRef(t->address ? t->address : Py_None);
}

static PyGetSetDef udp_getset[] = {
    GL_TRANSPORT_GETSET,
    {"_sock", (getter)udp_get_sock, NULL, NULL, NULL},
    {"_address", (getter)udp_get_address, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef udp_members[] = {
    GL_TRANSPORT_MEMBERS,
    {"_sock_fd", T_INT, offsetof(gl_udp, fd), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

#define NOARGS(name, fn) {name, (PyCFunction)fn, METH_NOARGS, NULL}

static PyMethodDef udp_methods[] = {
    {"sendto", (PyCFunction)(void (*)(void))udp_sendto, METH_FASTCALL | METH_KEYWORDS,
     PyDoc_STR("sendto(data, addr=None): send a datagram now, or queue it.")},
    NOARGS("close", udp_close),
    NOARGS("abort", udp_abort),
    {"set_protocol", (PyCFunction)udp_set_protocol, METH_O, NULL},
    GL_TRANSPORT_BASE_METHODS,
    GL_TRANSPORT_FLOW_METHODS,
    NOARGS("_start_reading", udp_start_reading),
    {"_call_connection_lost", (PyCFunction)udp_call_connection_lost, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot udp_slots[] = {
    {Py_tp_doc, (void *)PyDoc_STR("A datagram transport written in C; behaves as "
                                  "asyncio's selector datagram transport.")},
    {Py_tp_dealloc, gl_transport_dealloc},
    {Py_tp_finalize, gl_transport_finalize},
    {Py_tp_traverse, udp_traverse},
    {Py_tp_clear, udp_clear},
    {Py_tp_repr, udp_repr},
    {Py_tp_methods, udp_methods},
    {Py_tp_getset, udp_getset},
    {Py_tp_members, udp_members},
    {0, NULL},
};

PyType_Spec gl_udp_spec = {
    .name = "glibloop._core.DatagramTransport",
    .basicsize = sizeof(gl_udp),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = udp_slots,
};
