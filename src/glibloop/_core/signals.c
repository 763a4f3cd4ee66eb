/* Signal wake-up: a socketpair whose write end is Python's signal wakeup
 * fd (signal.set_wakeup_fd) while the loop runs on the main thread, and
 * whose read end sits in the loop's epoll set.  A signal that arrives while
 * GLib sleeps in poll() then wakes the loop, which runs the Python-level
 * handlers at once (Ctrl-C raises KeyboardInterrupt, asyncio.Runner's
 * handler cancels the main task) instead of at the next unrelated event. */
#include "internal.h"

#include <errno.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

void
gl_signals_close(gl_loop *loop)
{
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

PyMethodDef gl_signals_methods[] = {
    {"_signal_wakeup_fd", (PyCFunction)loop_signal_wakeup_fd, METH_NOARGS,
     PyDoc_STR("The fd to give signal.set_wakeup_fd() while the loop runs.")},
    {NULL, NULL, 0, NULL},
};
