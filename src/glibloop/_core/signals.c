/* Signals.
 *
 * Wake-up: a socketpair whose write end is Python's signal wakeup fd
 * (signal.set_wakeup_fd) while the loop runs on the main thread or has
 * signal handlers, and whose read end sits in the loop's epoll set.  A
 * signal that arrives while GLib sleeps in poll() then wakes the loop,
 * which runs the Python-level handlers at once (Ctrl-C raises
 * KeyboardInterrupt, asyncio.Runner's handler cancels the main task)
 * instead of at the next unrelated event.
 *
 * add_signal_handler(): the Python-level handler of the signal is
 * _core._signal_handler, which queues the loop's Handle for that signal.
 * asyncio instead reads the signal numbers Python writes to the wakeup fd,
 * but that fd is not always ours: PyGObject points it at a socket of its
 * own while GLib.MainLoop.run() or Application.run() runs without an
 * asyncio loop.  Python runs the Python-level handler in every case, on
 * the main thread at the next bytecode boundary, or from our epoll
 * dispatch (PyErr_CheckSignals) when the wakeup fd is ours, so the handle
 * is queued whoever drives GLib.  Any signal Python can catch works, not
 * only the six GLib's g_unix_signal_add() knows. */
#include "internal.h"

#include <errno.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* the handler table                                                  */

static void
drop_handlers(gl_loop *loop, int free_table)
{
    gl_handle **table = loop->sig_handlers;
    if (table == NULL) {
        return;
    }
    gl_state *st = loop->st;
    for (int sig = 1; sig < GL_NSIG; sig++) {
        if (st != NULL && st->sig_owner[sig] == loop) {
            st->sig_owner[sig] = NULL;
        }
    }
    if (free_table) {
        loop->sig_handlers = NULL;
    }
    for (int sig = 1; sig < GL_NSIG; sig++) {
        /* Detach before the DECREF: a finalizer may call back in. */
        gl_handle *h = table[sig];
        table[sig] = NULL;
        Py_XDECREF(h);
    }
    if (free_table) {
        PyMem_Free(table);
    }
}

int
gl_signals_traverse(gl_loop *loop, visitproc visit, void *arg)
{
    if (loop->sig_handlers != NULL) {
        for (int sig = 1; sig < GL_NSIG; sig++) {
            Py_VISIT(loop->sig_handlers[sig]);
        }
    }
    return 0;
}

void
gl_signals_clear(gl_loop *loop)
{
    drop_handlers(loop, 0);
}

void
gl_signals_close(gl_loop *loop)
{
    drop_handlers(loop, 1);
    if (loop->sig_rfd >= 0) {
        if (loop->poll.epfd >= 0) {
            epoll_ctl(loop->poll.epfd, EPOLL_CTL_DEL, loop->sig_rfd, NULL);
        }
        close(loop->sig_rfd);
        loop->sig_rfd = -1;
    }
    if (loop->sig_wfd >= 0) {
        close(loop->sig_wfd);
        loop->sig_wfd = -1;
    }
}

static int
signals_open(gl_loop *loop)
{
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = GL_SIGNAL_TAG};
    if (epoll_ctl(loop->poll.epfd, EPOLL_CTL_ADD, fds[0], &ev) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    loop->sig_rfd = fds[0];
    loop->sig_wfd = fds[1];
    return 0;
}

int
gl_signals_on_wakeup(gl_loop *loop)
{
    char buf[256];
    ssize_t n;
    do {
        n = read(loop->sig_rfd, buf, sizeof(buf));
    } while (n > 0 || (n < 0 && errno == EINTR));
    /* Python's C-level handler only flags the signal; its Python handler
     * runs here, on the main thread, where this loop runs. */
    return PyErr_CheckSignals();
}

static PyObject *
loop_signal_wakeup_fd(gl_loop *loop, PyObject *Py_UNUSED(ignored))
{
    if (gl_loop_check_not_closed(loop) < 0) {
        return NULL;
    }
    if (loop->sig_wfd < 0 && signals_open(loop) < 0) {
        return NULL;
    }
    return PyLong_FromLong(loop->sig_wfd);
}

static int
signal_number(PyObject *obj, int *sig)
{
    int overflow;
    long v = PyLong_AsLongAndOverflow(obj, &overflow);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow || v <= 0 || v >= GL_NSIG) {
        PyErr_Format(PyExc_ValueError, "invalid signal number %R", obj);
        return -1;
    }
    *sig = (int)v;
    return 0;
}

/* _signal_install(sig, callback, args): the handle add_signal_handler()
 * keeps for sig.  The Python glue has checked the arguments and installs
 * the Python-level handler; this only fills the table. */
static PyObject *
loop_signal_install(gl_loop *loop, PyObject *const *args, Py_ssize_t nargs)
{
    int sig;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError,
                        "_signal_install(sig, callback, args) takes 3 arguments");
        return NULL;
    }
    if (signal_number(args[0], &sig) < 0 || gl_loop_check_not_closed(loop) < 0) {
        return NULL;
    }
    if (!PyTuple_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "args must be a tuple");
        return NULL;
    }
    if (loop->sig_handlers == NULL) {
        loop->sig_handlers = PyMem_Calloc(GL_NSIG, sizeof(gl_handle *));
        if (loop->sig_handlers == NULL) {
            return PyErr_NoMemory();
        }
    }
    gl_handle *h = gl_handle_new(loop->st, (PyObject *)loop, args[1], args[2],
                                 NULL);
    if (h == NULL) {
        return NULL;
    }
    /* Kept for as long as the handler is registered: let the GC see it. */
    PyObject_GC_Track(h);
    gl_handle *old = loop->sig_handlers[sig];
    loop->sig_handlers[sig] = (gl_handle *)Py_NewRef(h);
    loop->st->sig_owner[sig] = loop;
    Py_XDECREF(old);
    return (PyObject *)h;
}

/* _signal_uninstall(sig): True if the loop had a handle for sig. */
static PyObject *
loop_signal_uninstall(gl_loop *loop, PyObject *arg)
{
    int sig;
    if (signal_number(arg, &sig) < 0) {
        return NULL;
    }
    if (loop->sig_handlers == NULL || loop->sig_handlers[sig] == NULL) {
        Py_RETURN_FALSE;
    }
    gl_handle *old = loop->sig_handlers[sig];
    loop->sig_handlers[sig] = NULL;
    if (loop->st->sig_owner[sig] == loop) {
        loop->st->sig_owner[sig] = NULL;
    }
    Py_DECREF(old);
    Py_RETURN_TRUE;
}

/* {signal number: Handle} of the registered handlers, a new dict. */
static PyObject *
loop_signal_table(gl_loop *loop, PyObject *Py_UNUSED(ignored))
{
    PyObject *d = PyDict_New();
    if (d == NULL || loop->sig_handlers == NULL) {
        return d;
    }
    for (int sig = 1; sig < GL_NSIG; sig++) {
        gl_handle *h = loop->sig_handlers[sig];
        if (h == NULL) {
            continue;
        }
        PyObject *key = PyLong_FromLong(sig);
        if (key == NULL || PyDict_SetItem(d, key, (PyObject *)h) < 0) {
            Py_XDECREF(key);
            Py_DECREF(d);
            return NULL;
        }
        Py_DECREF(key);
    }
    return d;
}

/* The Python-level handler of every signal with an add_signal_handler()
 * handle.  It runs wherever Python runs signal handlers, so it must not
 * raise: an exception here would surface in whatever code was running
 * (our epoll dispatch would stop the loop with it). */
PyObject *
gl_signals_py_handler(PyObject *module, PyObject *const *args,
                      Py_ssize_t nargs)
{
    if (nargs < 1 || !PyLong_Check(args[0])) {
        Py_RETURN_NONE;
    }
    int overflow;
    long sig = PyLong_AsLongAndOverflow(args[0], &overflow);
    if (sig <= 0 || sig >= GL_NSIG) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    gl_state *st = PyModule_GetState(module);
    gl_loop *loop = st ? st->sig_owner[sig] : NULL;
    if (loop == NULL || loop->closed || loop->sig_handlers == NULL ||
        loop->sig_handlers[sig] == NULL) {
        Py_RETURN_NONE;  /* removed since: a race, as asyncio says */
    }
    gl_handle *h = loop->sig_handlers[sig];
    Py_INCREF(loop);
    if (h->cancelled) {
        /* As asyncio: a cancelled handle is removed properly, restoring
         * the default disposition, the next time its signal arrives. */
        PyObject *r = PyObject_CallMethod((PyObject *)loop,
                                          "remove_signal_handler", "l", sig);
        if (r == NULL) {
            PyErr_WriteUnraisable((PyObject *)loop);
        }
        Py_XDECREF(r);
    }
    else if (gl_sched_push(loop, h) < 0) {
        PyErr_WriteUnraisable((PyObject *)loop);
    }
    else if (loop->dispatch_depth == 0) {
        /* Not inside our dispatch (the handler ran in other Python code, or
         * the loop runs elsewhere): make GLib look at the ready queue. */
        gl_source_wakeup(loop);
    }
    Py_DECREF(loop);
    Py_RETURN_NONE;
}

PyMethodDef gl_signals_methods[] = {
    {"_signal_wakeup_fd", (PyCFunction)loop_signal_wakeup_fd, METH_NOARGS,
     PyDoc_STR("The fd to give signal.set_wakeup_fd() while the loop runs\n"
               "or has signal handlers.")},
    {"_signal_install", (PyCFunction)(void (*)(void))loop_signal_install,
     METH_FASTCALL,
     PyDoc_STR("_signal_install(sig, callback, args)\n--\n\n"
               "Make and keep the Handle add_signal_handler() runs for sig.")},
    {"_signal_uninstall", (PyCFunction)loop_signal_uninstall, METH_O,
     PyDoc_STR("Drop the Handle of sig; return True if there was one.")},
    {"_signal_table", (PyCFunction)loop_signal_table, METH_NOARGS,
     PyDoc_STR("A dict {signal number: Handle} of the registered handlers.")},
    {NULL, NULL, 0, NULL},
};
