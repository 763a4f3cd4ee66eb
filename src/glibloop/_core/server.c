/* Accepting connections: a Listener is the C watcher of one listening
 * socket (level-triggered, so connections left in the backlog after a
 * batch wake it again).  Each event accepts up to `backlog` connections
 * with accept4(), makes the socket object, calls the protocol factory and
 * creates the C stream transport, all without a Handle or a Task.  Each
 * connection gets its own copy of the listener's context (the Server's on
 * 3.15, else the one current when serving started): the factory and every
 * protocol call of the connection run in it, as in asyncio.
 *
 * The Server object itself is asyncio's (base_events.Server): it calls
 * loop._start_serving() and loop._stop_serving(), which are here. */
#include "internal.h"

#include <errno.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define GL_ACCEPT_RETRY_DELAY 1.0   /* asyncio.constants.ACCEPT_RETRY_DELAY */

typedef struct {
    PyObject_HEAD
    gl_loop *loop;
    PyObject *sock;
    PyObject *protocol_factory;
    PyObject *sslcontext;            /* None for plain TCP */
    PyObject *server;
    PyObject *handshake_timeout;
    PyObject *shutdown_timeout;
    PyObject *family, *type, *proto; /* for the accepted socket objects */
    PyObject *retry;                 /* TimerHandle while paused by EMFILE */
    PyObject *context;               /* copied for each connection */
    int fd;
    int backlog;
    int watching;
} gl_listener;

static int listener_on_event(gl_loop *loop, PyObject *owner, uint32_t ev);

static int
watch(gl_listener *l)
{
    if (gl_poll_watch(&l->loop->poll, l->fd, (PyObject *)l, listener_on_event,
                      EPOLLIN, GL_WATCH_SHARED) < 0) {
        return -1;
    }
    l->watching = 1;
    return 0;
}

static void
unwatch(gl_listener *l)
{
    if (l->watching) {
        l->watching = 0;
        gl_poll_unwatch(&l->loop->poll, l->fd, (PyObject *)l);
    }
}

static void
cancel_retry(gl_listener *l)
{
    PyObject *retry = l->retry;
    l->retry = NULL;
    if (retry != NULL) {
        PyObject *r = PyObject_CallMethod(retry, "cancel", NULL);
        if (r == NULL) {
            PyErr_WriteUnraisable((PyObject *)l);
        }
        Py_XDECREF(r);
        Py_DECREF(retry);
    }
}

/* EMFILE and friends: the pending connection stays in the backlog and the
 * level-triggered fd would wake us at once, forever.  Step out of the
 * epoll set for a second, as asyncio does, and report it. */
static int
out_of_resources(gl_listener *l)
{
    PyObject *exc = gl_err_fetch();
    PyObject *trsock = PyObject_CallOneArg(l->loop->st->transport_socket, l->sock);
    if (trsock == NULL) {
        PyErr_WriteUnraisable((PyObject *)l);
    }
    int rc = gl_loop_report_error(l->loop, exc, NULL, NULL, NULL, trsock,
                                  "socket.accept() out of system resource");
    Py_XDECREF(trsock);
    Py_XDECREF(exc);
    if (rc < 0) {
        return -1;  /* the handler's SystemExit/KeyboardInterrupt, as asyncio */
    }
    unwatch(l);
    PyObject *resume = PyObject_GetAttr((PyObject *)l, l->loop->st->s__resume_accepting);
    PyObject *handle = resume ? PyObject_CallMethod((PyObject *)l->loop, "call_later",
                                                    "dO", GL_ACCEPT_RETRY_DELAY, resume)
                              : NULL;
    Py_XDECREF(resume);
    if (handle == NULL) {
        PyErr_WriteUnraisable((PyObject *)l);
        return 0;
    }
    Py_XSETREF(l->retry, handle);
    return 0;
}

static PyObject *
listener_resume_accepting(gl_listener *l, PyObject *Py_UNUSED(ignored))
{
    Py_CLEAR(l->retry);
    if (!l->watching && l->sock != NULL && !l->loop->closed && watch(l) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* asyncio reports a failed connection set-up only in debug mode. */
static int
report_setup_error(gl_listener *l, PyObject *protocol)
{
    PyObject *exc = gl_err_fetch();
    int rc = 0;
    if (l->loop->debug || gl_exc_is_fatal(exc)) {
        rc = gl_loop_report_error(l->loop, exc, NULL, NULL, protocol, NULL,
                                  "Error on transport creation for incoming connection");
    }
    Py_XDECREF(exc);
    return rc;
}

static PyObject *
make_socket(gl_listener *l, int fd)
{
    gl_state *n = l->loop->st;
    PyObject *fdobj = PyLong_FromLong(fd);
    if (fdobj == NULL) {
        return NULL;
    }
    PyObject *args[4] = {l->family, l->type, l->proto, fdobj};
    PyObject *kw = PyTuple_Pack(1, n->s_fileno);
    PyObject *sock = kw ? PyObject_Vectorcall(n->socket_type, args, 3, kw) : NULL;
    Py_XDECREF(kw);
    Py_DECREF(fdobj);
    if (sock == NULL) {
        return NULL;
    }
    /* accept4 made the fd non-blocking; this tells the socket object. */
    PyObject *r = PyObject_CallMethodOneArg(sock, n->s_setblocking, Py_False);
    if (r == NULL) {
        PyObject *exc = gl_err_fetch();
        PyObject *c = PyObject_CallMethodNoArgs(sock, n->s_close);
        Py_XDECREF(c);
        PyErr_Clear();
        gl_err_restore(exc);
        Py_DECREF(sock);
        return NULL;
    }
    Py_DECREF(r);
    return sock;
}

/* A connection that could not be set up: reported as asyncio does, and
 * closed.  -1 only for SystemExit/KeyboardInterrupt (raised by the set-up
 * or by the exception handler), kept across the close. */
static int
abandon(gl_listener *l, PyObject *conn, PyObject *protocol)
{
    int rc = report_setup_error(l, protocol);
    PyObject *fatal = rc < 0 ? gl_err_fetch() : NULL;
    PyObject *c = PyObject_CallMethodNoArgs(conn, l->loop->st->s_close);
    Py_XDECREF(c);
    PyErr_Clear();
    if (fatal != NULL) {
        gl_err_restore(fatal);
    }
    return rc;
}

/* One accepted connection, in its context: socket object, protocol,
 * transport.  -1 only for SystemExit/KeyboardInterrupt. */
static int
set_up(gl_listener *l, int fd, struct sockaddr_storage *ss, socklen_t sslen,
       PyObject *context)
{
    gl_loop *loop = l->loop;
    gl_state *n = loop->st;
    PyObject *conn = make_socket(l, fd);
    if (conn == NULL) {
        close(fd);
        return report_setup_error(l, NULL);
    }
    PyObject *protocol = NULL, *transport = NULL, *extra = NULL;
    PyObject *addr = gl_sock_addr_to_py(ss, sslen);
    if (addr == NULL && !PyErr_Occurred()) {
        addr = PyObject_CallMethodNoArgs(conn, n->s_getpeername);
    }
    extra = addr ? PyDict_New() : NULL;
    if (extra == NULL || PyDict_SetItem(extra, n->s_peername, addr) < 0) {
        goto done;
    }
    if (loop->debug) {
        PyObject *r = PyObject_CallMethod(n->logger, "debug", "sOOO",
                                          "%r got a new connection from %r: %r",
                                          l->server, addr, conn);
        Py_XDECREF(r);
        if (r == NULL) {
            goto done;
        }
    }
    protocol = PyObject_CallNoArgs(l->protocol_factory);
    if (protocol == NULL) {
        goto done;
    }
    if (l->sslcontext != Py_None) {
        transport = PyObject_CallMethod((PyObject *)loop, "_accept_ssl_connection",
                                        "OOOOOOOO", protocol, conn, extra, l->sslcontext,
                                        l->server, l->handshake_timeout,
                                        l->shutdown_timeout, context);
    }
    else {
        transport = gl_stream_new(loop, conn, protocol, NULL, extra, l->server,
                                  context);
    }
done:;
    int rc = transport ? 0 : abandon(l, conn, protocol);
    Py_XDECREF(transport);
    Py_XDECREF(protocol);
    Py_XDECREF(extra);
    Py_XDECREF(addr);
    Py_DECREF(conn);
    return rc;
}

static int
serve_one(gl_listener *l, int fd, struct sockaddr_storage *ss, socklen_t sslen)
{
    PyObject *context = PyContext_Copy(l->context);
    if (context == NULL) {
        close(fd);
        return report_setup_error(l, NULL);
    }
    gl_sched_frame f;
    gl_sched_enter(l->loop, context, &f);
    int rc = gl_sched_leave(l->loop, &f, set_up(l, fd, ss, sslen, context));
    Py_DECREF(context);
    return rc;
}

static int
listener_on_event(gl_loop *Py_UNUSED(loop), PyObject *owner, uint32_t Py_UNUSED(ev))
{
    gl_listener *l = (gl_listener *)owner;
    for (int i = 0; i < l->backlog && l->watching && l->sock != NULL; i++) {
        struct sockaddr_storage ss;
        socklen_t sslen = sizeof(ss);
        int fd = accept4(l->fd, (struct sockaddr *)&ss, &sslen,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int err = errno;
            if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR ||
                err == ECONNABORTED) {
                return 0;
            }
            PyErr_SetFromErrno(PyExc_OSError);
            if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
                return out_of_resources(l);
            }
            /* asyncio lets the loop log it as a failed callback. */
            PyObject *exc = gl_err_fetch();
            int rc = gl_loop_report_error(l->loop, exc, NULL, NULL, NULL, NULL,
                                          "Error on accepting a connection");
            Py_XDECREF(exc);
            return rc;
        }
        if (serve_one(l, fd, &ss, sslen) < 0) {
            return -1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Loop methods                                                       */

static gl_listener *
find_listener(gl_loop *loop, int fd)
{
    PyObject *owner = gl_poll_watcher(&loop->poll, fd, NULL);
    if (owner != NULL && Py_IS_TYPE(owner, loop->st->ListenerType)) {
        return (gl_listener *)owner;
    }
    return NULL;
}

static PyObject *
loop_start_serving(gl_loop *loop, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"protocol_factory", "sock", "sslcontext", "server",
                             "backlog", "ssl_handshake_timeout",
                             "ssl_shutdown_timeout", "context", NULL};
    PyObject *factory, *sock, *sslcontext = Py_None, *server = Py_None;
    PyObject *hs = Py_None, *sd = Py_None, *context = Py_None;
    int backlog = 100;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|OOiOOO:_start_serving", kwlist,
                                     &factory, &sock, &sslcontext, &server, &backlog,
                                     &hs, &sd, &context) ||
        gl_loop_check_not_closed(loop) < 0) {
        return NULL;
    }
    context = gl_loop_context(context);
    if (context == NULL) {
        return NULL;
    }
    int fd = gl_sock_fileno(loop->st, sock);
    if (fd < 0) {
        if (fd == -1) {
            PyErr_SetString(PyExc_ValueError, "Invalid file descriptor: -1");
        }
        Py_DECREF(context);
        return NULL;
    }
    gl_state *n = loop->st;
    gl_listener *old = find_listener(loop, fd);
    if (old != NULL) {
        /* Serving again (after a pause or a second start_serving()):
         * asyncio's add_reader replaces the reader. */
        Py_INCREF(old);
        cancel_retry(old);
        unwatch(old);
        Py_DECREF(old);
    }
    gl_listener *l = PyObject_GC_New(gl_listener, n->ListenerType);
    if (l == NULL) {
        Py_DECREF(context);
        return NULL;
    }
    l->context = context;
    l->loop = (gl_loop *)Py_NewRef(loop);
    l->sock = Py_NewRef(sock);
    l->protocol_factory = Py_NewRef(factory);
    l->sslcontext = Py_NewRef(sslcontext);
    l->server = Py_NewRef(server);
    l->handshake_timeout = Py_NewRef(hs);
    l->shutdown_timeout = Py_NewRef(sd);
    l->family = l->type = l->proto = NULL;
    l->retry = NULL;
    l->fd = fd;
    l->backlog = backlog > 0 ? backlog : 1;
    l->watching = 0;
    PyObject_GC_Track(l);
    if ((l->family = PyObject_GetAttr(sock, n->s_family)) == NULL ||
        (l->type = PyObject_GetAttr(sock, n->s_type)) == NULL ||
        (l->proto = PyObject_GetAttr(sock, n->s_proto)) == NULL ||
        watch(l) < 0) {
        Py_DECREF(l);
        return NULL;
    }
    Py_DECREF(l);  /* the epoll set keeps it */
    Py_RETURN_NONE;
}

static PyObject *
loop_stop_serving(gl_loop *loop, PyObject *sock)
{
    int fd = gl_sock_fileno(loop->st, sock);
    if (fd == GL_RC_ERROR) {
        return NULL;
    }
    if (fd >= 0 && !loop->closed) {
        gl_listener *l = find_listener(loop, fd);
        if (l != NULL) {
            Py_INCREF(l);
            cancel_retry(l);
            unwatch(l);
            Py_CLEAR(l->sock);
            Py_DECREF(l);
        }
    }
    return PyObject_CallMethodNoArgs(sock, loop->st->s_close);
}

PyMethodDef gl_server_methods[] = {
    {"_start_serving", (PyCFunction)(void (*)(void))loop_start_serving,
     METH_VARARGS | METH_KEYWORDS,
     PyDoc_STR("_start_serving(protocol_factory, sock, sslcontext=None, server=None, "
               "backlog=100, ssl_handshake_timeout=None, ssl_shutdown_timeout=None, "
               "context=None)\n--\n\nAccept connections on sock in C (asyncio.Server "
               "calls this); each one is served in a copy of context (default: of "
               "the current one).")},
    {"_stop_serving", (PyCFunction)loop_stop_serving, METH_O,
     PyDoc_STR("Stop accepting on sock and close it.")},
    {NULL, NULL, 0, NULL},
};

/* ------------------------------------------------------------------ */
/* the type                                                           */

static int
listener_traverse(gl_listener *l, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(l));
    Py_VISIT(l->loop);
    Py_VISIT(l->sock);
    Py_VISIT(l->protocol_factory);
    Py_VISIT(l->sslcontext);
    Py_VISIT(l->server);
    Py_VISIT(l->handshake_timeout);
    Py_VISIT(l->shutdown_timeout);
    Py_VISIT(l->family);
    Py_VISIT(l->type);
    Py_VISIT(l->proto);
    Py_VISIT(l->retry);
    Py_VISIT(l->context);
    return 0;
}

static int
listener_clear(gl_listener *l)
{
    Py_CLEAR(l->sock);
    Py_CLEAR(l->protocol_factory);
    Py_CLEAR(l->sslcontext);
    Py_CLEAR(l->server);
    Py_CLEAR(l->handshake_timeout);
    Py_CLEAR(l->shutdown_timeout);
    Py_CLEAR(l->family);
    Py_CLEAR(l->type);
    Py_CLEAR(l->proto);
    Py_CLEAR(l->retry);
    Py_CLEAR(l->context);
    Py_CLEAR(l->loop);
    return 0;
}

static void
listener_dealloc(gl_listener *l)
{
    PyTypeObject *tp = Py_TYPE(l);
    PyObject_GC_UnTrack(l);
    listener_clear(l);
    tp->tp_free(l);
    Py_DECREF(tp);
}

static PyObject *
listener_repr(gl_listener *l)
{
    return PyUnicode_FromFormat("<Listener fd=%d%s>", l->fd,
                                l->watching ? " accepting" : "");
}

static PyMethodDef listener_methods[] = {
    {"_resume_accepting", (PyCFunction)listener_resume_accepting, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot listener_slots[] = {
    {Py_tp_doc, (void *)PyDoc_STR("Accepts connections on one listening socket.")},
    {Py_tp_dealloc, listener_dealloc},
    {Py_tp_traverse, listener_traverse},
    {Py_tp_clear, listener_clear},
    {Py_tp_repr, listener_repr},
    {Py_tp_methods, listener_methods},
    {0, NULL},
};

PyType_Spec gl_listener_spec = {
    .name = "glibloop._core.Listener",
    .basicsize = sizeof(gl_listener),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = listener_slots,
};
