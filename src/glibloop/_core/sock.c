/* What the socket files share: a socket object's fd, and the conversion of
 * socket addresses between C and Python for the common families. */
#include "internal.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

int
gl_sock_fileno(gl_state *st, PyObject *sock)
{
    PyObject *r = PyObject_CallMethodNoArgs(sock, st->s_fileno);
    if (r == NULL) {
        return GL_RC_ERROR;
    }
    long fd = PyLong_AsLong(r);
    Py_DECREF(r);
    if (fd == -1 && PyErr_Occurred()) {
        return GL_RC_ERROR;
    }
    if (fd < -1 || fd > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "Invalid file descriptor: %ld", fd);
        return GL_RC_ERROR;
    }
    return (int)fd;
}

PyObject *
gl_sock_addr_to_py(const void *addr, unsigned int len)
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
gl_sock_addr_from_py(int family, PyObject *addr, void *out, unsigned int *len)
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
