/* What the networking files share: their part of the module state (types,
 * asyncio helpers, interned names), futures, socket addresses, and error
 * reports in asyncio's format. */
#include "internal.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

/* ------------------------------------------------------------------ */
/* module state                                                       */

static int
import_attr(PyObject **out, const char *modname, const char *attr)
{
    PyObject *mod = PyImport_ImportModule(modname);
    if (mod == NULL) {
        return -1;
    }
    *out = PyObject_GetAttrString(mod, attr);
    Py_DECREF(mod);
    return *out ? 0 : -1;
}

static int
add_type(PyObject *module, PyTypeObject **slot, PyTypeObject *type)
{
    *slot = type;
    if (type == NULL) {
        return -1;
    }
    return PyModule_AddType(module, type);
}

int
gl_net_state_init(PyObject *module, gl_state *st)
{
    gl_net_state *n = &st->net;
    if (import_attr(&n->socket_type, "socket", "socket") < 0 ||
        import_attr(&n->check_ssl_socket, "asyncio.base_events",
                    "_check_ssl_socket") < 0 ||
        import_attr(&n->buffered_protocol, "asyncio", "BufferedProtocol") < 0 ||
        import_attr(&n->transport_socket, "asyncio.trsock",
                    "TransportSocket") < 0 ||
        import_attr(&n->set_result_unless_cancelled, "asyncio.futures",
                    "_set_result_unless_cancelled") < 0 ||
        import_attr(&n->logger, "asyncio.log", "logger") < 0) {
        return -1;
    }
#define GL_NET_INTERN(name) \
    if ((n->s_##name = PyUnicode_InternFromString(#name)) == NULL) { \
        return -1; \
    }
    GL_NET_STRINGS(GL_NET_INTERN)
#undef GL_NET_INTERN
    if (add_type(module, &n->SockWaitType,
                 (PyTypeObject *)PyType_FromModuleAndSpec(
                     module, &gl_sockwait_spec, NULL)) < 0 ||
        add_type(module, &n->ListenerType,
                 (PyTypeObject *)PyType_FromModuleAndSpec(
                     module, &gl_listener_spec, NULL)) < 0 ||
        add_type(module, &n->StreamType, gl_stream_make_type(module)) < 0 ||
        add_type(module, &n->DatagramType, gl_udp_make_type(module)) < 0) {
        return -1;
    }
    return 0;
}

int
gl_net_state_traverse(gl_state *st, visitproc visit, void *arg)
{
    gl_net_state *n = &st->net;
    Py_VISIT(n->SockWaitType);
    Py_VISIT(n->StreamType);
    Py_VISIT(n->ListenerType);
    Py_VISIT(n->DatagramType);
    Py_VISIT(n->socket_type);
    Py_VISIT(n->check_ssl_socket);
    Py_VISIT(n->buffered_protocol);
    Py_VISIT(n->transport_socket);
    Py_VISIT(n->set_result_unless_cancelled);
    Py_VISIT(n->logger);
    return 0;
}

void
gl_net_state_clear(gl_state *st)
{
    gl_net_state *n = &st->net;
    Py_CLEAR(n->SockWaitType);
    Py_CLEAR(n->StreamType);
    Py_CLEAR(n->ListenerType);
    Py_CLEAR(n->DatagramType);
    Py_CLEAR(n->socket_type);
    Py_CLEAR(n->check_ssl_socket);
    Py_CLEAR(n->buffered_protocol);
    Py_CLEAR(n->transport_socket);
    Py_CLEAR(n->set_result_unless_cancelled);
    Py_CLEAR(n->logger);
#define GL_NET_CLEAR(name) Py_CLEAR(n->s_##name);
    GL_NET_STRINGS(GL_NET_CLEAR)
#undef GL_NET_CLEAR
}

/* ------------------------------------------------------------------ */
/* futures and scheduling                                             */

PyObject *
gl_future_new(gl_loop *loop)
{
    PyObject *args[1] = {(PyObject *)loop};
    return PyObject_Vectorcall(loop->st->future_type, args, 0,
                               loop->st->kwnames_loop);
}

int
gl_future_set_result(gl_state *st, PyObject *fut, PyObject *value)
{
    PyObject *r = PyObject_CallMethodOneArg(fut, st->net.s_set_result, value);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

int
gl_future_set_exception(gl_state *st, PyObject *fut, PyObject *exc)
{
    PyObject *r = PyObject_CallMethodOneArg(fut, st->net.s_set_exception, exc);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

int
gl_future_done(gl_state *st, PyObject *fut)
{
    PyObject *r = PyObject_CallMethodNoArgs(fut, st->net.s_done);
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

char *
gl_loop_readbuf(gl_loop *loop)
{
    if (loop->poll.readbuf == NULL) {
        loop->poll.readbuf = PyMem_Malloc(GL_READBUF_SIZE);
        if (loop->poll.readbuf == NULL) {
            PyErr_NoMemory();
        }
    }
    return loop->poll.readbuf;
}

int
gl_sock_fileno(gl_state *st, PyObject *sock)
{
    PyObject *r = PyObject_CallMethodNoArgs(sock, st->net.s_fileno);
    if (r == NULL) {
        return -2;
    }
    long fd = PyLong_AsLong(r);
    Py_DECREF(r);
    if (fd == -1 && PyErr_Occurred()) {
        return -2;
    }
    if (fd < -1 || fd > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "Invalid file descriptor: %ld", fd);
        return -2;
    }
    return (int)fd;
}

/* ------------------------------------------------------------------ */
/* contexts                                                           */

PyObject *
gl_net_context(PyObject *context)
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
gl_net_enter(gl_loop *loop, PyObject *ctx, gl_net_frame *f)
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
gl_net_leave(gl_loop *loop, gl_net_frame *f, int rc)
{
    if (f->ctx == NULL) {
        return rc;
    }
    if (f->depth <= GL_MAX_DEPTH) {
        loop->entered[f->depth] = f->outer;
    }
    PyObject *exc = gl_err_fetch();  /* SystemExit/KeyboardInterrupt */
    if (PyContext_Exit(f->ctx) < 0 ||
        (loop->deferred_size > 0 && gl_loop_requeue_deferred(loop, f->depth) < 0)) {
        PyErr_WriteUnraisable((PyObject *)loop);
    }
    if (exc != NULL) {
        gl_err_restore(exc);
    }
    return rc;
}

/* ------------------------------------------------------------------ */
/* socket addresses                                                   */

PyObject *
gl_sockaddr_to_py(const void *addr, unsigned int len)
{
    const struct sockaddr *sa = addr;
    char host[INET6_ADDRSTRLEN];
    if (len < sizeof(sa_family_t)) {
        /* An unnamed peer (socketpair, unbound AF_UNIX client). */
        return NULL;
    }
    switch (sa->sa_family) {
    case AF_INET: {
        const struct sockaddr_in *in = addr;
        if (inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host)) == NULL) {
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        return Py_BuildValue("(si)", host, ntohs(in->sin_port));
    }
    case AF_INET6: {
        const struct sockaddr_in6 *in6 = addr;
        if (in6->sin6_scope_id != 0) {
            /* As the socket module: "fe80::1%eth0". */
            char scoped[NI_MAXHOST];
            int rc = getnameinfo(addr, len, scoped, sizeof(scoped), NULL, 0,
                                 NI_NUMERICHOST);
            if (rc != 0) {
                return PyErr_Format(PyExc_OSError, "getnameinfo: %s",
                                    gai_strerror(rc));
            }
            return Py_BuildValue("(siII)", scoped, ntohs(in6->sin6_port),
                                 (unsigned int)ntohl(in6->sin6_flowinfo),
                                 (unsigned int)in6->sin6_scope_id);
        }
        if (inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host)) == NULL) {
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        return Py_BuildValue("(siII)", host, ntohs(in6->sin6_port),
                             (unsigned int)ntohl(in6->sin6_flowinfo),
                             (unsigned int)in6->sin6_scope_id);
    }
    case AF_UNIX: {
        const struct sockaddr_un *un = addr;
        size_t pathlen = len - offsetof(struct sockaddr_un, sun_path);
        if (pathlen > 0 && un->sun_path[0] == '\0') {
            /* Linux abstract namespace: bytes, as the socket module. */
            return PyBytes_FromStringAndSize(un->sun_path, (Py_ssize_t)pathlen);
        }
        pathlen = strnlen(un->sun_path, pathlen);
        return PyUnicode_DecodeFSDefaultAndSize(un->sun_path,
                                                (Py_ssize_t)pathlen);
    }
    default:
        return NULL;
    }
}

static int
parse_port(PyObject *obj, uint16_t *port)
{
    long v = PyLong_AsLong(obj);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (v < 0 || v > 0xffff) {
        PyErr_SetString(PyExc_OverflowError, "port must be 0-65535.");
        return -1;
    }
    *port = htons((uint16_t)v);
    return 0;
}

int
gl_sockaddr_from_py(int family, PyObject *addr, void *out, unsigned int *len)
{
    memset(out, 0, sizeof(struct sockaddr_storage));
    if (family == AF_INET || family == AF_INET6) {
        Py_ssize_t n = PyTuple_Check(addr) ? PyTuple_GET_SIZE(addr) : 0;
        if (n < 2 || n > (family == AF_INET ? 2 : 4) ||
            !PyUnicode_Check(PyTuple_GET_ITEM(addr, 0)) ||
            !PyLong_Check(PyTuple_GET_ITEM(addr, 1))) {
            return 0;
        }
        const char *host = PyUnicode_AsUTF8(PyTuple_GET_ITEM(addr, 0));
        if (host == NULL) {
            return -1;
        }
        if (family == AF_INET) {
            struct sockaddr_in *in = out;
            in->sin_family = AF_INET;
            if (inet_pton(AF_INET, host, &in->sin_addr) != 1) {
                return 0;  /* "", "<broadcast>" or a name */
            }
            if (parse_port(PyTuple_GET_ITEM(addr, 1), &in->sin_port) < 0) {
                return -1;
            }
            *len = sizeof(*in);
            return 1;
        }
        struct sockaddr_in6 *in6 = out;
        in6->sin6_family = AF_INET6;
        if (inet_pton(AF_INET6, host, &in6->sin6_addr) != 1) {
            return 0;  /* a scope suffix or a name */
        }
        if (parse_port(PyTuple_GET_ITEM(addr, 1), &in6->sin6_port) < 0) {
            return -1;
        }
        for (Py_ssize_t i = 2; i < n; i++) {
            if (!PyLong_Check(PyTuple_GET_ITEM(addr, i))) {
                return 0;
            }
            unsigned long v = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(addr, i));
            if (v == (unsigned long)-1 && PyErr_Occurred()) {
                PyErr_Clear();
                return 0;  /* let the socket module word the error */
            }
            if (i == 2) {
                in6->sin6_flowinfo = htonl((uint32_t)v);
            }
            else {
                in6->sin6_scope_id = (uint32_t)v;
            }
        }
        *len = sizeof(*in6);
        return 1;
    }
    if (family == AF_UNIX && PyUnicode_Check(addr)) {
        struct sockaddr_un *un = out;
        Py_ssize_t n;
        const char *path = PyUnicode_AsUTF8AndSize(addr, &n);
        if (path == NULL) {
            PyErr_Clear();
            return 0;
        }
        if (n == 0 || (size_t)n >= sizeof(un->sun_path) || path[0] == '\0') {
            return 0;
        }
        un->sun_family = AF_UNIX;
        memcpy(un->sun_path, path, (size_t)n);
        *len = (unsigned int)(offsetof(struct sockaddr_un, sun_path) + (size_t)n + 1);
        return 1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* transports                                                         */

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
    gl_net_state *n = &st->net;
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
