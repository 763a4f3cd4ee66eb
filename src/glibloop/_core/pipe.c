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
 * transport); what every C transport shares (those bases' slots, the write
 * queue, flow control, closing the file, the type's slots) is in
 * transport.c. */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>
#include <structmember.h>

enum {
    GL_PIPE_FIFO,                /* a pipe or FIFO (a short read drains it) */
    GL_PIPE_SOCKET,
    GL_PIPE_CHAR,                /* pty, tty, other character device */
};

typedef struct {
    GL_TRANSPORT_HEAD            /* file: the pipe's file object, NULL once
                                  * closed; a read pipe has no fc_ slots */
    int kind;                    /* GL_PIPE_* */
    int is_writer;
    int short_read_drains;       /* a read shorter than asked empties the fd */
    int lost_pending;            /* connection_lost() is scheduled or ran */
    int lost_done;               /* _call_connection_lost() ran */
    /* reading */
    int hangup;                  /* the writer went away: read to the end */
    /* writing */
    int reader_trick;            /* a readable/erroring write end: peer gone */
} gl_pipe;

#define T(t) GL_TRANSPORT(t)

/* ------------------------------------------------------------------ */
/* closing and errors                                                 */

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
    gl_transport_unwatch(T(t));
    if (t->loop->closed) {
        t->lost_done = 1;
        gl_transport_close_file(T(t));
        return 0;
    }
    return gl_transport_schedule_method(T(t), GL_ST(t)->s__call_connection_lost,
                           exc ? exc : Py_None);
}

/* asyncio's _close(): stop watching and call connection_lost(exc) in the
 * next round.  exc may be NULL. */
static int
close_with(gl_pipe *t, PyObject *exc)
{
    t->closing = 1;
    if (t->wsize > 0) {
        gl_wq_clear(T(t));
    }
    gl_transport_unwatch(T(t));
    return schedule_connection_lost(t, exc);
}

static int
close_fn(gl_transport *t, PyObject *exc)
{
    return close_with((gl_pipe *)t, exc);
}

/* asyncio's _fatal_error (see transport.c) with the current exception: an
 * OSError of a write pipe, or EIO of a read pipe (a pty whose other side
 * closed), is only logged in debug mode.  -1 only for
 * SystemExit/KeyboardInterrupt, which are put back. */
static int
fatal_error(gl_pipe *t, const char *message)
{
    return gl_transport_fatal_error(T(t), message, !t->is_writer, close_fn);
}

/* ------------------------------------------------------------------ */
/* reading                                                            */

/* End of file: as asyncio, eof_received() and connection_lost(None) both
 * run in the next round; eof_received's answer does not keep a read pipe
 * open. */
static int
on_eof(gl_pipe *t)
{
    if (t->loop->debug) {
        gl_transport_log(T(t), "info", "%r was closed by peer");
    }
    t->closing = 1;
    gl_transport_unwatch(T(t));
    PyObject *eof = PyObject_GetAttr(t->protocol, GL_ST(t)->s_eof_received);
    int rc = eof ? gl_transport_schedule_call(T(t), eof, NULL) : -1;
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
 * count, 0 for EOF (handled), GL_RC_AGAIN when nothing more can be read
 * now (would block, or the transport failed and closed), GL_RC_STOP for
 * an exception that must stop the loop. */
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
            return GL_RC_AGAIN;
        }
        PyErr_SetFromErrno(PyExc_OSError);
        return fatal_error(t, "Fatal read error on pipe transport") < 0 ? GL_RC_STOP : GL_RC_AGAIN;
    }
    return on_eof(t) < 0 ? GL_RC_STOP : 0;
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

static Py_ssize_t
read_fn(gl_transport *t, char *buf, size_t size)
{
    return read_some((gl_pipe *)t, buf, size);
}

/* One read.  1: there may be more; 0: drained or stopped; -1:
 * SystemExit/KeyboardInterrupt.  A pipe says how much it holds (FIONREAD),
 * so bulk data goes straight into the bytes object data_received() gets. */
static int
read_once_data(gl_pipe *t)
{
    PyObject *data;
    Py_ssize_t queued;
    Py_ssize_t n = gl_transport_read_data(T(t), t->short_read_drains, read_fn, &data,
                                          &queued);
    if (n == GL_RC_ERROR) {
        return fatal_error(t, "Fatal read error on pipe transport");
    }
    if (n <= 0) {
        return n == GL_RC_STOP ? -1 : 0;
    }
    t->read_pending = queued ? t->hangup || queued > n : more_after(t, n, GL_READBUF_SIZE);
    if (gl_transport_data_received(T(t), data) < 0) {
        return fatal_error(t, "Fatal error: protocol.data_received() call failed.");
    }
    return t->read_pending;
}

static int
read_once_buffered(gl_pipe *t)
{
    Py_buffer view;
    if (gl_transport_get_buffer(T(t), &view) < 0) {
        return fatal_error(t, "Fatal error: protocol.get_buffer() call failed.");
    }
    Py_ssize_t size = view.len;
    Py_ssize_t n = read_some(t, view.buf, (size_t)size);
    PyBuffer_Release(&view);
    if (n <= 0) {
        return n == GL_RC_STOP ? -1 : 0;
    }
    t->read_pending = more_after(t, n, size);
    if (gl_transport_buffer_updated(T(t), n) < 0) {
        return fatal_error(t, "Fatal error: protocol.buffer_updated() call failed.");
    }
    return t->read_pending;
}

/* ------------------------------------------------------------------ */
/* writing                                                            */

/* Writes as much of the queue as the kernel takes.  0 on success or a
 * handled failure, -1 for SystemExit/KeyboardInterrupt. */
static int
flush(gl_pipe *t)
{
    if (gl_wq_flush(T(t), 0) == 0) {
        return 0;
    }
    gl_wq_clear(T(t));
    t->conn_lost++;
    return fatal_error(t, "Fatal write error on pipe transport");
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
    if (gl_transport_maybe_resume(T(t)) < 0) {
        return -1;
    }
    if (t->wsize == 0 && t->closing && !t->lost_pending) {
        t->lost_pending = 1;
        gl_transport_unwatch(T(t));
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
        gl_transport_log(T(t), "info", "%r was closed by peer");
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
    if (gl_wq_check_data(data) < 0) {
        return NULL;
    }
    int rc = gl_wq_write(
        T(t), data, 0, t->conn_lost || t->closing,
        "pipe closed by peer or os.write(pipe, data) raised exception.");
    if (rc == 0) {
        t->conn_lost++;
        if (fatal_error(t, "Fatal write error on pipe transport") < 0) {
            return NULL;
        }
    }
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
pipe_writelines(gl_pipe *t, PyObject *list)
{
    PyObject *joined = gl_wq_join(list);
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
    if (t->closing || t->file == NULL) {
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
handle_events(gl_transport *tt, uint32_t ev)
{
    gl_pipe *t = (gl_pipe *)tt;
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
        if (gl_transport_can_read(T(t))) {
            return gl_transport_read_loop(T(t));
        }
        t->read_pending = 1;
    }
    return 0;
}

static int
read_once(gl_transport *t)
{
    return t->buffered ? read_once_buffered((gl_pipe *)t) : read_once_data((gl_pipe *)t);
}

static const struct gl_transport_kind pipe_kind = {
    .handle_events = handle_events,
    .read_once = read_once,
};

/* ------------------------------------------------------------------ */
/* the rest of the transport API                                      */

static PyObject *
pipe_call_connection_lost(gl_pipe *t, PyObject *exc)
{
    if (t->lost_done) {
        Py_RETURN_NONE;
    }
    t->lost_done = t->lost_pending = 1;
    PyObject *raised = gl_transport_connection_lost(T(t), exc, 1);
    t->closing = 1;
    if (raised != NULL) {
        gl_err_restore(raised);
        return NULL;
    }
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

static int
set_protocol(gl_pipe *t, PyObject *protocol)
{
    return gl_transport_set_protocol(T(t), protocol, !t->is_writer);
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
pipe_can_write_eof(gl_pipe *Py_UNUSED(t), PyObject *Py_UNUSED(ignored))
{
    Py_RETURN_TRUE;
}

static PyObject *
pipe_repr(gl_pipe *t)
{
    const char *name = _PyType_Name(Py_TYPE(t));
    const char *state = t->file == NULL ? " closed" : t->closing ? " closing" : "";
    if (t->file == NULL) {
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

static PyObject *
pipe_new(gl_loop *loop, int is_writer, PyObject *pipe, PyObject *protocol,
         PyObject *waiter, PyObject *extra)
{
    gl_state *st = loop->st;
    if (gl_loop_check_not_closed(loop) < 0) {
        return NULL;
    }
    int fd = gl_sock_fileno(st, pipe);
    if (fd == GL_RC_ERROR) {
        return NULL;
    }
    if (fd < 0) {
        /* a closed file: asyncio's os.fstat(pipe.fileno()) answers EBADF */
        errno = EBADF;
        PyErr_SetFromErrno(PyExc_OSError);
        return NULL;
    }
    PyTypeObject *tp = is_writer ? st->WritePipeType : st->ReadPipeType;
    gl_pipe *t = (gl_pipe *)tp->tp_alloc(tp, 0);
    if (t == NULL) {
        return NULL;
    }
    t->is_writer = is_writer;
    t->kind_ops = &pipe_kind;
    if (gl_transport_init(T(t), loop, fd, is_writer, NULL) < 0 || classify_fd(t) < 0 ||
        set_protocol(t, protocol) < 0 ||
        make_extra(t, pipe, extra) < 0) {
        goto fail;
    }
    uint32_t events = EPOLLET | (is_writer ? EPOLLOUT : EPOLLIN | EPOLLRDHUP);
    if (t->reader_trick) {
        events |= EPOLLIN;
    }
    if (gl_poll_check_not_owned(&loop->poll, fd, pipe) < 0 ||
        gl_poll_watch(&loop->poll, fd, (PyObject *)t, gl_transport_on_event, events,
                      GL_WATCH_OWNED) < 0) {
        goto fail;
    }
    t->watching = 1;
    t->file = Py_NewRef(pipe);
    if (gl_transport_schedule_start(T(t), waiter, !is_writer) < 0) {
        goto fail;
    }
    return (PyObject *)t;
fail:
    /* The pipe stays the caller's: it closes it on error. */
    gl_transport_unwatch(T(t));
    Py_CLEAR(t->file);
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

static PyObject *
pipe_get_pipe(gl_pipe *t, void *Py_UNUSED(c))
{
    return Py_NewRef(t->file ? t->file : Py_None);
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
        gl_transport_unwatch(T(t));
    }
    Py_CLEAR(t->file);
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
    GL_TRANSPORT_GETSET,
    {"_pipe", (getter)pipe_get_pipe, (setter)pipe_set_pipe, NULL, NULL},
    {"_fileno", (getter)pipe_get_fileno, NULL, NULL, NULL},
    {"_closing", (getter)pipe_get_closing, NULL, NULL, NULL},
    {"_loop", (getter)pipe_get_loop, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

/* The write type's _loop is _FlowControlMixin's slot (fc_loop). */
static PyGetSetDef write_getset[] = {
    GL_TRANSPORT_GETSET,
    {"_pipe", (getter)pipe_get_pipe, (setter)pipe_set_pipe, NULL, NULL},
    {"_fileno", (getter)pipe_get_fileno, NULL, NULL, NULL},
    {"_closing", (getter)pipe_get_closing, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef pipe_members[] = {
    GL_TRANSPORT_MEMBERS,
    {NULL, 0, 0, 0, NULL},
};

#define NOARGS(name, fn) {name, (PyCFunction)fn, METH_NOARGS, NULL}
#define COMMON_METHODS \
    NOARGS("close", pipe_close), \
    {"set_protocol", (PyCFunction)pipe_set_protocol, METH_O, NULL}, \
    {"_call_connection_lost", (PyCFunction)pipe_call_connection_lost, METH_O, NULL}, \
    GL_TRANSPORT_BASE_METHODS

static PyMethodDef read_methods[] = {
    COMMON_METHODS,
    GL_TRANSPORT_READ_METHODS,
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
    GL_TRANSPORT_FLOW_METHODS,
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
    {Py_tp_dealloc, gl_transport_dealloc},
    {Py_tp_finalize, gl_transport_finalize},
    {Py_tp_traverse, gl_transport_traverse},
    {Py_tp_clear, gl_transport_clear},
    {Py_tp_repr, pipe_repr},
    {Py_tp_methods, read_methods},
    {Py_tp_getset, read_getset},
    {Py_tp_members, pipe_members},
    {0, NULL},
};

static PyType_Slot write_slots[] = {
    {Py_tp_doc, (void *)write_doc},
    {Py_tp_dealloc, gl_transport_dealloc},
    {Py_tp_finalize, gl_transport_finalize},
    {Py_tp_traverse, gl_transport_traverse},
    {Py_tp_clear, gl_transport_clear},
    {Py_tp_repr, pipe_repr},
    {Py_tp_methods, write_methods},
    {Py_tp_getset, write_getset},
    {Py_tp_members, pipe_members},
    {0, NULL},
};

PyType_Spec gl_pipe_read_spec = {
    .name = "glibloop._core.ReadPipeTransport",
    .basicsize = sizeof(gl_pipe),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = read_slots,
};

PyType_Spec gl_pipe_write_spec = {
    .name = "glibloop._core.WritePipeTransport",
    .basicsize = sizeof(gl_pipe),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = write_slots,
};
