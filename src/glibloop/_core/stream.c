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
 * to protocol.data_received(), or straight into the buffer a
 * BufferedProtocol hands out.  A write tries send() at once and queues only
 * what the kernel did not take; the queue is flushed with sendmsg() on the
 * next writable edge.  Behaviour (flow control, EOF, errors, messages)
 * follows asyncio's selector transport.
 *
 * The type subclasses asyncio.transports._FlowControlMixin (a Transport;
 * asyncio's sendfile fallback insists on it).  Their slots (_extra, the
 * get_extra_info() dict, then _loop, _protocol_paused, _high_water,
 * _low_water) are the first fields of gl_stream; the C code works on its
 * own ints and mirrors them into those objects when they change. */
#include "internal.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <structmember.h>

#define GL_STREAM_IOV_MAX 64
#define GL_STREAM_READS_PER_EVENT 16
#define GL_LOG_THRESHOLD_FOR_CONNLOST_WRITES 5

typedef struct {
    PyObject *obj;               /* bytes */
    Py_ssize_t off;
} wchunk;

typedef struct {
    PyObject_HEAD
    PyObject *extra;             /* asyncio.BaseTransport's _extra slot */
    PyObject *fc_high_water;     /* _FlowControlMixin's slots (CPython */
    PyObject *fc_loop;           /* lays them out sorted by name), */
    PyObject *fc_low_water;      /* mirrored from the C fields */
    PyObject *fc_protocol_paused;
    gl_loop *loop;
    PyObject *sock;              /* NULL once the connection is lost */
    PyObject *protocol;
    PyObject *data_received;     /* protocol's bound methods, on first use */
    PyObject *get_buffer;
    PyObject *buffer_updated;
    PyObject *server;
    PyObject *empty_waiter;
    PyObject *weakreflist;
    int fd;
    int buffered;                /* protocol is a BufferedProtocol */
    int started;                 /* _start_reading ran */
    int paused;                  /* pause_reading() */
    int read_eof;                /* EOF seen and eof_received kept it open */
    int read_pending;            /* an edge or data not consumed yet */
    int read_scheduled;          /* a _read_ready handle is queued */
    int peer_closed;             /* EPOLLRDHUP/HUP/ERR seen: a short read no
                                    longer means drained, EOF may follow */
    int closing;
    int eof;                     /* write_eof() */
    int protocol_paused;
    int protocol_connected;
    int conn_lost;
    int watching;                /* in the epoll set */
    int busy;                    /* inside the event handler */
    uint32_t deferred;           /* events that arrived while busy */
    Py_ssize_t high_water;
    Py_ssize_t low_water;
    wchunk *wq;
    Py_ssize_t wq_head;
    Py_ssize_t wq_len;
    Py_ssize_t wq_cap;
    Py_ssize_t wsize;
} gl_stream;

static int stream_on_event(gl_loop *loop, PyObject *owner, uint32_t ev);

static inline gl_net_state *
net(gl_stream *t)
{
    return &t->loop->st->net;
}

/* ------------------------------------------------------------------ */
/* small helpers                                                      */

static void
mirror_paused(gl_stream *t)
{
    Py_XSETREF(t->fc_protocol_paused, PyBool_FromLong(t->protocol_paused));
}

static int
mirror_limits(gl_stream *t)
{
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

static int
schedule_method(gl_stream *t, PyObject *name, PyObject *arg)
{
    if (gl_loop_check_not_closed(t->loop) < 0) {
        return -1;
    }
    PyObject *bound = PyObject_GetAttr((PyObject *)t, name);
    if (bound == NULL) {
        return -1;
    }
    PyObject *args = arg ? PyTuple_Pack(1, arg) : PyTuple_New(0);
    int rc = args ? gl_loop_call_soon(t->loop, bound, args) : -1;
    Py_XDECREF(args);
    Py_DECREF(bound);
    return rc;
}

static void
log_debug(gl_stream *t, const char *fmt)
{
    PyObject *r = PyObject_CallMethod(net(t)->logger, "debug", "sO", fmt,
                                      (PyObject *)t);
    if (r == NULL) {
        PyErr_WriteUnraisable((PyObject *)t);
    }
    Py_XDECREF(r);
}

static void
unwatch(gl_stream *t)
{
    if (t->watching) {
        t->watching = 0;
        gl_poll_unwatch(&t->loop->poll, t->fd, (PyObject *)t);
    }
}

static void
wq_clear(gl_stream *t)
{
    wchunk *wq = t->wq;
    Py_ssize_t head = t->wq_head, len = t->wq_len;
    t->wq = NULL;
    t->wq_head = t->wq_len = t->wq_cap = 0;
    t->wsize = 0;
    for (Py_ssize_t i = 0; i < len; i++) {
        Py_DECREF(wq[head + i].obj);
    }
    PyMem_Free(wq);
}

static int
wq_push(gl_stream *t, PyObject *bytes, Py_ssize_t off)
{
    if (t->wq_head + t->wq_len == t->wq_cap) {
        if (t->wq_head > 0) {
            memmove(t->wq, t->wq + t->wq_head, (size_t)t->wq_len * sizeof(wchunk));
            t->wq_head = 0;
        }
        if (t->wq_len == t->wq_cap) {
            Py_ssize_t cap = t->wq_cap ? t->wq_cap * 2 : 8;
            wchunk *wq = PyMem_Realloc(t->wq, (size_t)cap * sizeof(wchunk));
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

/* Drops n sent bytes from the front of the queue. */
static void
wq_consume(gl_stream *t, Py_ssize_t n)
{
    t->wsize -= n;
    while (n > 0 && t->wq_len > 0) {
        wchunk *c = &t->wq[t->wq_head];
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

/* ------------------------------------------------------------------ */
/* errors and closing                                                 */

static int force_close(gl_stream *t, PyObject *exc);

/* asyncio's _fatal_error: OSErrors are only logged in debug mode, other
 * exceptions go to the exception handler; then the transport is closed.
 * Takes the current exception.  -1 only for SystemExit/KeyboardInterrupt,
 * which are put back. */
static int
fatal_error(gl_stream *t, const char *message)
{
    PyObject *exc = gl_err_fetch();
    if (exc == NULL) {
        return 0;
    }
    if (gl_exc_is_fatal(exc)) {
        gl_err_restore(exc);
        return -1;
    }
    Py_INCREF(t);
    if (PyErr_GivenExceptionMatches(exc, PyExc_OSError)) {
        if (t->loop->debug) {
            PyObject *r = PyObject_CallMethod(net(t)->logger, "debug",
                                              "sOs", "%r: %s", (PyObject *)t,
                                              message);
            if (r == NULL) {
                PyErr_WriteUnraisable((PyObject *)t);
            }
            Py_XDECREF(r);
        }
    }
    else {
        gl_net_report(t->loop, message, exc, (PyObject *)t, t->protocol, NULL);
    }
    if (force_close(t, exc) < 0) {
        PyErr_WriteUnraisable((PyObject *)t);
    }
    Py_DECREF(exc);
    Py_DECREF(t);
    return 0;
}

static int
force_close(gl_stream *t, PyObject *exc)
{
    if (t->conn_lost) {
        return 0;
    }
    if (t->wsize > 0) {
        wq_clear(t);
    }
    t->closing = 1;
    t->conn_lost++;
    return schedule_method(t, net(t)->s__call_connection_lost, exc ? exc : Py_None);
}

/* ------------------------------------------------------------------ */
/* flow control                                                       */

static int
call_protocol_hook(gl_stream *t, PyObject *name, const char *message)
{
    PyObject *proto = Py_NewRef(t->protocol);
    PyObject *r = PyObject_CallMethodNoArgs(proto, name);
    if (r == NULL) {
        PyObject *exc = gl_err_fetch();
        if (gl_exc_is_fatal(exc)) {
            gl_err_restore(exc);
            Py_DECREF(proto);
            return -1;
        }
        gl_net_report(t->loop, message, exc, (PyObject *)t, proto, NULL);
        Py_DECREF(exc);
    }
    Py_XDECREF(r);
    Py_DECREF(proto);
    return 0;
}

static int
maybe_pause_protocol(gl_stream *t)
{
    if (t->wsize <= t->high_water || t->protocol_paused || t->protocol == NULL) {
        return 0;
    }
    t->protocol_paused = 1;
    mirror_paused(t);
    return call_protocol_hook(t, net(t)->s_pause_writing,
                              "protocol.pause_writing() failed");
}

static int
maybe_resume_protocol(gl_stream *t)
{
    if (!t->protocol_paused || t->wsize > t->low_water || t->protocol == NULL) {
        return 0;
    }
    t->protocol_paused = 0;
    mirror_paused(t);
    return call_protocol_hook(t, net(t)->s_resume_writing,
                              "protocol.resume_writing() failed");
}

/* ------------------------------------------------------------------ */
/* reading                                                            */

static int
can_read(gl_stream *t)
{
    return t->started && !t->paused && !t->closing && !t->read_eof &&
           t->sock != NULL;
}

static int
schedule_read(gl_stream *t)
{
    if (t->read_scheduled) {
        return 0;
    }
    if (schedule_method(t, net(t)->s__read_ready, NULL) < 0) {
        return -1;
    }
    t->read_scheduled = 1;
    return 0;
}

static PyObject *
protocol_method(gl_stream *t, PyObject **cache, PyObject *name)
{
    if (*cache == NULL) {
        *cache = PyObject_GetAttr(t->protocol, name);
    }
    return *cache;
}

static int
on_eof(gl_stream *t)
{
    if (t->loop->debug) {
        log_debug(t, "%r received EOF");
    }
    PyObject *r = PyObject_CallMethodNoArgs(t->protocol, net(t)->s_eof_received);
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
    PyObject *c = PyObject_CallMethodNoArgs((PyObject *)t, net(t)->s_close);
    if (c == NULL) {
        return fatal_error(t, "Fatal error on transport");
    }
    Py_DECREF(c);
    return 0;
}

/* recv() with the error handling shared by both protocol kinds: returns
 * the byte count, 0 for EOF (after on_eof), -1 when nothing more can be
 * read now (would block, or the transport failed and was closed), -2 for
 * an exception that must stop the loop. */
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
            return -1;
        }
        PyErr_SetFromErrno(PyExc_OSError);
        return fatal_error(t, "Fatal read error on socket transport") < 0 ? -2 : -1;
    }
    t->read_pending = 0;
    return on_eof(t) < 0 ? -2 : 0;
}

/* One read.  1: the buffer came back full, there may be more; 0: drained
 * or stopped; -1: SystemExit/KeyboardInterrupt. */
static int
read_once_data(gl_stream *t)
{
    char *buf = gl_loop_readbuf(t->loop);
    if (buf == NULL) {
        return fatal_error(t, "Fatal read error on socket transport");
    }
    Py_ssize_t n = recv_some(t, buf, GL_READBUF_SIZE);
    if (n <= 0) {
        return n == -2 ? -1 : 0;
    }
    /* A short read drained the socket: later data makes a new edge.  Not
     * so once the peer closed: its FIN came with this edge. */
    t->read_pending = n == GL_READBUF_SIZE || t->peer_closed;
    PyObject *data = PyBytes_FromStringAndSize(buf, n);
    if (data == NULL) {
        return fatal_error(t, "Fatal read error on socket transport");
    }
    PyObject *cb = protocol_method(t, &t->data_received, net(t)->s_data_received);
    PyObject *r = cb ? PyObject_CallOneArg(cb, data) : NULL;
    Py_DECREF(data);
    if (r == NULL) {
        return fatal_error(t, "Fatal error: protocol.data_received() call failed.");
    }
    Py_DECREF(r);
    return t->read_pending;
}

static int
read_once_buffered(gl_stream *t)
{
    static const char get_buffer_failed[] =
        "Fatal error: protocol.get_buffer() call failed.";
    PyObject *cb = protocol_method(t, &t->get_buffer, net(t)->s_get_buffer);
    PyObject *hint = PyLong_FromLong(-1);
    PyObject *buf = (cb && hint) ? PyObject_CallOneArg(cb, hint) : NULL;
    Py_XDECREF(hint);
    if (buf == NULL) {
        return fatal_error(t, get_buffer_failed);
    }
    Py_buffer view;
    if (PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE) < 0) {
        Py_DECREF(buf);
        return fatal_error(t, get_buffer_failed);
    }
    if (view.len == 0) {
        PyBuffer_Release(&view);
        Py_DECREF(buf);
        PyErr_SetString(PyExc_RuntimeError, "get_buffer() returned an empty buffer");
        return fatal_error(t, get_buffer_failed);
    }
    Py_ssize_t size = view.len;
    Py_ssize_t n = recv_some(t, view.buf, (size_t)size);
    PyBuffer_Release(&view);
    Py_DECREF(buf);
    if (n <= 0) {
        return n == -2 ? -1 : 0;
    }
    t->read_pending = n == size || t->peer_closed;
    cb = protocol_method(t, &t->buffer_updated, net(t)->s_buffer_updated);
    PyObject *count = PyLong_FromSsize_t(n);
    PyObject *r = (cb && count) ? PyObject_CallOneArg(cb, count) : NULL;
    Py_XDECREF(count);
    if (r == NULL) {
        return fatal_error(t, "Fatal error: protocol.buffer_updated() call failed.");
    }
    Py_DECREF(r);
    return t->read_pending;
}

/* Reads until the socket is drained (a short read: any later data makes a
 * new edge), reading stops, or the per-event quota is used up; then the
 * rest is read in the next round so other transports get their turn. */
static int
read_loop(gl_stream *t)
{
    t->read_pending = 1;
    for (int i = 0; i < GL_STREAM_READS_PER_EVENT; i++) {
        if (!can_read(t)) {
            return 0;  /* read_pending stays set for resume_reading() */
        }
        int rc = t->buffered ? read_once_buffered(t) : read_once_data(t);
        if (rc <= 0) {
            return rc;
        }
    }
    if (can_read(t) && schedule_read(t) < 0) {
        PyErr_WriteUnraisable((PyObject *)t);
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* writing                                                            */

static int
shutdown_write(gl_stream *t)
{
    PyObject *how = PyLong_FromLong(SHUT_WR);
    PyObject *r = how ? PyObject_CallMethodOneArg(t->sock, net(t)->s_shutdown, how)
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
    int r = exc ? gl_future_set_exception(t->loop->st, t->empty_waiter, exc)
                : gl_future_set_result(t->loop->st, t->empty_waiter, Py_None);
    if (r < 0) {
        PyErr_WriteUnraisable((PyObject *)t);
    }
}

/* Sends as much of the queue as the kernel takes.  0 on success or a
 * handled failure, -1 for SystemExit/KeyboardInterrupt. */
static int
flush(gl_stream *t)
{
    while (t->wq_len > 0) {
        struct iovec iov[GL_STREAM_IOV_MAX];
        int niov = 0;
        size_t total = 0;
        for (Py_ssize_t i = 0; i < t->wq_len && niov < GL_STREAM_IOV_MAX; i++) {
            wchunk *c = &t->wq[t->wq_head + i];
            iov[niov].iov_base = PyBytes_AS_STRING(c->obj) + c->off;
            iov[niov].iov_len = (size_t)(PyBytes_GET_SIZE(c->obj) - c->off);
            total += iov[niov].iov_len;
            niov++;
        }
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)niov};
        ssize_t n;
        do {
            n = sendmsg(t->fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
        } while (n < 0 && errno == EINTR);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return 0;
            }
            PyErr_SetFromErrno(PyExc_OSError);
            PyObject *exc = gl_err_fetch();
            wq_clear(t);
            gl_err_restore(Py_NewRef(exc));
            int rc = fatal_error(t, "Fatal write error on socket transport");
            empty_waiter_done(t, exc);
            Py_DECREF(exc);
            return rc;
        }
        wq_consume(t, n);
        if ((size_t)n < total) {
            return 0;  /* the socket buffer is full: wait for the next edge */
        }
    }
    return 0;
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
    if (maybe_resume_protocol(t) < 0) {
        return -1;
    }
    if (t->wsize > 0 || t->conn_lost) {
        return 0;
    }
    empty_waiter_done(t, NULL);
    if (t->closing) {
        t->conn_lost++;
        PyObject *r = PyObject_CallMethodOneArg((PyObject *)t,
                                                net(t)->s__call_connection_lost,
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
    if (!PyBytes_Check(data) && !PyByteArray_Check(data) &&
        !PyMemoryView_Check(data)) {
        PyErr_Format(PyExc_TypeError,
                     "data argument must be a bytes-like object, not '%s'",
                     _PyType_Name(Py_TYPE(data)));
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
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (view.len == 0) {
        PyBuffer_Release(&view);
        Py_RETURN_NONE;
    }
    if (t->conn_lost || t->sock == NULL) {
        /* Never send on the fd of a lost connection: it may be reused. */
        PyBuffer_Release(&view);
        if (t->conn_lost >= GL_LOG_THRESHOLD_FOR_CONNLOST_WRITES) {
            PyObject *r = PyObject_CallMethod(net(t)->logger, "warning", "s",
                                              "socket.send() raised exception.");
            Py_XDECREF(r);
            if (r == NULL) {
                return NULL;
            }
        }
        t->conn_lost++;
        Py_RETURN_NONE;
    }
    Py_ssize_t sent = 0;
    if (t->wsize == 0) {
        ssize_t n;
        do {
            n = send(t->fd, view.buf, (size_t)view.len, MSG_DONTWAIT | MSG_NOSIGNAL);
        } while (n < 0 && errno == EINTR);
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                PyBuffer_Release(&view);
                PyErr_SetFromErrno(PyExc_OSError);
                if (fatal_error(t, "Fatal write error on socket transport") < 0) {
                    return NULL;
                }
                Py_RETURN_NONE;
            }
            n = 0;
        }
        sent = n;
        if (sent == view.len) {
            PyBuffer_Release(&view);
            Py_RETURN_NONE;
        }
    }
    /* Keep immutable bytes as they are; copy anything the caller could
     * change before it is sent. */
    PyObject *chunk;
    Py_ssize_t off = 0;
    if (PyBytes_CheckExact(data)) {
        chunk = Py_NewRef(data);
        off = sent;
    }
    else {
        chunk = PyBytes_FromStringAndSize((char *)view.buf + sent, view.len - sent);
    }
    PyBuffer_Release(&view);
    if (chunk == NULL) {
        return NULL;
    }
    int rc = wq_push(t, chunk, off);
    Py_DECREF(chunk);
    if (rc < 0 || maybe_pause_protocol(t) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
stream_writelines(gl_stream *t, PyObject *list)
{
    PyObject *empty = PyBytes_FromStringAndSize(NULL, 0);
    if (empty == NULL) {
        return NULL;
    }
    PyObject *joined = _PyBytes_Join(empty, list);
    Py_DECREF(empty);
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
stream_on_event(gl_loop *Py_UNUSED(loop), PyObject *owner, uint32_t ev)
{
    gl_stream *t = (gl_stream *)owner;
    if (t->busy) {
        /* A protocol callback of ours runs a nested main loop: handle
         * this when it returns, never re-enter the protocol. */
        t->deferred |= ev;
        return 0;
    }
    t->busy = 1;
    int rc = 0;
    for (;;) {
        if (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
            t->peer_closed = 1;
        }
        if ((ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)) && t->wsize > 0) {
            rc = write_ready(t);
            if (rc < 0) {
                break;
            }
        }
        if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP)) {
            if (can_read(t)) {
                rc = read_loop(t);
                if (rc < 0) {
                    break;
                }
            }
            else {
                t->read_pending = 1;
            }
        }
        if (!t->deferred) {
            break;
        }
        ev = t->deferred;
        t->deferred = 0;
    }
    t->busy = 0;
    return rc;
}

static PyObject *
stream_read_ready(gl_stream *t, PyObject *Py_UNUSED(ignored))
{
    t->read_scheduled = 0;
    if (t->busy) {
        t->deferred |= EPOLLIN;
        Py_RETURN_NONE;
    }
    if (!can_read(t)) {
        Py_RETURN_NONE;
    }
    t->busy = 1;
    int rc = read_loop(t);
    t->busy = 0;
    if (rc == 0 && t->deferred) {
        uint32_t ev = t->deferred;
        t->deferred = 0;
        Py_INCREF(t);
        rc = stream_on_event(t->loop, (PyObject *)t, ev);
        Py_DECREF(t);
    }
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
stream_start_reading(gl_stream *t, PyObject *Py_UNUSED(ignored))
{
    t->started = 1;
    if (can_read(t) && t->read_pending && schedule_read(t) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ */
/* the rest of the transport API                                      */

static PyObject *
stream_call_connection_lost(gl_stream *t, PyObject *exc)
{
    PyObject *res = NULL;
    if (t->protocol_connected && t->protocol != NULL) {
        res = PyObject_CallMethodOneArg(t->protocol, net(t)->s_connection_lost, exc);
    }
    else {
        res = Py_NewRef(Py_None);
    }
    /* The rest runs whatever connection_lost() did (asyncio's finally). */
    PyObject *saved = res ? NULL : gl_err_fetch();
    unwatch(t);
    if (t->sock != NULL) {
        PyObject *sock = t->sock;
        t->sock = NULL;
        PyObject *r = PyObject_CallMethodNoArgs(sock, net(t)->s_close);
        if (r == NULL) {
            PyErr_WriteUnraisable((PyObject *)t);
        }
        Py_XDECREF(r);
        Py_DECREF(sock);
    }
    Py_CLEAR(t->protocol);
    Py_CLEAR(t->data_received);
    Py_CLEAR(t->get_buffer);
    Py_CLEAR(t->buffer_updated);
    Py_XSETREF(t->fc_loop, Py_NewRef(Py_None));
    PyObject *server = t->server;
    t->server = NULL;
    if (server != NULL) {
#if PY_VERSION_HEX >= 0x030D0000
        PyObject *r = PyObject_CallMethodOneArg(server, net(t)->s__detach,
                                                (PyObject *)t);
#else
        PyObject *r = PyObject_CallMethodNoArgs(server, net(t)->s__detach);
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
    if (saved != NULL) {
        gl_err_restore(saved);
        return NULL;
    }
    Py_DECREF(res);
    Py_RETURN_NONE;
}

static PyObject *
stream_close(gl_stream *t, PyObject *Py_UNUSED(ignored))
{
    if (t->closing) {
        Py_RETURN_NONE;
    }
    t->closing = 1;
    if (t->wsize == 0) {
        t->conn_lost++;
        if (schedule_method(t, net(t)->s__call_connection_lost, Py_None) < 0) {
            return NULL;
        }
    }
    Py_RETURN_NONE;
}

static PyObject *
stream_abort(gl_stream *t, PyObject *Py_UNUSED(ignored))
{
    if (force_close(t, NULL) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* asyncio's SSLProtocol closes its transport this way on fatal errors. */
static PyObject *
stream_force_close(gl_stream *t, PyObject *exc)
{
    if (force_close(t, exc == Py_None ? NULL : exc) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
stream_is_closing(gl_stream *t, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(t->closing);
}

static PyObject *
stream_is_reading(gl_stream *t, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(!t->paused && !t->closing);
}

static PyObject *
stream_pause_reading(gl_stream *t, PyObject *Py_UNUSED(ignored))
{
    if (t->closing || t->paused) {
        Py_RETURN_NONE;
    }
    t->paused = 1;
    if (t->loop->debug) {
        log_debug(t, "%r pauses reading");
    }
    Py_RETURN_NONE;
}

static PyObject *
stream_resume_reading(gl_stream *t, PyObject *Py_UNUSED(ignored))
{
    if (t->closing || !t->paused) {
        Py_RETURN_NONE;
    }
    t->paused = 0;
    /* No edge comes for data that arrived while paused: go and look. */
    if (can_read(t) && t->read_pending && schedule_read(t) < 0) {
        return NULL;
    }
    if (t->loop->debug) {
        log_debug(t, "%r resumes reading");
    }
    Py_RETURN_NONE;
}

static int
set_protocol(gl_stream *t, PyObject *protocol)
{
    int buffered = PyObject_IsInstance(protocol, net(t)->buffered_protocol);
    if (buffered < 0) {
        return -1;
    }
    Py_XSETREF(t->protocol, Py_NewRef(protocol));
    Py_CLEAR(t->data_received);
    Py_CLEAR(t->get_buffer);
    Py_CLEAR(t->buffer_updated);
    t->buffered = buffered;
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
stream_get_protocol(gl_stream *t, PyObject *Py_UNUSED(ignored))
{
    return Py_NewRef(t->protocol ? t->protocol : Py_None);
}

static PyObject *
stream_get_extra_info(gl_stream *t, PyObject *const *args, Py_ssize_t nargs,
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
    PyObject *v = t->extra ? PyDict_GetItemWithError(t->extra, vals[0]) : NULL;
    if (v == NULL && PyErr_Occurred()) {
        return NULL;
    }
    return Py_NewRef(v ? v : vals[1]);
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

static PyObject *
stream_set_write_buffer_limits(gl_stream *t, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"high", "low", NULL};
    PyObject *high_obj = Py_None, *low_obj = Py_None;
    Py_ssize_t high, low;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|OO:set_write_buffer_limits",
                                     kwlist, &high_obj, &low_obj) ||
        water_arg(high_obj, &high) < 0 || water_arg(low_obj, &low) < 0) {
        return NULL;
    }
    if (high_obj == Py_None) {
        high = low_obj == Py_None ? 64 * 1024 : 4 * low;
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
    if (mirror_limits(t) < 0 || maybe_pause_protocol(t) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
stream_get_write_buffer_limits(gl_stream *t, PyObject *Py_UNUSED(ignored))
{
    return Py_BuildValue("(nn)", t->low_water, t->high_water);
}

static PyObject *
stream_get_write_buffer_size(gl_stream *t, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromSsize_t(t->wsize);
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
    t->empty_waiter = gl_future_new(t->loop);
    if (t->empty_waiter == NULL) {
        return NULL;
    }
    if (t->wsize == 0 &&
        gl_future_set_result(t->loop->st, t->empty_waiter, Py_None) < 0) {
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
    unwatch(t);
    Py_RETURN_NONE;
}

static PyObject *
stream_reclaim_fd(gl_stream *t, PyObject *Py_UNUSED(ignored))
{
    if (t->watching || t->sock == NULL || t->loop->closed) {
        Py_RETURN_NONE;
    }
    if (gl_poll_watch(&t->loop->poll, t->fd, (PyObject *)t, stream_on_event,
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
    const char *state = t->sock == NULL ? " closed" : t->closing ? " closing" : "";
    if (t->sock == NULL) {
        return PyUnicode_FromFormat("<%s%s fd=%d>", _PyType_Name(Py_TYPE(t)),
                                    state, t->fd);
    }
    return PyUnicode_FromFormat(
        "<%s%s fd=%d read=%s write=<%s, bufsize=%zd>>", _PyType_Name(Py_TYPE(t)),
        state, t->fd, can_read(t) || (!t->started && !t->closing) ? "polling" : "idle",
        t->wsize ? "polling" : "idle", t->wsize);
}

/* ------------------------------------------------------------------ */
/* creation                                                           */

static int
set_nodelay(gl_stream *t)
{
    /* As asyncio: only for sockets made as IPPROTO_TCP stream sockets. */
    gl_net_state *n = net(t);
    long family = -1, type = -1, proto = -1;
    PyObject *names[3] = {n->s_family, n->s_type, n->s_proto};
    long *outs[3] = {&family, &type, &proto};
    for (int i = 0; i < 3; i++) {
        PyObject *v = PyObject_GetAttr(t->sock, names[i]);
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

static int
schedule_start(gl_stream *t, PyObject *waiter)
{
    gl_net_state *n = net(t);
    PyObject *made = PyObject_GetAttr(t->protocol, n->s_connection_made);
    if (made == NULL) {
        return -1;
    }
    PyObject *args = PyTuple_Pack(1, (PyObject *)t);
    int rc = args ? gl_loop_call_soon(t->loop, made, args) : -1;
    Py_XDECREF(args);
    Py_DECREF(made);
    if (rc < 0 || schedule_method(t, n->s__start_reading, NULL) < 0) {
        return -1;
    }
    if (waiter != NULL && waiter != Py_None) {
        args = PyTuple_Pack(2, waiter, Py_None);
        rc = args ? gl_loop_call_soon(t->loop, n->set_result_unless_cancelled, args) : -1;
        Py_XDECREF(args);
        return rc;
    }
    return 0;
}

PyObject *
gl_stream_new(gl_loop *loop, PyObject *sock, PyObject *protocol,
              PyObject *waiter, PyObject *extra, PyObject *server)
{
    gl_state *st = loop->st;
    if (gl_loop_check_not_closed(loop) < 0) {
        return NULL;
    }
    int fd = gl_sock_fileno(st, sock);
    if (fd == -2) {
        return NULL;
    }
    if (fd < 0) {
        PyErr_SetString(PyExc_ValueError, "Invalid file descriptor: -1");
        return NULL;
    }
    PyTypeObject *tp = st->net.StreamType;
    gl_stream *t = (gl_stream *)tp->tp_alloc(tp, 0);
    if (t == NULL) {
        return NULL;
    }
    t->loop = (gl_loop *)Py_NewRef(loop);
    t->sock = Py_NewRef(sock);
    t->fd = fd;
    t->high_water = 64 * 1024;
    t->low_water = 16 * 1024;
    t->fc_loop = Py_NewRef((PyObject *)loop);
    mirror_paused(t);
    if (mirror_limits(t) < 0 || set_protocol(t, protocol) < 0 ||
        (t->extra = gl_transport_extra(st, sock, extra)) == NULL ||
        set_nodelay(t) < 0) {
        goto fail;
    }
    if (gl_poll_check_not_owned(&loop->poll, fd, sock) < 0 ||
        gl_poll_watch(&loop->poll, fd, (PyObject *)t, stream_on_event,
                      EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, GL_WATCH_OWNED) < 0) {
        goto fail;
    }
    t->watching = 1;
    if (server != NULL && server != Py_None) {
        t->server = Py_NewRef(server);
#if PY_VERSION_HEX >= 0x030D0000
        PyObject *r = PyObject_CallMethodOneArg(server, st->net.s__attach,
                                                (PyObject *)t);
#else
        PyObject *r = PyObject_CallMethodNoArgs(server, st->net.s__attach);
#endif
        if (r == NULL) {
            goto fail;
        }
        Py_DECREF(r);
    }
    if (schedule_start(t, waiter) < 0) {
        goto fail;
    }
    return (PyObject *)t;
fail:
    /* The socket stays the caller's: it closes it on error. */
    unwatch(t);
    Py_CLEAR(t->sock);
    Py_CLEAR(t->server);
    Py_DECREF(t);
    return NULL;
}

static PyObject *
loop_make_socket_transport(gl_loop *loop, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"sock", "protocol", "waiter", "extra", "server", NULL};
    PyObject *sock, *protocol, *waiter = Py_None, *extra = Py_None,
             *server = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|O$OO:_make_socket_transport",
                                     kwlist, &sock, &protocol, &waiter, &extra,
                                     &server)) {
        return NULL;
    }
    return gl_stream_new(loop, sock, protocol, waiter, extra, server);
}

PyMethodDef gl_stream_methods[] = {
    {"_make_socket_transport", (PyCFunction)(void (*)(void))loop_make_socket_transport,
     METH_VARARGS | METH_KEYWORDS,
     PyDoc_STR("_make_socket_transport(sock, protocol, waiter=None, *, extra=None, "
               "server=None)\n--\n\nA C stream transport on a connected socket.")},
    {NULL, NULL, 0, NULL},
};

/* ------------------------------------------------------------------ */
/* the type                                                           */

static int
stream_traverse(gl_stream *t, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(t));
    Py_VISIT(t->extra);
    Py_VISIT(t->fc_loop);
    Py_VISIT(t->fc_protocol_paused);
    Py_VISIT(t->fc_high_water);
    Py_VISIT(t->fc_low_water);
    Py_VISIT(t->loop);
    Py_VISIT(t->sock);
    Py_VISIT(t->protocol);
    Py_VISIT(t->data_received);
    Py_VISIT(t->get_buffer);
    Py_VISIT(t->buffer_updated);
    Py_VISIT(t->server);
    Py_VISIT(t->empty_waiter);
    for (Py_ssize_t i = 0; i < t->wq_len; i++) {
        Py_VISIT(t->wq[t->wq_head + i].obj);
    }
    return 0;
}

static int
stream_clear(gl_stream *t)
{
    Py_CLEAR(t->extra);
    Py_CLEAR(t->fc_loop);
    Py_CLEAR(t->fc_protocol_paused);
    Py_CLEAR(t->fc_high_water);
    Py_CLEAR(t->fc_low_water);
    Py_CLEAR(t->protocol);
    Py_CLEAR(t->data_received);
    Py_CLEAR(t->get_buffer);
    Py_CLEAR(t->buffer_updated);
    Py_CLEAR(t->server);
    Py_CLEAR(t->empty_waiter);
    wq_clear(t);
    Py_CLEAR(t->sock);
    Py_CLEAR(t->loop);
    return 0;
}

static void
stream_finalize(gl_stream *t)
{
    if (t->sock == NULL) {
        return;
    }
    PyObject *exc = gl_err_fetch();
    if (PyErr_ResourceWarning((PyObject *)t, 1, "unclosed transport %R", t) < 0) {
        PyErr_WriteUnraisable((PyObject *)t);
    }
    if (t->loop != NULL) {
        unwatch(t);
    }
    PyObject *sock = t->sock;
    t->sock = NULL;
    PyObject *r = PyObject_CallMethod(sock, "close", NULL);
    if (r == NULL) {
        PyErr_WriteUnraisable((PyObject *)t);
    }
    Py_XDECREF(r);
    Py_DECREF(sock);
    if (exc != NULL) {
        gl_err_restore(exc);
    }
}

static void
stream_dealloc(gl_stream *t)
{
    PyTypeObject *tp = Py_TYPE(t);
    PyObject_GC_UnTrack(t);
    if (PyObject_CallFinalizerFromDealloc((PyObject *)t) < 0) {
        return;
    }
    if (t->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)t);
    }
    stream_clear(t);
    tp->tp_free(t);
    Py_DECREF(tp);
}

static PyObject *
stream_get_sock(gl_stream *t, void *Py_UNUSED(c))
{
    return Py_NewRef(t->sock ? t->sock : Py_None);
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
    {"_sock", (getter)stream_get_sock, NULL, NULL, NULL},
    {"_sock_fd", (getter)stream_get_sock_fd, NULL, NULL, NULL},
    {"_closing", (getter)stream_get_closing, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef stream_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(gl_stream, weakreflist), READONLY, NULL},
    {"_protocol", T_OBJECT, offsetof(gl_stream, protocol), READONLY, NULL},
    {"_server", T_OBJECT, offsetof(gl_stream, server), READONLY, NULL},
    {"_conn_lost", T_INT, offsetof(gl_stream, conn_lost), READONLY, NULL},
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
    NOARGS("is_closing", stream_is_closing),
    NOARGS("is_reading", stream_is_reading),
    NOARGS("pause_reading", stream_pause_reading),
    NOARGS("resume_reading", stream_resume_reading),
    {"set_protocol", (PyCFunction)stream_set_protocol, METH_O, NULL},
    NOARGS("get_protocol", stream_get_protocol),
    {"get_extra_info", (PyCFunction)(void (*)(void))stream_get_extra_info,
     METH_FASTCALL | METH_KEYWORDS, NULL},
    {"set_write_buffer_limits", (PyCFunction)(void (*)(void))stream_set_write_buffer_limits,
     METH_VARARGS | METH_KEYWORDS, NULL},
    NOARGS("get_write_buffer_limits", stream_get_write_buffer_limits),
    NOARGS("get_write_buffer_size", stream_get_write_buffer_size),
    NOARGS("_make_empty_waiter", stream_make_empty_waiter),
    NOARGS("_reset_empty_waiter", stream_reset_empty_waiter),
    NOARGS("_release_fd", stream_release_fd),
    NOARGS("_reclaim_fd", stream_reclaim_fd),
    NOARGS("_start_reading", stream_start_reading),
    NOARGS("_read_ready", stream_read_ready),
    {"_call_connection_lost", (PyCFunction)stream_call_connection_lost, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(stream_doc,
"A stream transport (TCP or Unix socket) written in C; behaves as\n"
"asyncio's selector socket transport.");

static PyType_Slot stream_slots[] = {
    {Py_tp_doc, (void *)stream_doc},
    {Py_tp_dealloc, stream_dealloc},
    {Py_tp_finalize, stream_finalize},
    {Py_tp_traverse, stream_traverse},
    {Py_tp_clear, stream_clear},
    {Py_tp_repr, stream_repr},
    {Py_tp_methods, stream_methods},
    {Py_tp_getset, stream_getset},
    {Py_tp_members, stream_members},
    {0, NULL},
};

static PyType_Spec stream_spec = {
    .name = "glibloop._core.StreamTransport",
    .basicsize = sizeof(gl_stream),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = stream_slots,
};

/* Where the base class keeps the slot `name` (its member descriptor's
 * offset), or (size_t)-1. */
static size_t
slot_offset(PyObject *base, const char *name)
{
    PyObject *descr = PyObject_GetAttrString(base, name);
    size_t off = (size_t)-1;
    if (descr != NULL && Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
        off = (size_t)((PyMemberDescrObject *)descr)->d_member->offset;
    }
    Py_XDECREF(descr);
    PyErr_Clear();
    return off;
}

PyTypeObject *
gl_stream_make_type(PyObject *module)
{
    PyObject *asyncio = PyImport_ImportModule("asyncio");
    if (asyncio == NULL) {
        return NULL;
    }
    PyObject *transports = PyObject_GetAttrString(asyncio, "transports");
    Py_DECREF(asyncio);
    if (transports == NULL) {
        return NULL;
    }
    PyObject *base = PyObject_GetAttrString(transports, "_FlowControlMixin");
    Py_DECREF(transports);
    if (base == NULL) {
        return NULL;
    }
    /* The base's instance fields are its five slots, right after the
     * object header: gl_stream's first five fields take their place. */
    if (!PyType_Check(base) ||
        ((PyTypeObject *)base)->tp_basicsize !=
            (Py_ssize_t)(offsetof(gl_stream, fc_protocol_paused) + sizeof(PyObject *)) ||
        slot_offset(base, "_extra") != offsetof(gl_stream, extra) ||
        slot_offset(base, "_high_water") != offsetof(gl_stream, fc_high_water) ||
        slot_offset(base, "_loop") != offsetof(gl_stream, fc_loop) ||
        slot_offset(base, "_low_water") != offsetof(gl_stream, fc_low_water) ||
        slot_offset(base, "_protocol_paused") != offsetof(gl_stream, fc_protocol_paused)) {
        PyErr_SetString(PyExc_RuntimeError,
                        "asyncio.transports._FlowControlMixin has an unexpected layout");
        Py_DECREF(base);
        return NULL;
    }
    PyObject *type = PyType_FromModuleAndSpec(module, &stream_spec, base);
    Py_DECREF(base);
    return (PyTypeObject *)type;
}
