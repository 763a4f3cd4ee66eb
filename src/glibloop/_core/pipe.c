/* Pipe transports: connect_read_pipe() and connect_write_pipe() on pipes,
 * FIFOs, sockets and character devices (ptys, ttys), and the stdio pipes
 * of subprocesses.
 *
 * The fd is registered once in the loop's epoll set, edge-triggered, and
 * stays so until the transport closes: pausing reading or having nothing
 * to write costs no epoll_ctl.  An edge that cannot be acted on (reading
 * not started yet, or paused) is remembered in read_pending and acted on
 * when reading (re)starts.  A read goes from the epoll event into the
 * loop's one read buffer and on to protocol.data_received(), or straight
 * into a BufferedProtocol's buffer.  A write tries write() at once and
 * queues only what the kernel did not take, without copying bytes objects;
 * the queue is flushed with writev() on the next writable edge.
 *
 * Behaviour (messages, the order of protocol calls, the write side's
 * "reader trick" that notices a closed peer, EIO from a pty treated as a
 * quiet end) follows asyncio's _UnixReadPipeTransport and
 * _UnixWritePipeTransport.  One difference: the fd is registered when the
 * transport is made, so an fd epoll cannot watch (a regular file, /dev/null)
 * fails connect_*_pipe() with the OSError instead of logging it later.
 *
 * The read type subclasses asyncio.ReadTransport, the write type
 * asyncio.transports._FlowControlMixin (a Transport, as asyncio's write pipe
 * transport): the slots of those bases are the first fields of gl_pipe, and
 * the C code mirrors its own flow-control ints into them. */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include <structmember.h>

#define GL_PIPE_IOV_MAX 64
#define GL_PIPE_READS_PER_EVENT 16
#define GL_PIPE_LOG_CONNLOST_WRITES 5   /* asyncio's LOG_THRESHOLD_FOR_CONNLOST_WRITES */

enum {
    GL_PIPE_FIFO,                /* a pipe or FIFO (a short read drains it) */
    GL_PIPE_SOCKET,
    GL_PIPE_CHAR,                /* pty, tty, other character device */
};

typedef struct {
    PyObject *obj;               /* bytes */
    Py_ssize_t off;
} gl_pipe_chunk;

typedef struct {
    PyObject_HEAD
    PyObject *extra;             /* asyncio.BaseTransport's _extra slot */
    PyObject *fc_high_water;     /* _FlowControlMixin's slots, sorted by */
    PyObject *fc_loop;           /* name as CPython lays them out; the */
    PyObject *fc_low_water;      /* read type has no such slots and */
    PyObject *fc_protocol_paused;/* leaves these NULL */
    gl_loop *loop;
    PyObject *pipe;              /* the file object; NULL once closed */
    PyObject *protocol;          /* NULL once connection_lost() ran */
    PyObject *data_received;     /* protocol's bound methods, on first use */
    PyObject *get_buffer;
    PyObject *buffer_updated;
    PyObject *weakreflist;
    PyObject *dict;              /* as asyncio's Python transports: code and
                                  * tests set attributes (mocks) on them */
    int fd;
    int kind;                    /* GL_PIPE_* */
    int is_writer;
    int short_read_drains;       /* a read shorter than asked empties the fd */
    int watching;                /* in the epoll set */
    int busy;                    /* inside the event handler */
    uint32_t deferred;           /* events that arrived while busy */
    int closing;
    int lost_pending;            /* connection_lost() is scheduled or ran */
    int lost_done;               /* _call_connection_lost() ran */
    int conn_lost;               /* write: failed writes, then refused ones */
    /* reading */
    int buffered;                /* protocol is a BufferedProtocol */
    int started;                 /* _start_reading ran */
    int paused;
    int read_pending;            /* an edge or data not consumed yet */
    int hangup;                  /* the writer went away: read to the end */
    int read_scheduled;          /* a _read_ready handle is queued */
    /* writing */
    int reader_trick;            /* a readable/erroring write end: peer gone */
    int protocol_paused;
    Py_ssize_t high_water;
    Py_ssize_t low_water;
    gl_pipe_chunk *wq;
    Py_ssize_t wq_head;
    Py_ssize_t wq_len;
    Py_ssize_t wq_cap;
    Py_ssize_t wsize;
} gl_pipe;

static int pipe_on_event(gl_loop *loop, PyObject *owner, uint32_t ev);

static inline gl_net_state *
names(gl_pipe *t)
{
    return &t->loop->st->net;
}

/* ------------------------------------------------------------------ */
/* small helpers                                                      */

static void
mirror_paused(gl_pipe *t)
{
    if (t->is_writer) {
        Py_XSETREF(t->fc_protocol_paused, PyBool_FromLong(t->protocol_paused));
    }
}

static int
mirror_limits(gl_pipe *t)
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

/* Schedules callable(arg) (or callable()) for the next round. */
static int
schedule_call(gl_pipe *t, PyObject *callable, PyObject *arg)
{
    if (gl_loop_check_not_closed(t->loop) < 0) {
        return -1;
    }
    PyObject *args = arg ? PyTuple_Pack(1, arg) : PyTuple_New(0);
    int rc = args ? gl_loop_call_soon(t->loop, callable, args) : -1;
    Py_XDECREF(args);
    return rc;
}

static int
schedule_method(gl_pipe *t, PyObject *name, PyObject *arg)
{
    PyObject *bound = PyObject_GetAttr((PyObject *)t, name);
    if (bound == NULL) {
        return -1;
    }
    int rc = schedule_call(t, bound, arg);
    Py_DECREF(bound);
    return rc;
}

static void
log_self(gl_pipe *t, const char *level, const char *fmt)
{
    PyObject *r = PyObject_CallMethod(names(t)->logger, level, "sO", fmt,
                                      (PyObject *)t);
    if (r == NULL) {
        PyErr_WriteUnraisable((PyObject *)t);
    }
    Py_XDECREF(r);
}

static void
unwatch(gl_pipe *t)
{
    if (t->watching) {
        t->watching = 0;
        gl_poll_unwatch(&t->loop->poll, t->fd, (PyObject *)t);
    }
}

static void
wq_clear(gl_pipe *t)
{
    gl_pipe_chunk *wq = t->wq;
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
wq_push(gl_pipe *t, PyObject *bytes, Py_ssize_t off)
{
    if (t->wq_head + t->wq_len == t->wq_cap) {
        if (t->wq_head > 0) {
            memmove(t->wq, t->wq + t->wq_head,
                    (size_t)t->wq_len * sizeof(gl_pipe_chunk));
            t->wq_head = 0;
        }
        if (t->wq_len == t->wq_cap) {
            Py_ssize_t cap = t->wq_cap ? t->wq_cap * 2 : 8;
            gl_pipe_chunk *wq = PyMem_Realloc(t->wq, (size_t)cap * sizeof(*wq));
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

static void
wq_consume(gl_pipe *t, Py_ssize_t n)
{
    t->wsize -= n;
    while (n > 0 && t->wq_len > 0) {
        gl_pipe_chunk *c = &t->wq[t->wq_head];
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
/* closing and errors                                                 */

/* Closes the file object and forgets it. */
static void
drop_pipe(gl_pipe *t)
{
    if (t->pipe == NULL) {
        return;
    }
    PyObject *pipe = t->pipe;
    t->pipe = NULL;
    PyObject *r = PyObject_CallMethod(pipe, "close", NULL);
    if (r == NULL) {
        PyErr_WriteUnraisable((PyObject *)t);
    }
    Py_XDECREF(r);
    Py_DECREF(pipe);
}

/* Schedules _call_connection_lost(exc) once.  On a closed loop nothing can
 * be scheduled: the file is closed at once and the protocol is not called
 * (asyncio raises RuntimeError here, which made an unclosed subprocess
 * transport's __del__ fail after the loop closed). */
static int
schedule_connection_lost(gl_pipe *t, PyObject *exc)
{
    if (t->lost_pending) {
        return 0;
    }
    t->lost_pending = 1;
    unwatch(t);
    if (t->loop->closed) {
        t->lost_done = 1;
        drop_pipe(t);
        return 0;
    }
    return schedule_method(t, names(t)->s__call_connection_lost,
                           exc ? exc : Py_None);
}

/* asyncio's _close(): stop watching and call connection_lost(exc) in the
 * next round.  exc may be NULL. */
static int
close_with(gl_pipe *t, PyObject *exc)
{
    t->closing = 1;
    if (t->wsize > 0) {
        wq_clear(t);
    }
    unwatch(t);
    return schedule_connection_lost(t, exc);
}

/* asyncio's _fatal_error, with the current exception: an OSError (a read
 * pipe: only EIO, a pty whose other side closed) is only logged in debug
 * mode, anything else goes to the exception handler; then the transport
 * closes.  -1 only for SystemExit/KeyboardInterrupt, which are put back. */
static int
fatal_error(gl_pipe *t, const char *message)
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
    int quiet = 0;
    if (PyErr_GivenExceptionMatches(exc, PyExc_OSError)) {
        if (t->is_writer) {
            quiet = 1;
        }
        else {
            PyObject *no = PyObject_GetAttrString(exc, "errno");
            quiet = no != NULL && PyLong_Check(no) && PyLong_AsLong(no) == EIO;
            Py_XDECREF(no);
            PyErr_Clear();
        }
    }
    if (!quiet) {
        gl_net_report(t->loop, message, exc, (PyObject *)t, t->protocol, NULL);
    }
    else if (t->loop->debug) {
        PyObject *r = PyObject_CallMethod(names(t)->logger, "debug", "sOs",
                                          "%r: %s", (PyObject *)t, message);
        if (r == NULL) {
            PyErr_WriteUnraisable((PyObject *)t);
        }
        Py_XDECREF(r);
    }
    if (close_with(t, exc) < 0) {
        PyErr_WriteUnraisable((PyObject *)t);
    }
    Py_DECREF(exc);
    Py_DECREF(t);
    return 0;
}

/* ------------------------------------------------------------------ */
/* reading                                                            */

static int
can_read(gl_pipe *t)
{
    return t->started && !t->paused && !t->closing && t->pipe != NULL;
}

static int
schedule_read(gl_pipe *t)
{
    if (t->read_scheduled) {
        return 0;
    }
    if (schedule_method(t, names(t)->s__read_ready, NULL) < 0) {
        return -1;
    }
    t->read_scheduled = 1;
    return 0;
}

static PyObject *
protocol_method(gl_pipe *t, PyObject **cache, PyObject *name)
{
    if (*cache == NULL) {
        *cache = PyObject_GetAttr(t->protocol, name);
    }
    return *cache;
}

/* End of file: as asyncio, eof_received() and connection_lost(None) both
 * run in the next round; eof_received's answer does not keep a read pipe
 * open. */
static int
on_eof(gl_pipe *t)
{
    if (t->loop->debug) {
        log_self(t, "info", "%r was closed by peer");
    }
    t->closing = 1;
    unwatch(t);
    PyObject *eof = PyObject_GetAttr(t->protocol, names(t)->s_eof_received);
    int rc = eof ? schedule_call(t, eof, NULL) : -1;
    Py_XDECREF(eof);
    if (rc < 0) {
        return fatal_error(t, "Fatal error on pipe transport");
    }
    if (schedule_connection_lost(t, NULL) < 0) {
        PyErr_WriteUnraisable((PyObject *)t);
    }
    return 0;
}

/* read() with the error handling both protocol kinds share: the byte
 * count, 0 for EOF (handled), -1 when nothing more can be read now (would
 * block, or the transport failed and closed), -2 for an exception that
 * must stop the loop. */
static Py_ssize_t
read_some(gl_pipe *t, char *buf, size_t size)
{
    ssize_t n;
    do {
        n = read(t->fd, buf, size);
    } while (n < 0 && errno == EINTR);
    if (n > 0) {
        return n;
    }
    t->read_pending = 0;
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return -1;
        }
        PyErr_SetFromErrno(PyExc_OSError);
        return fatal_error(t, "Fatal read error on pipe transport") < 0 ? -2 : -1;
    }
    return on_eof(t) < 0 ? -2 : 0;
}

/* After a read of n bytes out of size: may there be more right now?  A
 * short read empties a pipe of data, but a hang-up is a state, not data:
 * once the edge that reported it is consumed no other edge comes, so the
 * end of file must be read now. */
static int
more_after(gl_pipe *t, Py_ssize_t n, Py_ssize_t size)
{
    return t->short_read_drains && !t->hangup ? n == size : 1;
}

static int
deliver_data(gl_pipe *t, PyObject *data)
{
    PyObject *cb = protocol_method(t, &t->data_received, names(t)->s_data_received);
    PyObject *r = cb ? PyObject_CallOneArg(cb, data) : NULL;
    Py_DECREF(data);
    if (r == NULL) {
        return fatal_error(t, "Fatal error: protocol.data_received() call failed.");
    }
    Py_DECREF(r);
    return t->read_pending;
}

/* A pipe says how much it holds (FIONREAD): read exactly that straight into
 * the bytes object data_received() gets, without the copy out of the
 * loop's read buffer.  -2: nothing buffered (maybe the end of file), use
 * the read buffer; otherwise as read_once_data. */
static int
read_fifo_exact(gl_pipe *t)
{
    int avail = 0;
    if (ioctl(t->fd, FIONREAD, &avail) < 0 || avail <= 0) {
        return -2;
    }
    Py_ssize_t want = avail < GL_READBUF_SIZE ? avail : GL_READBUF_SIZE;
    PyObject *data = PyBytes_FromStringAndSize(NULL, want);
    if (data == NULL) {
        return fatal_error(t, "Fatal read error on pipe transport");
    }
    Py_ssize_t n = read_some(t, PyBytes_AS_STRING(data), (size_t)want);
    if (n <= 0) {
        Py_DECREF(data);
        return n == -2 ? -1 : 0;
    }
    if (n < want && _PyBytes_Resize(&data, n) < 0) {
        return fatal_error(t, "Fatal read error on pipe transport");
    }
    /* Anything written after the ioctl makes a new edge. */
    t->read_pending = t->hangup || avail > want;
    return deliver_data(t, data);
}

/* One read.  1: there may be more; 0: drained or stopped; -1:
 * SystemExit/KeyboardInterrupt. */
static int
read_once_data(gl_pipe *t)
{
    if (t->short_read_drains) {
        int rc = read_fifo_exact(t);
        if (rc != -2) {
            return rc;
        }
    }
    char *buf = gl_loop_readbuf(t->loop);
    if (buf == NULL) {
        return fatal_error(t, "Fatal read error on pipe transport");
    }
    Py_ssize_t n = read_some(t, buf, GL_READBUF_SIZE);
    if (n <= 0) {
        return n == -2 ? -1 : 0;
    }
    t->read_pending = more_after(t, n, GL_READBUF_SIZE);
    PyObject *data = PyBytes_FromStringAndSize(buf, n);
    if (data == NULL) {
        return fatal_error(t, "Fatal read error on pipe transport");
    }
    return deliver_data(t, data);
}

static int
read_once_buffered(gl_pipe *t)
{
    static const char failed[] = "Fatal error: protocol.get_buffer() call failed.";
    PyObject *cb = protocol_method(t, &t->get_buffer, names(t)->s_get_buffer);
    PyObject *hint = PyLong_FromLong(-1);
    PyObject *buf = (cb && hint) ? PyObject_CallOneArg(cb, hint) : NULL;
    Py_XDECREF(hint);
    if (buf == NULL) {
        return fatal_error(t, failed);
    }
    Py_buffer view;
    if (PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE) < 0) {
        Py_DECREF(buf);
        return fatal_error(t, failed);
    }
    if (view.len == 0) {
        PyBuffer_Release(&view);
        Py_DECREF(buf);
        PyErr_SetString(PyExc_RuntimeError, "get_buffer() returned an empty buffer");
        return fatal_error(t, failed);
    }
    Py_ssize_t size = view.len;
    Py_ssize_t n = read_some(t, view.buf, (size_t)size);
    PyBuffer_Release(&view);
    Py_DECREF(buf);
    if (n <= 0) {
        return n == -2 ? -1 : 0;
    }
    t->read_pending = more_after(t, n, size);
    cb = protocol_method(t, &t->buffer_updated, names(t)->s_buffer_updated);
    PyObject *count = PyLong_FromSsize_t(n);
    PyObject *r = (cb && count) ? PyObject_CallOneArg(cb, count) : NULL;
    Py_XDECREF(count);
    if (r == NULL) {
        return fatal_error(t, "Fatal error: protocol.buffer_updated() call failed.");
    }
    Py_DECREF(r);
    return t->read_pending;
}

/* Reads until the fd is drained (any later data makes a new edge),
 * reading stops, or the per-event quota is spent; the rest is read in the
 * next round so that other fds get their turn. */
static int
read_loop(gl_pipe *t)
{
    t->read_pending = 1;
    for (int i = 0; i < GL_PIPE_READS_PER_EVENT; i++) {
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
/* flow control (write side)                                          */

static int
call_protocol_hook(gl_pipe *t, PyObject *name, const char *message)
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
maybe_pause_protocol(gl_pipe *t)
{
    if (t->wsize <= t->high_water || t->protocol_paused || t->protocol == NULL) {
        return 0;
    }
    t->protocol_paused = 1;
    mirror_paused(t);
    return call_protocol_hook(t, names(t)->s_pause_writing,
                              "protocol.pause_writing() failed");
}

static int
maybe_resume_protocol(gl_pipe *t)
{
    if (!t->protocol_paused || t->wsize > t->low_water || t->protocol == NULL) {
        return 0;
    }
    t->protocol_paused = 0;
    mirror_paused(t);
    return call_protocol_hook(t, names(t)->s_resume_writing,
                              "protocol.resume_writing() failed");
}

/* ------------------------------------------------------------------ */
/* writing                                                            */

/* Writes as much of the queue as the kernel takes.  0 on success or a
 * handled failure, -1 for SystemExit/KeyboardInterrupt. */
static int
flush(gl_pipe *t)
{
    while (t->wq_len > 0) {
        struct iovec iov[GL_PIPE_IOV_MAX];
        int niov = 0;
        size_t total = 0;
        for (Py_ssize_t i = 0; i < t->wq_len && niov < GL_PIPE_IOV_MAX; i++) {
            gl_pipe_chunk *c = &t->wq[t->wq_head + i];
            iov[niov].iov_base = PyBytes_AS_STRING(c->obj) + c->off;
            iov[niov].iov_len = (size_t)(PyBytes_GET_SIZE(c->obj) - c->off);
            total += iov[niov].iov_len;
            niov++;
        }
        ssize_t n;
        do {
            n = writev(t->fd, iov, niov);
        } while (n < 0 && errno == EINTR);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return 0;
            }
            PyErr_SetFromErrno(PyExc_OSError);
            wq_clear(t);
            t->conn_lost++;
            return fatal_error(t, "Fatal write error on pipe transport");
        }
        wq_consume(t, n);
        if ((size_t)n < total) {
            return 0;  /* full: the next writable edge brings us back */
        }
    }
    return 0;
}

static PyObject *pipe_call_connection_lost(gl_pipe *t, PyObject *exc);

/* The writable edge: flush, resume the protocol below the low-water
 * mark, and finish a close that waited for the buffer to drain. */
static int
write_ready(gl_pipe *t)
{
    if (t->wsize == 0) {
        return 0;
    }
    if (flush(t) < 0) {
        return -1;
    }
    if (t->lost_pending || (t->closing && t->wsize > 0)) {
        return 0;
    }
    if (maybe_resume_protocol(t) < 0) {
        return -1;
    }
    if (t->wsize == 0 && t->closing && !t->lost_pending) {
        t->lost_pending = 1;
        unwatch(t);
        PyObject *r = pipe_call_connection_lost(t, Py_None);
        if (r == NULL) {
            return fatal_error(t, "Fatal error on pipe transport");
        }
        Py_DECREF(r);
    }
    return 0;
}

/* The write end became readable or failed: the reader went away. */
static int
peer_closed(gl_pipe *t)
{
    if (t->loop->debug) {
        log_self(t, "info", "%r was closed by peer");
    }
    if (t->wsize > 0) {
        PyObject *exc = PyObject_CallNoArgs(PyExc_BrokenPipeError);
        if (exc == NULL) {
            return -1;
        }
        int rc = close_with(t, exc);
        Py_DECREF(exc);
        return rc;
    }
    return close_with(t, NULL);
}

static PyObject *
pipe_write(gl_pipe *t, PyObject *data)
{
    if (!PyBytes_Check(data) && !PyByteArray_Check(data) &&
        !PyMemoryView_Check(data)) {
        PyErr_Format(PyExc_TypeError,
                     "data argument must be a bytes-like object, not '%s'",
                     _PyType_Name(Py_TYPE(data)));
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
    if (t->conn_lost || t->closing) {
        PyBuffer_Release(&view);
        if (t->conn_lost >= GL_PIPE_LOG_CONNLOST_WRITES) {
            PyObject *r = PyObject_CallMethod(
                names(t)->logger, "warning", "s",
                "pipe closed by peer or os.write(pipe, data) raised exception.");
            if (r == NULL) {
                return NULL;
            }
            Py_DECREF(r);
        }
        t->conn_lost++;
        Py_RETURN_NONE;
    }
    Py_ssize_t sent = 0;
    if (t->wsize == 0) {
        ssize_t n;
        do {
            n = write(t->fd, view.buf, (size_t)view.len);
        } while (n < 0 && errno == EINTR);
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                PyBuffer_Release(&view);
                PyErr_SetFromErrno(PyExc_OSError);
                t->conn_lost++;
                if (fatal_error(t, "Fatal write error on pipe transport") < 0) {
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
    /* Keep immutable bytes as they are; copy what the caller may change. */
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
pipe_writelines(gl_pipe *t, PyObject *list)
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
    PyObject *r = pipe_write(t, joined);
    Py_DECREF(joined);
    return r;
}

static PyObject *
pipe_write_eof(gl_pipe *t, PyObject *Py_UNUSED(ignored))
{
    if (t->closing || t->pipe == NULL) {
        Py_RETURN_NONE;
    }
    t->closing = 1;
    if ((t->wsize == 0 || t->loop->closed) && schedule_connection_lost(t, NULL) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ */
/* the epoll event                                                    */

static int
handle_events(gl_pipe *t, uint32_t ev)
{
    if (t->is_writer) {
        if (t->lost_pending) {
            return 0;
        }
        if (t->reader_trick && (ev & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP))) {
            return peer_closed(t);
        }
        if ((ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)) && t->wsize > 0) {
            return write_ready(t);
        }
        return 0;
    }
    if (ev & (EPOLLERR | EPOLLHUP | EPOLLRDHUP)) {
        t->hangup = 1;
    }
    if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP)) {
        if (can_read(t)) {
            return read_loop(t);
        }
        t->read_pending = 1;
    }
    return 0;
}

static int
pipe_on_event(gl_loop *Py_UNUSED(loop), PyObject *owner, uint32_t ev)
{
    gl_pipe *t = (gl_pipe *)owner;
    if (t->busy) {
        /* A protocol callback of ours runs a nested main loop: handle this
         * when it returns, never re-enter the protocol. */
        t->deferred |= ev;
        return 0;
    }
    t->busy = 1;
    int rc;
    for (;;) {
        rc = handle_events(t, ev);
        if (rc < 0 || !t->deferred) {
            break;
        }
        ev = t->deferred;
        t->deferred = 0;
    }
    t->busy = 0;
    return rc;
}

static PyObject *
pipe_read_ready(gl_pipe *t, PyObject *Py_UNUSED(ignored))
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
        rc = pipe_on_event(t->loop, (PyObject *)t, ev);
        Py_DECREF(t);
    }
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
pipe_start_reading(gl_pipe *t, PyObject *Py_UNUSED(ignored))
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
pipe_call_connection_lost(gl_pipe *t, PyObject *exc)
{
    if (t->lost_done) {
        Py_RETURN_NONE;
    }
    t->lost_done = t->lost_pending = 1;
    PyObject *res;
    if (t->protocol != NULL) {
        res = PyObject_CallMethodOneArg(t->protocol, names(t)->s_connection_lost, exc);
    }
    else {
        res = Py_NewRef(Py_None);
    }
    /* What follows runs whatever connection_lost() did (asyncio's finally). */
    PyObject *saved = res ? NULL : gl_err_fetch();
    unwatch(t);
    t->closing = 1;
    drop_pipe(t);
    Py_CLEAR(t->protocol);
    Py_CLEAR(t->data_received);
    Py_CLEAR(t->get_buffer);
    Py_CLEAR(t->buffer_updated);
    if (t->is_writer) {
        Py_XSETREF(t->fc_loop, Py_NewRef(Py_None));
    }
    if (saved != NULL) {
        gl_err_restore(saved);
        return NULL;
    }
    Py_DECREF(res);
    Py_RETURN_NONE;
}

static PyObject *
pipe_close(gl_pipe *t, PyObject *Py_UNUSED(ignored))
{
    if (t->is_writer) {
        return pipe_write_eof(t, NULL);
    }
    if (!t->closing && close_with(t, NULL) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
pipe_abort(gl_pipe *t, PyObject *Py_UNUSED(ignored))
{
    if (close_with(t, NULL) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
pipe_is_closing(gl_pipe *t, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(t->closing);
}

static PyObject *
pipe_is_reading(gl_pipe *t, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(!t->paused && !t->closing);
}

static PyObject *
pipe_pause_reading(gl_pipe *t, PyObject *Py_UNUSED(ignored))
{
    if (t->closing || t->paused) {
        Py_RETURN_NONE;
    }
    t->paused = 1;
    if (t->loop->debug) {
        log_self(t, "debug", "%r pauses reading");
    }
    Py_RETURN_NONE;
}

static PyObject *
pipe_resume_reading(gl_pipe *t, PyObject *Py_UNUSED(ignored))
{
    if (t->closing || !t->paused) {
        Py_RETURN_NONE;
    }
    t->paused = 0;
    /* No edge comes for what arrived while paused: go and look. */
    if (can_read(t) && t->read_pending && schedule_read(t) < 0) {
        return NULL;
    }
    if (t->loop->debug) {
        log_self(t, "debug", "%r resumes reading");
    }
    Py_RETURN_NONE;
}

static int
set_protocol(gl_pipe *t, PyObject *protocol)
{
    int buffered = 0;
    if (!t->is_writer) {
        buffered = PyObject_IsInstance(protocol, names(t)->buffered_protocol);
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

static PyObject *
pipe_set_protocol(gl_pipe *t, PyObject *protocol)
{
    if (set_protocol(t, protocol) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
pipe_get_protocol(gl_pipe *t, PyObject *Py_UNUSED(ignored))
{
    return Py_NewRef(t->protocol ? t->protocol : Py_None);
}

static PyObject *
pipe_get_extra_info(gl_pipe *t, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"name", "default", NULL};
    PyObject *name, *dflt = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|O:get_extra_info", kwlist,
                                     &name, &dflt)) {
        return NULL;
    }
    PyObject *v = t->extra ? PyDict_GetItemWithError(t->extra, name) : NULL;
    if (v == NULL && PyErr_Occurred()) {
        return NULL;
    }
    return Py_NewRef(v ? v : dflt);
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
pipe_set_write_buffer_limits(gl_pipe *t, PyObject *args, PyObject *kwds)
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
pipe_get_write_buffer_limits(gl_pipe *t, PyObject *Py_UNUSED(ignored))
{
    return Py_BuildValue("(nn)", t->low_water, t->high_water);
}

static PyObject *
pipe_get_write_buffer_size(gl_pipe *t, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromSsize_t(t->wsize);
}

static PyObject *
pipe_can_write_eof(gl_pipe *Py_UNUSED(t), PyObject *Py_UNUSED(ignored))
{
    Py_RETURN_TRUE;
}

static PyObject *
pipe_repr(gl_pipe *t)
{
    const char *name = _PyType_Name(Py_TYPE(t));
    const char *state = t->pipe == NULL ? " closed" : t->closing ? " closing" : "";
    if (t->pipe == NULL) {
        return PyUnicode_FromFormat("<%s%s fd=%d>", name, state, t->fd);
    }
    if (t->loop == NULL || t->loop->closed) {
        return PyUnicode_FromFormat("<%s%s fd=%d open>", name, state, t->fd);
    }
    if (t->is_writer) {
        return PyUnicode_FromFormat("<%s%s fd=%d %s bufsize=%zd>", name, state,
                                    t->fd, t->wsize ? "polling" : "idle", t->wsize);
    }
    int polling = !t->closing && !t->paused;
    return PyUnicode_FromFormat("<%s%s fd=%d %s>", name, state, t->fd,
                                polling ? "polling" : "idle");
}

/* ------------------------------------------------------------------ */
/* creation                                                           */

/* Checks the fd's type as asyncio does and makes it non-blocking. */
static int
classify_fd(gl_pipe *t)
{
    struct stat stbuf;
    if (fstat(t->fd, &stbuf) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if (S_ISFIFO(stbuf.st_mode)) {
        t->kind = GL_PIPE_FIFO;
    }
    else if (S_ISSOCK(stbuf.st_mode)) {
        t->kind = GL_PIPE_SOCKET;
    }
    else if (S_ISCHR(stbuf.st_mode)) {
        t->kind = GL_PIPE_CHAR;
    }
    else {
        PyErr_SetString(PyExc_ValueError,
                        t->is_writer
                            ? "Pipe transport is only for pipes, sockets and character devices"
                            : "Pipe transport is for pipes/sockets only.");
        return -1;
    }
    int flags = fcntl(t->fd, F_GETFL);
    if (flags < 0 ||
        (!(flags & O_NONBLOCK) && fcntl(t->fd, F_SETFL, flags | O_NONBLOCK) < 0)) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    /* A pipe returns less than asked only when it is empty, except in
     * packet mode (O_DIRECT), where a read returns one packet; sockets and
     * ttys (a tty returns a line at a time) are read until EAGAIN. */
    t->short_read_drains = t->kind == GL_PIPE_FIFO && !(flags & O_DIRECT);
    /* As asyncio: a write end that turns readable (or fails) lost its
     * reader; that only holds for pipes and sockets. */
    t->reader_trick = t->is_writer && t->kind != GL_PIPE_CHAR;
    return 0;
}

static int
make_extra(gl_pipe *t, PyObject *pipe, PyObject *extra)
{
    t->extra = (extra != NULL && extra != Py_None) ? PyDict_Copy(extra) : PyDict_New();
    if (t->extra == NULL) {
        return -1;
    }
    return PyDict_SetItemString(t->extra, "pipe", pipe);
}

static int
schedule_start(gl_pipe *t, PyObject *waiter)
{
    gl_net_state *n = names(t);
    PyObject *made = PyObject_GetAttr(t->protocol, n->s_connection_made);
    if (made == NULL) {
        return -1;
    }
    int rc = schedule_call(t, made, (PyObject *)t);
    Py_DECREF(made);
    if (rc < 0) {
        return -1;
    }
    if (!t->is_writer && schedule_method(t, n->s__start_reading, NULL) < 0) {
        return -1;
    }
    if (waiter != NULL && waiter != Py_None) {
        PyObject *args = PyTuple_Pack(2, waiter, Py_None);
        rc = args ? gl_loop_call_soon(t->loop, n->set_result_unless_cancelled, args) : -1;
        Py_XDECREF(args);
        return rc;
    }
    return 0;
}

static PyObject *
pipe_new(gl_loop *loop, int is_writer, PyObject *pipe, PyObject *protocol,
         PyObject *waiter, PyObject *extra)
{
    gl_state *st = loop->st;
    if (gl_loop_check_not_closed(loop) < 0) {
        return NULL;
    }
    int fd = gl_sock_fileno(st, pipe);
    if (fd == -2) {
        return NULL;
    }
    if (fd < 0) {
        PyErr_SetString(PyExc_ValueError, "Invalid file descriptor: -1");
        return NULL;
    }
    PyTypeObject *tp = is_writer ? st->proc.WritePipeType : st->proc.ReadPipeType;
    gl_pipe *t = (gl_pipe *)tp->tp_alloc(tp, 0);
    if (t == NULL) {
        return NULL;
    }
    t->loop = (gl_loop *)Py_NewRef(loop);
    t->fd = fd;
    t->is_writer = is_writer;
    t->high_water = 64 * 1024;
    t->low_water = 16 * 1024;
    if (is_writer) {
        t->fc_loop = Py_NewRef((PyObject *)loop);
        mirror_paused(t);
        if (mirror_limits(t) < 0) {
            goto fail;
        }
    }
    if (classify_fd(t) < 0 || set_protocol(t, protocol) < 0 ||
        make_extra(t, pipe, extra) < 0) {
        goto fail;
    }
    uint32_t events = EPOLLET | (is_writer ? EPOLLOUT : EPOLLIN | EPOLLRDHUP);
    if (t->reader_trick) {
        events |= EPOLLIN;
    }
    if (gl_poll_check_not_owned(&loop->poll, fd, pipe) < 0 ||
        gl_poll_watch(&loop->poll, fd, (PyObject *)t, pipe_on_event, events,
                      GL_WATCH_OWNED) < 0) {
        goto fail;
    }
    t->watching = 1;
    t->pipe = Py_NewRef(pipe);
    if (schedule_start(t, waiter) < 0) {
        goto fail;
    }
    return (PyObject *)t;
fail:
    /* The pipe stays the caller's: it closes it on error. */
    unwatch(t);
    Py_CLEAR(t->pipe);
    Py_DECREF(t);
    return NULL;
}

static PyObject *
make_pipe_transport(gl_loop *loop, PyObject *args, PyObject *kwds,
                    int is_writer)
{
    static char *kwlist[] = {"pipe", "protocol", "waiter", "extra", NULL};
    PyObject *pipe, *protocol, *waiter = Py_None, *extra = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|OO:_make_pipe_transport",
                                     kwlist, &pipe, &protocol, &waiter, &extra)) {
        return NULL;
    }
    return pipe_new(loop, is_writer, pipe, protocol, waiter, extra);
}

static PyObject *
loop_make_read_pipe_transport(gl_loop *loop, PyObject *args, PyObject *kwds)
{
    return make_pipe_transport(loop, args, kwds, 0);
}

static PyObject *
loop_make_write_pipe_transport(gl_loop *loop, PyObject *args, PyObject *kwds)
{
    return make_pipe_transport(loop, args, kwds, 1);
}

PyMethodDef gl_pipe_methods[] = {
    {"_make_read_pipe_transport",
     (PyCFunction)(void (*)(void))loop_make_read_pipe_transport,
     METH_VARARGS | METH_KEYWORDS,
     PyDoc_STR("_make_read_pipe_transport(pipe, protocol, waiter=None, extra=None)\n--\n\n"
               "A C read transport on a pipe, FIFO, socket or character device.")},
    {"_make_write_pipe_transport",
     (PyCFunction)(void (*)(void))loop_make_write_pipe_transport,
     METH_VARARGS | METH_KEYWORDS,
     PyDoc_STR("_make_write_pipe_transport(pipe, protocol, waiter=None, extra=None)\n--\n\n"
               "A C write transport on a pipe, FIFO, socket or character device.")},
    {NULL, NULL, 0, NULL},
};

/* ------------------------------------------------------------------ */
/* the types                                                          */

static int
pipe_traverse(gl_pipe *t, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(t));
    Py_VISIT(t->extra);
    Py_VISIT(t->fc_high_water);
    Py_VISIT(t->fc_loop);
    Py_VISIT(t->fc_low_water);
    Py_VISIT(t->fc_protocol_paused);
    Py_VISIT(t->loop);
    Py_VISIT(t->pipe);
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

static int
pipe_clear(gl_pipe *t)
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
    wq_clear(t);
    Py_CLEAR(t->pipe);
    Py_CLEAR(t->loop);
    return 0;
}

static void
pipe_finalize(gl_pipe *t)
{
    if (t->pipe == NULL) {
        return;
    }
    PyObject *exc = gl_err_fetch();
    if (PyErr_ResourceWarning((PyObject *)t, 1, "unclosed transport %R", t) < 0) {
        PyErr_WriteUnraisable((PyObject *)t);
    }
    if (t->loop != NULL) {
        unwatch(t);
    }
    drop_pipe(t);
    if (exc != NULL) {
        gl_err_restore(exc);
    }
}

static void
pipe_dealloc(gl_pipe *t)
{
    PyTypeObject *tp = Py_TYPE(t);
    PyObject_GC_UnTrack(t);
    if (PyObject_CallFinalizerFromDealloc((PyObject *)t) < 0) {
        return;
    }
    if (t->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)t);
    }
    pipe_clear(t);
    tp->tp_free(t);
    Py_DECREF(tp);
}

static PyObject *
pipe_get_pipe(gl_pipe *t, void *Py_UNUSED(c))
{
    return Py_NewRef(t->pipe ? t->pipe : Py_None);
}

/* As asyncio's attribute: code (CPython's tests) that closed the file
 * itself sets it to None so that the transport forgets it. */
static int
pipe_set_pipe(gl_pipe *t, PyObject *v, void *Py_UNUSED(c))
{
    if (v != NULL && v != Py_None) {
        PyErr_SetString(PyExc_AttributeError, "_pipe can only be set to None");
        return -1;
    }
    if (t->loop != NULL) {
        unwatch(t);
    }
    Py_CLEAR(t->pipe);
    return 0;
}

static PyObject *
pipe_get_fileno(gl_pipe *t, void *Py_UNUSED(c))
{
    return PyLong_FromLong(t->fd);
}

static PyObject *
pipe_get_closing(gl_pipe *t, void *Py_UNUSED(c))
{
    return PyBool_FromLong(t->closing);
}

static PyObject *
pipe_get_loop(gl_pipe *t, void *Py_UNUSED(c))
{
    return Py_NewRef(!t->lost_done && t->loop ? (PyObject *)t->loop : Py_None);
}

static PyGetSetDef read_getset[] = {
    {"_pipe", (getter)pipe_get_pipe, (setter)pipe_set_pipe, NULL, NULL},
    {"_fileno", (getter)pipe_get_fileno, NULL, NULL, NULL},
    {"_closing", (getter)pipe_get_closing, NULL, NULL, NULL},
    {"_loop", (getter)pipe_get_loop, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

/* The write type's _loop is _FlowControlMixin's slot (fc_loop). */
static PyGetSetDef write_getset[] = {
    {"_pipe", (getter)pipe_get_pipe, (setter)pipe_set_pipe, NULL, NULL},
    {"_fileno", (getter)pipe_get_fileno, NULL, NULL, NULL},
    {"_closing", (getter)pipe_get_closing, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef pipe_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(gl_pipe, weakreflist), READONLY, NULL},
    {"__dictoffset__", T_PYSSIZET, offsetof(gl_pipe, dict), READONLY, NULL},
    {"_protocol", T_OBJECT, offsetof(gl_pipe, protocol), READONLY, NULL},
    {"_conn_lost", T_INT, offsetof(gl_pipe, conn_lost), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

#define NOARGS(name, fn) {name, (PyCFunction)fn, METH_NOARGS, NULL}
#define COMMON_METHODS \
    NOARGS("close", pipe_close), \
    NOARGS("is_closing", pipe_is_closing), \
    {"set_protocol", (PyCFunction)pipe_set_protocol, METH_O, NULL}, \
    NOARGS("get_protocol", pipe_get_protocol), \
    {"get_extra_info", (PyCFunction)(void (*)(void))pipe_get_extra_info, \
     METH_VARARGS | METH_KEYWORDS, NULL}, \
    {"_call_connection_lost", (PyCFunction)pipe_call_connection_lost, METH_O, NULL}

static PyMethodDef read_methods[] = {
    COMMON_METHODS,
    NOARGS("is_reading", pipe_is_reading),
    NOARGS("pause_reading", pipe_pause_reading),
    NOARGS("resume_reading", pipe_resume_reading),
    NOARGS("_start_reading", pipe_start_reading),
    NOARGS("_read_ready", pipe_read_ready),
    {NULL, NULL, 0, NULL},
};

static PyMethodDef write_methods[] = {
    COMMON_METHODS,
    {"write", (PyCFunction)pipe_write, METH_O,
     PyDoc_STR("Write data; what the pipe does not take at once is buffered.")},
    {"writelines", (PyCFunction)pipe_writelines, METH_O, NULL},
    NOARGS("write_eof", pipe_write_eof),
    NOARGS("can_write_eof", pipe_can_write_eof),
    NOARGS("abort", pipe_abort),
    {"set_write_buffer_limits", (PyCFunction)(void (*)(void))pipe_set_write_buffer_limits,
     METH_VARARGS | METH_KEYWORDS, NULL},
    NOARGS("get_write_buffer_limits", pipe_get_write_buffer_limits),
    NOARGS("get_write_buffer_size", pipe_get_write_buffer_size),
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(read_doc,
"A read transport on a pipe, FIFO, socket or character device, written\n"
"in C; behaves as asyncio's Unix read pipe transport.");

PyDoc_STRVAR(write_doc,
"A write transport on a pipe, FIFO, socket or character device, written\n"
"in C; behaves as asyncio's Unix write pipe transport.");

static PyType_Slot read_slots[] = {
    {Py_tp_doc, (void *)read_doc},
    {Py_tp_dealloc, pipe_dealloc},
    {Py_tp_finalize, pipe_finalize},
    {Py_tp_traverse, pipe_traverse},
    {Py_tp_clear, pipe_clear},
    {Py_tp_repr, pipe_repr},
    {Py_tp_methods, read_methods},
    {Py_tp_getset, read_getset},
    {Py_tp_members, pipe_members},
    {0, NULL},
};

static PyType_Slot write_slots[] = {
    {Py_tp_doc, (void *)write_doc},
    {Py_tp_dealloc, pipe_dealloc},
    {Py_tp_finalize, pipe_finalize},
    {Py_tp_traverse, pipe_traverse},
    {Py_tp_clear, pipe_clear},
    {Py_tp_repr, pipe_repr},
    {Py_tp_methods, write_methods},
    {Py_tp_getset, write_getset},
    {Py_tp_members, pipe_members},
    {0, NULL},
};

static PyType_Spec read_spec = {
    .name = "glibloop._core.ReadPipeTransport",
    .basicsize = sizeof(gl_pipe),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = read_slots,
};

static PyType_Spec write_spec = {
    .name = "glibloop._core.WritePipeTransport",
    .basicsize = sizeof(gl_pipe),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = write_slots,
};

/* The offset of the base's slot `name` (its member descriptor), or
 * (size_t)-1. */
static size_t
member_offset(PyObject *base, const char *name)
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

static PyObject *
transports_attr(const char *name)
{
    PyObject *mod = PyImport_ImportModule("asyncio.transports");
    if (mod == NULL) {
        return NULL;
    }
    PyObject *v = PyObject_GetAttrString(mod, name);
    Py_DECREF(mod);
    return v;
}

static PyTypeObject *
make_type(PyObject *module, PyType_Spec *spec, const char *base_name,
          int flow_control)
{
    PyObject *base = transports_attr(base_name);
    if (base == NULL) {
        return NULL;
    }
    /* The base's instance fields must be exactly the slots our first
     * fields stand for. */
    Py_ssize_t expect = flow_control
        ? (Py_ssize_t)(offsetof(gl_pipe, fc_protocol_paused) + sizeof(PyObject *))
        : (Py_ssize_t)(offsetof(gl_pipe, extra) + sizeof(PyObject *));
    int ok = PyType_Check(base) &&
             ((PyTypeObject *)base)->tp_basicsize == expect &&
             member_offset(base, "_extra") == offsetof(gl_pipe, extra);
    if (ok && flow_control) {
        ok = member_offset(base, "_high_water") == offsetof(gl_pipe, fc_high_water) &&
             member_offset(base, "_loop") == offsetof(gl_pipe, fc_loop) &&
             member_offset(base, "_low_water") == offsetof(gl_pipe, fc_low_water) &&
             member_offset(base, "_protocol_paused") ==
                 offsetof(gl_pipe, fc_protocol_paused);
    }
    if (!ok) {
        PyErr_Format(PyExc_RuntimeError,
                     "asyncio.transports.%s has an unexpected layout", base_name);
        Py_DECREF(base);
        return NULL;
    }
    PyObject *type = PyType_FromModuleAndSpec(module, spec, base);
    Py_DECREF(base);
    return (PyTypeObject *)type;
}

int
gl_pipe_make_types(PyObject *module, gl_state *st)
{
    st->proc.ReadPipeType = make_type(module, &read_spec, "ReadTransport", 0);
    if (st->proc.ReadPipeType == NULL ||
        PyModule_AddType(module, st->proc.ReadPipeType) < 0) {
        return -1;
    }
    st->proc.WritePipeType = make_type(module, &write_spec, "_FlowControlMixin", 1);
    if (st->proc.WritePipeType == NULL ||
        PyModule_AddType(module, st->proc.WritePipeType) < 0) {
        return -1;
    }
    return 0;
}

PyObject *
gl_pipe_new(gl_loop *loop, int is_writer, PyObject *pipe, PyObject *protocol,
            PyObject *waiter, PyObject *extra)
{
    return pipe_new(loop, is_writer, pipe, protocol, waiter, extra);
}
