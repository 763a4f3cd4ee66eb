/* The write queue of the stream and pipe transports (bytes objects as
 * given, written with one sendmsg()/writev() of up to GL_WQ_IOV_MAX of
 * them), and write()'s course as asyncio has it. */
#include "internal.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define GL_WQ_IOV_MAX 64
#define GL_WQ_LOG_CONNLOST_WRITES 5    /* asyncio's LOG_THRESHOLD_... */

void
gl_wq_clear(gl_transport *t)
{
    gl_wchunk *wq = t->wq;
    Py_ssize_t head = t->wq_head, len = t->wq_len;
    t->wq = NULL;
    t->wq_head = t->wq_len = t->wq_cap = 0;
    t->wsize = 0;
    for (Py_ssize_t i = 0; i < len; i++) {
        Py_DECREF(wq[head + i].obj);
    }
    PyMem_Free(wq);
}

int
gl_wq_push(gl_transport *t, PyObject *bytes, Py_ssize_t off)
{
    if (t->wq_head + t->wq_len == t->wq_cap) {
        if (t->wq_head > 0) {
            memmove(t->wq, t->wq + t->wq_head, (size_t)t->wq_len * sizeof(gl_wchunk));
            t->wq_head = 0;
        }
        if (t->wq_len == t->wq_cap) {
            Py_ssize_t cap = t->wq_cap ? t->wq_cap * 2 : 8;
            gl_wchunk *wq = PyMem_Realloc(t->wq, (size_t)cap * sizeof(gl_wchunk));
            if (wq == NULL) {
                PyErr_NoMemory();
                return -1;
            }
            t->wq = wq;
            t->wq_cap = cap;
        }
    }
    t->wq[t->wq_head + t->wq_len].obj = Py_NewRef(bytes);
    t->wq[t->wq_head + t->wq_len].off = off;
    t->wq_len++;
    t->wsize += PyBytes_GET_SIZE(bytes) - off;
    return 0;
}

void
gl_wq_consume(gl_transport *t, Py_ssize_t n)
{
    t->wsize -= n;
    while (n > 0 && t->wq_len > 0) {
        gl_wchunk *c = &t->wq[t->wq_head];
        Py_ssize_t left = PyBytes_GET_SIZE(c->obj) - c->off;
        if (n < left) {
            c->off += n;
            return;
        }
        n -= left;
        PyObject *obj = c->obj;
        t->wq_head++;
        t->wq_len--;
        Py_DECREF(obj);
    }
    if (t->wq_len == 0) {
        t->wq_head = 0;
    }
}

int
gl_wq_flush(gl_transport *t, int is_socket)
{
    while (t->wq_len > 0) {
        struct iovec iov[GL_WQ_IOV_MAX];
        int niov = 0;
        size_t total = 0;
        for (Py_ssize_t i = 0; i < t->wq_len && niov < GL_WQ_IOV_MAX; i++) {
            gl_wchunk *c = &t->wq[t->wq_head + i];
            iov[niov].iov_base = PyBytes_AS_STRING(c->obj) + c->off;
            iov[niov].iov_len = (size_t)(PyBytes_GET_SIZE(c->obj) - c->off);
            total += iov[niov].iov_len;
            niov++;
        }
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)niov};
        ssize_t n;
        do {
            n = is_socket ? sendmsg(t->fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL)
                          : writev(t->fd, iov, niov);
        } while (n < 0 && errno == EINTR);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return 0;
            }
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        gl_wq_consume(t, n);
        if ((size_t)n < total) {
            return 0;  /* full: the next writable edge brings us back */
        }
    }
    return 0;
}

int
gl_wq_check_data(PyObject *data)
{
    if (PyBytes_Check(data) || PyByteArray_Check(data) || PyMemoryView_Check(data)) {
        return 0;
    }
    /* asyncio's stream transport words it so from 3.14 on */
#if PY_VERSION_HEX >= 0x030E0000
    PyErr_Format(PyExc_TypeError,
                 "data argument must be a bytes, bytearray, or memoryview object, not '%s'",
                 _PyType_Name(Py_TYPE(data)));
#else
    PyErr_Format(PyExc_TypeError, "data argument must be a bytes-like object, not '%s'",
                 _PyType_Name(Py_TYPE(data)));
#endif
    return -1;
}

/* Queues view's bytes from sent on; releases view. */
static int
queue_rest(gl_transport *t, PyObject *data, Py_buffer *view, Py_ssize_t sent)
{
    PyObject *chunk;
    Py_ssize_t off = 0;
    if (PyBytes_CheckExact(data)) {
        chunk = Py_NewRef(data);
        off = sent;
    }
    else {
        /* the caller could change it before it is sent */
        chunk = PyBytes_FromStringAndSize((char *)view->buf + sent, view->len - sent);
    }
    PyBuffer_Release(view);
    if (chunk == NULL) {
        return -1;
    }
    int rc = gl_wq_push(t, chunk, off);
    Py_DECREF(chunk);
    if (rc < 0 || gl_transport_maybe_pause(t) < 0) {
        return -1;
    }
    return 1;
}

int
gl_wq_write(gl_transport *t, PyObject *data, int is_socket, int refused,
                   const char *refused_warning)
{
    if (PyMemoryView_Check(data) &&
        !PyBuffer_IsContiguous(PyMemoryView_GET_BUFFER(data), 'C')) {
        /* A strided memoryview passes write()'s type check (asyncio's
         * too, whose send() then fails and closes the transport): its
         * bytes are sent, in order, as one copy. */
        PyObject *flat = PyBytes_FromObject(data);
        if (flat == NULL) {
            return -1;
        }
        int rc = gl_wq_write(t, flat, is_socket, refused, refused_warning);
        Py_DECREF(flat);
        return rc;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
        return -1;
    }
    if (view.len == 0) {
        PyBuffer_Release(&view);
        return 1;
    }
    if (refused) {
        /* Never write to the fd of a lost connection: it may be reused. */
        PyBuffer_Release(&view);
        if (t->conn_lost >= GL_WQ_LOG_CONNLOST_WRITES) {
            PyObject *r = PyObject_CallMethod(GL_ST(t)->logger, "warning", "s",
                                              refused_warning);
            if (r == NULL) {
                return -1;
            }
            Py_DECREF(r);
        }
        t->conn_lost++;
        return 1;
    }
    Py_ssize_t sent = 0;
    if (t->wsize == 0) {
        ssize_t n;
        do {
            n = is_socket ? send(t->fd, view.buf, (size_t)view.len, MSG_DONTWAIT | MSG_NOSIGNAL)
                          : write(t->fd, view.buf, (size_t)view.len);
        } while (n < 0 && errno == EINTR);
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                PyBuffer_Release(&view);
                PyErr_SetFromErrno(PyExc_OSError);
                return 0;
            }
            n = 0;
        }
        sent = n;
        if (sent == view.len) {
            PyBuffer_Release(&view);
            return 1;
        }
    }
    return queue_rest(t, data, &view, sent);
}

PyObject *
gl_wq_join(PyObject *list)
{
    PyObject *empty = PyBytes_FromStringAndSize(NULL, 0);
    if (empty == NULL) {
        return NULL;
    }
#if PY_VERSION_HEX >= 0x030E0000
    PyObject *joined = PyBytes_Join(empty, list);   /* public since 3.14 */
#else
    PyObject *joined = _PyBytes_Join(empty, list);
#endif
    Py_DECREF(empty);
    return joined;
}
