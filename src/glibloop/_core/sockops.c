/* loop.sock_*(): each tries its syscall at once and returns a done future
 * when that succeeds.  Only an operation that would block waits, on a
 * SockWait object that is the fd's C watcher in the epoll set (level-
 * triggered, as asyncio's readers) with one pending read-side and one
 * pending write-side operation.  The coroutine wrappers asyncio's API
 * needs (create_task() takes only coroutines) are in _loop.py.
 *
 * recv, recv_into and sendall use the syscalls on the fd directly, so a
 * wait costs no exception; recvfrom, sendto, accept and connect go through
 * the socket object's own methods, which convert addresses. */
#include "internal.h"

#include <errno.h>
#include <sys/epoll.h>
#include <sys/socket.h>

/* sock_recv(n) on a socket whose last recv brought at least
 * GL_SOCK_RECV_DIRECT_MIN bytes reads straight into a bytes object of n
 * bytes and shrinks it to what came, as socket.recv() does: no copy out
 * of the loop's read buffer.  Small reads keep using the read buffer and a
 * small copy, which costs less than malloc's large-block path.  Requests
 * above GL_SOCK_RECV_DIRECT_MAX (and up to the read buffer's size) would
 * be mmap()ed by malloc (glibc's threshold starts at 128 KiB), an mmap,
 * mremap and munmap per call: those use the read buffer too. */
#define GL_SOCK_RECV_DIRECT_MIN (16 * 1024)
#define GL_SOCK_RECV_DIRECT_MAX (64 * 1024)

enum {
    OP_NONE,
    OP_RECV,
    OP_RECV_INTO,
    OP_RECVFROM,
    OP_RECVFROM_INTO,
    OP_SENDALL,
    OP_SENDTO,
    OP_ACCEPT,
    OP_CONNECT,
};

typedef struct {
    int kind;
    PyObject *fut;
    PyObject *sock;
    PyObject *arg;           /* buffer, data or address, by kind */
    PyObject *arg2;          /* sendto's address */
    Py_buffer view;          /* sendall: held while waiting, as asyncio */
    int has_view;
    Py_ssize_t n;            /* recv sizes; sendall's position */
} sockop;

typedef struct {
    PyObject_HEAD
    gl_loop *loop;
    int fd;
    sockop rd;
    sockop wr;
    uint32_t armed;          /* the epoll interest last asked for */
    Py_ssize_t last_recv;    /* bytes the last sock_recv on fd brought */
    PyObject *done_cb;       /* self._op_done, made once */
} gl_sockwait;

static int
check_nargs(const char *name, Py_ssize_t nargs, Py_ssize_t expected)
{
    if (nargs != expected) {
        PyErr_Format(PyExc_TypeError, "%s expected %zd arguments, got %zd",
                     name, expected, nargs);
        return -1;
    }
    return 0;
}

static int
is_would_block(void)
{
    return PyErr_ExceptionMatches(PyExc_BlockingIOError) ||
           PyErr_ExceptionMatches(PyExc_InterruptedError);
}

/* Releases what an operation held.  The fields are detached before any
 * reference is dropped: a finalizer may call back into the waiter. */
static void
op_release(sockop *op)
{
    sockop old = *op;
    memset(op, 0, sizeof(*op));
    if (old.has_view) {
        PyBuffer_Release(&old.view);
    }
    Py_XDECREF(old.fut);
    Py_XDECREF(old.sock);
    Py_XDECREF(old.arg);
    Py_XDECREF(old.arg2);
}

/* ------------------------------------------------------------------ */
/* one attempt of each operation: 1 done (*result set), 0 would block,  */
/* -1 error                                                            */

static int
attempt_recv(gl_loop *loop, sockop *op, PyObject **result)
{
    int fd = gl_sock_fileno(loop->st, op->sock);
    if (fd == GL_RC_ERROR) {
        return -1;
    }
    /* The fd's waiter stays while the socket is used with sock_*: it
     * remembers how much the last recv brought. */
    PyObject *owner = gl_poll_watcher(&loop->poll, fd, NULL);
    gl_sockwait *w = owner != NULL && Py_IS_TYPE(owner, loop->st->SockWaitType)
                         ? (gl_sockwait *)owner : NULL;
    int direct = op->n > GL_READBUF_SIZE ||
                 (op->n <= GL_SOCK_RECV_DIRECT_MAX && w != NULL &&
                  w->last_recv >= GL_SOCK_RECV_DIRECT_MIN);
    PyObject *bytes = NULL;
    char *buf;
    if (!direct) {
        buf = gl_poll_readbuf(&loop->poll);
    }
    else {
        bytes = PyBytes_FromStringAndSize(NULL, op->n);
        buf = bytes ? PyBytes_AS_STRING(bytes) : NULL;
    }
    if (buf == NULL) {
        return -1;
    }
    ssize_t got;
    do {
        got = recv(fd, buf, (size_t)op->n, MSG_DONTWAIT);
    } while (got < 0 && errno == EINTR);
    if (got < 0) {
        Py_XDECREF(bytes);
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return 0;
        }
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if (w != NULL) {
        w->last_recv = got;
    }
    if (bytes == NULL) {
        *result = PyBytes_FromStringAndSize(buf, got);
    }
    else if (got >= op->n / 2) {
        if (got != op->n && _PyBytes_Resize(&bytes, got) < 0) {
            return -1;
        }
        *result = bytes;
    }
    else {
        /* Little came: a small copy, and the block goes back whole (a
         * shrunk one leaves a split remainder for malloc to sort). */
        *result = PyBytes_FromStringAndSize(buf, got);
        Py_DECREF(bytes);
    }
    return *result ? 1 : -1;
}

static int
attempt_recv_into(gl_loop *loop, sockop *op, PyObject **result)
{
    int fd = gl_sock_fileno(loop->st, op->sock);
    if (fd == GL_RC_ERROR) {
        return -1;
    }
    /* The buffer is exported only for the syscall, as sock.recv_into
     * does: the caller may resize it between attempts. */
    Py_buffer view;
    if (PyObject_GetBuffer(op->arg, &view, PyBUF_WRITABLE) < 0) {
        return -1;
    }
    ssize_t got;
    do {
        got = recv(fd, view.buf, (size_t)view.len, MSG_DONTWAIT);
    } while (got < 0 && errno == EINTR);
    int saved = errno;
    PyBuffer_Release(&view);
    if (got < 0) {
        if (saved == EAGAIN || saved == EWOULDBLOCK) {
            return 0;
        }
        errno = saved;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    *result = PyLong_FromSsize_t(got);
    return *result ? 1 : -1;
}

static int
attempt_sendall(gl_loop *loop, sockop *op, PyObject **result)
{
    int fd = gl_sock_fileno(loop->st, op->sock);
    if (fd == GL_RC_ERROR) {
        return -1;
    }
    const char *buf = op->view.buf;
    do {
        ssize_t sent = send(fd, buf + op->n, (size_t)(op->view.len - op->n),
                            MSG_DONTWAIT | MSG_NOSIGNAL);
        if (sent < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return 0;
            }
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        op->n += sent;
    } while (op->n < op->view.len);
    *result = Py_NewRef(Py_None);
    return 1;
}

static int
attempt_connect_done(gl_loop *loop, sockop *op, PyObject **result)
{
    int fd = gl_sock_fileno(loop->st, op->sock);
    if (fd == GL_RC_ERROR) {
        return -1;
    }
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if (err == EINPROGRESS || err == EAGAIN || err == EINTR) {
        return 0;
    }
    if (err != 0) {
        PyObject *msg = PyUnicode_FromFormat("Connect call failed %S", op->arg);
        if (msg == NULL) {
            return -1;
        }
        /* OSError(errno, msg) picks the subclass (ConnectionRefusedError). */
        PyObject *exc = PyObject_CallFunction(PyExc_OSError, "iO", err, msg);
        Py_DECREF(msg);
        if (exc != NULL) {
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
        }
        return -1;
    }
    *result = Py_NewRef(Py_None);
    return 1;
}

/* The operations that go through the socket object's methods. */
static int
attempt_method(gl_loop *loop, sockop *op, PyObject **result, int first)
{
    gl_state *n = loop->st;
    PyObject *r;
    switch (op->kind) {
    case OP_RECVFROM: {
        PyObject *size = PyLong_FromSsize_t(op->n);
        if (size == NULL) {
            return -1;
        }
        r = PyObject_CallMethodOneArg(op->sock, n->s_recvfrom, size);
        Py_DECREF(size);
        break;
    }
    case OP_RECVFROM_INTO:
        r = PyObject_CallMethod(op->sock, "recvfrom_into", "On", op->arg,
                                op->n);
        break;
    case OP_SENDTO:
        r = PyObject_CallMethodObjArgs(op->sock, n->s_sendto, op->arg,
                                       op->arg2, NULL);
        break;
    case OP_ACCEPT:
        r = PyObject_CallMethodNoArgs(op->sock, n->s_accept);
        if (r != NULL) {
            PyObject *conn = PyTuple_Check(r) && PyTuple_GET_SIZE(r) == 2
                ? PyTuple_GET_ITEM(r, 0) : NULL;
            PyObject *ok = conn
                ? PyObject_CallMethodOneArg(conn, n->s_setblocking, Py_False)
                : NULL;
            if (ok == NULL) {
                if (!PyErr_Occurred()) {
                    PyErr_SetString(PyExc_TypeError,
                                    "accept() did not return (conn, address)");
                }
                Py_CLEAR(r);
            }
            Py_XDECREF(ok);
        }
        break;
    case OP_CONNECT:
        if (!first) {
            return attempt_connect_done(loop, op, result);
        }
        r = PyObject_CallMethodOneArg(op->sock, n->s_connect, op->arg);
        break;
    default:
        PyErr_SetString(PyExc_SystemError, "bad sock op");
        return -1;
    }
    if (r == NULL) {
        if (is_would_block()) {
            PyErr_Clear();
            return 0;
        }
        return -1;
    }
    *result = r;
    return 1;
}

static int
attempt(gl_loop *loop, sockop *op, PyObject **result, int first)
{
    switch (op->kind) {
    case OP_RECV:
        return attempt_recv(loop, op, result);
    case OP_RECV_INTO:
        return attempt_recv_into(loop, op, result);
    case OP_SENDALL:
        return attempt_sendall(loop, op, result);
    default:
        return attempt_method(loop, op, result, first);
    }
}

/* ------------------------------------------------------------------ */
/* the waiter                                                         */

static int
is_read_side(int kind)
{
    return kind == OP_RECV || kind == OP_RECV_INTO || kind == OP_RECVFROM ||
           kind == OP_RECVFROM_INTO || kind == OP_ACCEPT;
}

/* Brings the epoll interest in line with the pending operations.  The
 * read side stays registered while idle: the common pattern (recv waits,
 * completes, the next recv waits again) then costs no epoll_ctl; an event
 * that arrives while nothing waits unregisters it.  An idle waiter is
 * marked so in the poll table: it is a cache, and any new registration of
 * its fd (a server's listening socket that got the number) replaces it. */
static void
sync_watch(gl_sockwait *w, int drop_idle)
{
    gl_loop *loop = w->loop;
    if (loop->closed) {
        return;
    }
    if (gl_poll_watcher(&loop->poll, w->fd, NULL) != (PyObject *)w) {
        return;  /* evicted: the fd was reused by a transport */
    }
    uint32_t want = (w->rd.kind ? EPOLLIN : 0) | (w->wr.kind ? EPOLLOUT : 0);
    gl_poll_watch_idle(&loop->poll, w->fd, (PyObject *)w, want == 0);
    if (want == 0 && !drop_idle) {
        want = EPOLLIN;
    }
    if (want == 0) {
        gl_poll_unwatch(&loop->poll, w->fd, (PyObject *)w);
        return;
    }
    if (want == w->armed) {
        return;
    }
    if (gl_poll_watch_events(&loop->poll, w->fd, (PyObject *)w, want) < 0) {
        PyErr_WriteUnraisable((PyObject *)w);
        return;
    }
    w->armed = want;
}

/* Finishes op with the outcome of an attempt (rc 1 or -1). */
static int
complete(gl_sockwait *w, sockop *op, int rc, PyObject *result)
{
    gl_state *st = w->loop->st;
    sockop taken = *op;
    memset(op, 0, sizeof(*op));
    int r;
    if (rc > 0) {
        r = gl_loop_future_set_result(st, taken.fut, result);
        Py_DECREF(result);
    }
    else {
        PyObject *exc = gl_err_fetch();
        if (gl_exc_is_fatal(exc)) {
            gl_err_restore(exc);
            op_release(&taken);
            return -1;
        }
        r = gl_loop_future_set_exception(st, taken.fut, exc);
        Py_DECREF(exc);
    }
    op_release(&taken);
    if (r < 0) {
        PyErr_WriteUnraisable((PyObject *)w);
    }
    return 0;
}

static int
run_op(gl_sockwait *w, sockop *op)
{
    int done = gl_loop_future_done(w->loop->st, op->fut);
    if (done != 0) {
        if (done < 0) {
            PyErr_WriteUnraisable((PyObject *)w);
        }
        op_release(op);
        return 0;
    }
    PyObject *result = NULL;
    int rc = attempt(w->loop, op, &result, 0);
    if (rc == 0) {
        return 0;
    }
    return complete(w, op, rc, result);
}

static int
sockwait_on_event(gl_loop *Py_UNUSED(loop), PyObject *owner, uint32_t ev)
{
    gl_sockwait *w = (gl_sockwait *)owner;
    int idle = !w->rd.kind && !w->wr.kind;
    if (w->rd.kind && (ev & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP)) &&
        run_op(w, &w->rd) < 0) {
        return -1;
    }
    if (w->wr.kind && (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)) &&
        run_op(w, &w->wr) < 0) {
        return -1;
    }
    sync_watch(w, idle);
    return 0;
}

static PyObject *
sockwait_op_done(gl_sockwait *w, PyObject *fut)
{
    /* asyncio removes the reader when the future is done for any reason,
     * a cancellation included. */
    Py_INCREF(w);
    if (w->rd.fut == fut) {
        op_release(&w->rd);
    }
    if (w->wr.fut == fut) {
        op_release(&w->wr);
    }
    sync_watch(w, 0);
    Py_DECREF(w);
    Py_RETURN_NONE;
}

static gl_sockwait *
get_waiter(gl_loop *loop, int fd, PyObject *sock)
{
    gl_state *st = loop->st;
    int kind;
    /* A waiter (or anything else) left on fd by a socket that has been
     * closed since, its number now reused by sock, is forgotten: the
     * kernel tells (gl_poll_forget_if_closed).  That check is the one
     * epoll_ctl a reused waiter costs; its interest is then known to be
     * registered for this file. */
    gl_poll_forget_if_closed(&loop->poll, fd);
    PyObject *owner = gl_poll_watcher(&loop->poll, fd, &kind);
    if (owner != NULL && Py_IS_TYPE(owner, st->SockWaitType)) {
        return (gl_sockwait *)Py_NewRef(owner);
    }
    if (owner != NULL) {
        if (kind == GL_WATCH_OWNED) {
            if (gl_poll_check_not_owned(&loop->poll, fd, sock) < 0) {
                return NULL;
            }
        }
        PyErr_Format(PyExc_RuntimeError, "File descriptor %d is used by %R",
                     fd, owner);
        return NULL;
    }
    gl_sockwait *w = PyObject_GC_New(gl_sockwait, st->SockWaitType);
    if (w == NULL) {
        return NULL;
    }
    w->loop = (gl_loop *)Py_NewRef(loop);
    w->fd = fd;
    memset(&w->rd, 0, sizeof(w->rd));
    memset(&w->wr, 0, sizeof(w->wr));
    w->armed = 0;
    w->last_recv = 0;
    w->done_cb = NULL;
    PyObject_GC_Track(w);
    w->done_cb = PyObject_GetAttr((PyObject *)w, st->s__op_done);
    if (w->done_cb == NULL ||
        gl_poll_watch(&loop->poll, fd, (PyObject *)w, sockwait_on_event, 0,
                      GL_WATCH_SHARED) < 0) {
        Py_DECREF(w);
        return NULL;
    }
    return w;
}

/* Parks op (whose fields it takes) on fd until it can complete. */
static int
wait_op(gl_loop *loop, sockop *op)
{
    if (gl_loop_check_not_closed(loop) < 0) {
        return -1;
    }
    int fd = gl_sock_fileno(loop->st, op->sock);
    if (fd == GL_RC_ERROR) {
        return -1;
    }
    if (fd < 0) {
        PyErr_SetString(PyExc_ValueError, "Invalid file descriptor: -1");
        return -1;
    }
    gl_sockwait *w = get_waiter(loop, fd, op->sock);
    if (w == NULL) {
        return -1;
    }
    PyObject *r = PyObject_CallMethodOneArg(op->fut, loop->st->s_add_done_callback,
                                            w->done_cb);
    if (r == NULL) {
        sync_watch(w, 0);
        Py_DECREF(w);
        return -1;
    }
    Py_DECREF(r);
    sockop *slot = is_read_side(op->kind) ? &w->rd : &w->wr;
    /* A second operation on the same side replaces the first, as asyncio's
     * add_reader does; the first future is left pending there too. */
    op_release(slot);
    *slot = *op;
    memset(op, 0, sizeof(*op));
    sync_watch(w, 0);
    Py_DECREF(w);
    return 0;
}

/* ------------------------------------------------------------------ */
/* the Loop methods                                                   */

/* What asyncio's sock_* check before their first attempt, in its order:
 * no SSL socket, non-blocking in debug mode, and (for the operations that
 * use the fd directly) that sock has the method asyncio would call, so a
 * file object fails with asyncio's AttributeError, not on the syscall. */
static int
check_socket(gl_loop *loop, PyObject *sock, const char *method)
{
    gl_state *n = loop->st;
    if ((PyObject *)Py_TYPE(sock) != n->socket_type) {
        PyObject *r = PyObject_CallOneArg(n->check_ssl_socket, sock);
        if (r == NULL) {
            return -1;
        }
        Py_DECREF(r);
    }
    if (loop->debug) {
        PyObject *t = PyObject_CallMethodNoArgs(sock, n->s_gettimeout);
        if (t == NULL) {
            return -1;
        }
        int blocking = t == Py_None || PyFloat_AsDouble(t) != 0.0;
        Py_DECREF(t);
        if (blocking) {
            PyErr_SetString(PyExc_ValueError, "the socket must be non-blocking");
            return -1;
        }
    }
    if (method != NULL && (PyObject *)Py_TYPE(sock) != n->socket_type) {
        PyObject *m = PyObject_GetAttrString(sock, method);
        if (m == NULL) {
            return -1;
        }
        Py_DECREF(m);
    }
    return 0;
}

/* Runs op: a done future if it completes at once, a pending one parked on
 * the fd if it would block; raises what the first attempt raised. */
static PyObject *
start_op(gl_loop *loop, sockop *op)
{
    PyObject *result = NULL;
    int rc = attempt(loop, op, &result, 1);
    if (rc < 0) {
        op_release(op);
        return NULL;
    }
    PyObject *fut = gl_loop_future_new(loop);
    if (fut == NULL) {
        Py_XDECREF(result);
        op_release(op);
        return NULL;
    }
    if (rc > 0) {
        int r = gl_loop_future_set_result(loop->st, fut, result);
        Py_DECREF(result);
        op_release(op);
        if (r < 0) {
            Py_CLEAR(fut);
        }
        return fut;
    }
    op->fut = Py_NewRef(fut);
    if (wait_op(loop, op) < 0) {
        op_release(op);
        Py_DECREF(fut);
        return NULL;
    }
    return fut;
}

/* An int argument converted as the socket methods convert theirs (their
 * "n" format), with their errors. */
static int
ssize_arg(PyObject *obj, Py_ssize_t *out)
{
    PyObject *index = PyNumber_Index(obj);
    if (index == NULL) {
        return -1;
    }
    *out = PyLong_AsSsize_t(index);
    Py_DECREF(index);
    return *out == -1 && PyErr_Occurred() ? -1 : 0;
}

static int
size_arg(PyObject *obj, Py_ssize_t *out, const char *what)
{
    Py_ssize_t v;
    if (ssize_arg(obj, &v) < 0) {
        return -1;
    }
    if (v < 0) {
        PyErr_Format(PyExc_ValueError, "negative buffersize in %s", what);
        return -1;
    }
    *out = v;
    return 0;
}

/* The argument count, then check_socket() (method: see there). */
static int
begin(gl_loop *loop, const char *name, Py_ssize_t nargs, Py_ssize_t expected,
      PyObject *const *args, const char *method)
{
    if (check_nargs(name, nargs, expected) < 0) {
        return -1;
    }
    return check_socket(loop, args[0], method);
}

static PyObject *
loop_sock_recv(gl_loop *loop, PyObject *const *args, Py_ssize_t nargs)
{
    sockop op = {.kind = OP_RECV};
    if (begin(loop, "_sock_recv", nargs, 2, args, "recv") < 0 ||
        size_arg(args[1], &op.n, "recv") < 0) {
        return NULL;
    }
    op.sock = Py_NewRef(args[0]);
    return start_op(loop, &op);
}

static PyObject *
loop_sock_recv_into(gl_loop *loop, PyObject *const *args, Py_ssize_t nargs)
{
    if (begin(loop, "_sock_recv_into", nargs, 2, args, "recv_into") < 0) {
        return NULL;
    }
    /* socket.recv_into's own words for a buffer it cannot write to (each
     * attempt exports the buffer again, see attempt_recv_into). */
    Py_buffer view;
    if (PyObject_GetBuffer(args[1], &view, PyBUF_WRITABLE) < 0) {
        PyErr_Format(PyExc_TypeError,
                     "recv_into() argument 1 must be read-write bytes-like object, not %.50s",
                     args[1] == Py_None ? "None" : Py_TYPE(args[1])->tp_name);
        return NULL;
    }
    PyBuffer_Release(&view);
    sockop op = {.kind = OP_RECV_INTO};
    op.sock = Py_NewRef(args[0]);
    op.arg = Py_NewRef(args[1]);
    return start_op(loop, &op);
}

static PyObject *
loop_sock_recvfrom(gl_loop *loop, PyObject *const *args, Py_ssize_t nargs)
{
    sockop op = {.kind = OP_RECVFROM};
    if (begin(loop, "_sock_recvfrom", nargs, 2, args, NULL) < 0 ||
        size_arg(args[1], &op.n, "recvfrom") < 0) {
        return NULL;
    }
    op.sock = Py_NewRef(args[0]);
    return start_op(loop, &op);
}

static PyObject *
loop_sock_recvfrom_into(gl_loop *loop, PyObject *const *args,
                        Py_ssize_t nargs)
{
    if (begin(loop, "_sock_recvfrom_into", nargs, 3, args, NULL) < 0) {
        return NULL;
    }
    sockop op = {.kind = OP_RECVFROM_INTO};
    if (ssize_arg(args[2], &op.n) < 0) {
        return NULL;
    }
    op.sock = Py_NewRef(args[0]);
    op.arg = Py_NewRef(args[1]);
    return start_op(loop, &op);
}

static PyObject *
loop_sock_sendall(gl_loop *loop, PyObject *const *args, Py_ssize_t nargs)
{
    if (begin(loop, "_sock_sendall", nargs, 2, args, "send") < 0) {
        return NULL;
    }
    sockop op = {.kind = OP_SENDALL};
    if (PyObject_GetBuffer(args[1], &op.view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    op.has_view = 1;
    op.sock = Py_NewRef(args[0]);
    return start_op(loop, &op);
}

static PyObject *
loop_sock_sendto(gl_loop *loop, PyObject *const *args, Py_ssize_t nargs)
{
    if (begin(loop, "_sock_sendto", nargs, 3, args, NULL) < 0) {
        return NULL;
    }
    sockop op = {.kind = OP_SENDTO};
    op.sock = Py_NewRef(args[0]);
    op.arg = Py_NewRef(args[1]);
    op.arg2 = Py_NewRef(args[2]);
    return start_op(loop, &op);
}

static PyObject *
loop_sock_accept(gl_loop *loop, PyObject *sock)
{
    /* asyncio asks for the fd before it accepts */
    if (check_socket(loop, sock, "fileno") < 0) {
        return NULL;
    }
    sockop op = {.kind = OP_ACCEPT};
    op.sock = Py_NewRef(sock);
    return start_op(loop, &op);
}

static PyObject *
loop_sock_connect(gl_loop *loop, PyObject *const *args, Py_ssize_t nargs)
{
    if (begin(loop, "_sock_connect", nargs, 2, args, NULL) < 0) {
        return NULL;
    }
    sockop op = {.kind = OP_CONNECT};
    op.sock = Py_NewRef(args[0]);
    op.arg = Py_NewRef(args[1]);
    return start_op(loop, &op);
}

/* sock_connect() checks the socket before it resolves the address. */
static PyObject *
loop_sock_check(gl_loop *loop, PyObject *sock)
{
    if (check_socket(loop, sock, NULL) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

PyMethodDef gl_sockops_methods[] = {
    {"_sock_recv", (PyCFunction)(void (*)(void))loop_sock_recv, METH_FASTCALL,
     PyDoc_STR("_sock_recv(sock, n) -> Future of bytes")},
    {"_sock_recv_into", (PyCFunction)(void (*)(void))loop_sock_recv_into,
     METH_FASTCALL, PyDoc_STR("_sock_recv_into(sock, buf) -> Future of int")},
    {"_sock_recvfrom", (PyCFunction)(void (*)(void))loop_sock_recvfrom,
     METH_FASTCALL,
     PyDoc_STR("_sock_recvfrom(sock, bufsize) -> Future of (bytes, address)")},
    {"_sock_recvfrom_into",
     (PyCFunction)(void (*)(void))loop_sock_recvfrom_into, METH_FASTCALL,
     PyDoc_STR("_sock_recvfrom_into(sock, buf, nbytes) -> Future of (int, address)")},
    {"_sock_sendall", (PyCFunction)(void (*)(void))loop_sock_sendall,
     METH_FASTCALL, PyDoc_STR("_sock_sendall(sock, data) -> Future of None")},
    {"_sock_sendto", (PyCFunction)(void (*)(void))loop_sock_sendto,
     METH_FASTCALL,
     PyDoc_STR("_sock_sendto(sock, data, address) -> Future of int")},
    {"_sock_accept", (PyCFunction)loop_sock_accept, METH_O,
     PyDoc_STR("_sock_accept(sock) -> Future of (conn, address)")},
    {"_sock_connect", (PyCFunction)(void (*)(void))loop_sock_connect,
     METH_FASTCALL,
     PyDoc_STR("_sock_connect(sock, resolved_address) -> Future of None")},
    {"_sock_check", (PyCFunction)loop_sock_check, METH_O,
     PyDoc_STR("_sock_check(sock): raise what sock_*() raise for an unusable socket")},
    {NULL, NULL, 0, NULL},
};

/* ------------------------------------------------------------------ */
/* the SockWait type                                                  */

static int
sockwait_traverse(gl_sockwait *w, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(w));
    Py_VISIT(w->loop);
    Py_VISIT(w->done_cb);
    sockop *ops[2] = {&w->rd, &w->wr};
    for (int i = 0; i < 2; i++) {
        Py_VISIT(ops[i]->fut);
        Py_VISIT(ops[i]->sock);
        Py_VISIT(ops[i]->arg);
        Py_VISIT(ops[i]->arg2);
        if (ops[i]->has_view) {
            Py_VISIT(ops[i]->view.obj);
        }
    }
    return 0;
}

static int
sockwait_clear(gl_sockwait *w)
{
    op_release(&w->rd);
    op_release(&w->wr);
    Py_CLEAR(w->done_cb);
    Py_CLEAR(w->loop);
    return 0;
}

static void
sockwait_dealloc(gl_sockwait *w)
{
    PyTypeObject *tp = Py_TYPE(w);
    PyObject_GC_UnTrack(w);
    sockwait_clear(w);
    tp->tp_free(w);
    Py_DECREF(tp);
}

static PyObject *
sockwait_repr(gl_sockwait *w)
{
    return PyUnicode_FromFormat("<SockWait fd=%d%s%s>", w->fd,
                                w->rd.kind ? " read" : "",
                                w->wr.kind ? " write" : "");
}

static PyMethodDef sockwait_methods[] = {
    {"_op_done", (PyCFunction)sockwait_op_done, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot sockwait_slots[] = {
    {Py_tp_doc, (void *)PyDoc_STR("Pending sock_* operations on one fd.")},
    {Py_tp_dealloc, sockwait_dealloc},
    {Py_tp_traverse, sockwait_traverse},
    {Py_tp_clear, sockwait_clear},
    {Py_tp_repr, sockwait_repr},
    {Py_tp_methods, sockwait_methods},
    {0, NULL},
};

PyType_Spec gl_sockwait_spec = {
    .name = "glibloop._core.SockWait",
    .basicsize = sizeof(gl_sockwait),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = sockwait_slots,
};
