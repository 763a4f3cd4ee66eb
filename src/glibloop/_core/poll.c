/* The epoll set: the one fd GLib polls for this loop.  Readers and
 * writers registered with add_reader/add_writer live here, level-
 * triggered as asyncio's selectors are, in a table indexed by fd.  The
 * timerfd for sub-millisecond deadlines lives here too. */
#include "internal.h"

#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

#define GL_EPOLL_BATCH 256

int
gl_poll_init(gl_poll *p)
{
    memset(p, 0, sizeof(*p));
    p->epfd = -1;
    p->timerfd = -1;
    p->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (p->epfd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    p->timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (p->timerfd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto error;
    }
    /* data.fd = -1 marks the timerfd: it never collides with a user fd. */
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = -1};
    if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->timerfd, &ev) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto error;
    }
    return 0;
error:
    gl_poll_close(p);
    return -1;
}

void
gl_poll_clear_handlers(gl_poll *p)
{
    gl_fdreg *regs = p->regs;
    int n = p->nregs;
    p->regs = NULL;
    p->nregs = 0;
    p->active = 0;
    for (int fd = 0; fd < n; fd++) {
        Py_XDECREF(regs[fd].reader);
        Py_XDECREF(regs[fd].writer);
    }
    PyMem_Free(regs);
}

void
gl_poll_close(gl_poll *p)
{
    gl_poll_clear_handlers(p);
    if (p->timerfd >= 0) {
        close(p->timerfd);
        p->timerfd = -1;
    }
    if (p->epfd >= 0) {
        close(p->epfd);
        p->epfd = -1;
    }
}

int
gl_poll_traverse(gl_poll *p, visitproc visit, void *arg)
{
    for (int fd = 0; fd < p->nregs; fd++) {
        Py_VISIT(p->regs[fd].reader);
        Py_VISIT(p->regs[fd].writer);
    }
    return 0;
}

static int
ensure_slot(gl_poll *p, int fd)
{
    if (fd < p->nregs) {
        return 0;
    }
    int n = p->nregs ? p->nregs : 64;
    while (n <= fd) {
        n *= 2;
    }
    gl_fdreg *regs = PyMem_Realloc(p->regs, (size_t)n * sizeof(*regs));
    if (regs == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memset(regs + p->nregs, 0, (size_t)(n - p->nregs) * sizeof(*regs));
    p->regs = regs;
    p->nregs = n;
    return 0;
}

/* Brings the kernel's registration of fd in line with `want`.  An fd may
 * have been closed and reopened behind our back (epoll then forgot it),
 * so ENOENT on MOD retries as ADD and EEXIST on ADD retries as MOD. */
static int
sync_epoll(gl_poll *p, int fd, uint32_t want)
{
    gl_fdreg *r = &p->regs[fd];
    struct epoll_event ev = {.events = want, .data.fd = fd};
    int rc;
    if (want == 0) {
        if (r->events != 0 && epoll_ctl(p->epfd, EPOLL_CTL_DEL, fd, &ev) < 0 &&
            errno != ENOENT && errno != EBADF) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        r->events = 0;
        return 0;
    }
    if (r->events == 0) {
        rc = epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &ev);
        if (rc < 0 && errno == EEXIST) {
            rc = epoll_ctl(p->epfd, EPOLL_CTL_MOD, fd, &ev);
        }
    }
    else {
        rc = epoll_ctl(p->epfd, EPOLL_CTL_MOD, fd, &ev);
        if (rc < 0 && errno == ENOENT) {
            rc = epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &ev);
        }
    }
    if (rc < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    r->events = want;
    return 0;
}

static uint32_t
wanted_events(gl_fdreg *r)
{
    return (r->reader ? EPOLLIN : 0) | (r->writer ? EPOLLOUT : 0);
}

int
gl_poll_set(gl_poll *p, int fd, int is_writer, gl_handle *h)
{
    if (ensure_slot(p, fd) < 0) {
        return -1;
    }
    gl_fdreg *r = &p->regs[fd];
    gl_handle **slot = is_writer ? &r->writer : &r->reader;
    int was_active = r->reader || r->writer;
    gl_handle *old = *slot;
    *slot = h;
    if (sync_epoll(p, fd, wanted_events(r)) < 0) {
        *slot = old;
        return -1;
    }
    Py_INCREF(h);
    if (!was_active) {
        p->active++;
    }
    if (old != NULL) {
        gl_handle_cancel_internal(old);
        Py_DECREF(old);
    }
    return 0;
}

int
gl_poll_remove(gl_poll *p, int fd, int is_writer)
{
    if (fd >= p->nregs) {
        return 0;
    }
    gl_fdreg *r = &p->regs[fd];
    gl_handle **slot = is_writer ? &r->writer : &r->reader;
    gl_handle *old = *slot;
    if (old == NULL) {
        return 0;
    }
    *slot = NULL;
    if (sync_epoll(p, fd, wanted_events(r)) < 0) {
        /* The fd is gone or unusable: forget it anyway, as asyncio does
         * when the selector cannot unregister a closed fd. */
        PyErr_Clear();
        r->events = wanted_events(r);
    }
    if (!r->reader && !r->writer) {
        p->active--;
    }
    gl_handle_cancel_internal(old);
    Py_DECREF(old);
    return 1;
}

gl_handle *
gl_poll_get(gl_poll *p, int fd, int is_writer)
{
    if (fd < 0 || fd >= p->nregs) {
        return NULL;
    }
    return is_writer ? p->regs[fd].writer : p->regs[fd].reader;
}

void
gl_poll_arm_timer(gl_poll *p, int64_t deadline_ns)
{
    if (p->timerfd < 0 || p->timerfd_armed_ns == deadline_ns) {
        return;
    }
    struct itimerspec its = {
        .it_interval = {0, 0},
        .it_value = {.tv_sec = deadline_ns / GL_NS_PER_SEC,
                     .tv_nsec = deadline_ns % GL_NS_PER_SEC},
    };
    if (timerfd_settime(p->timerfd, TFD_TIMER_ABSTIME, &its, NULL) == 0) {
        p->timerfd_armed_ns = deadline_ns;
    }
}

void
gl_poll_drain_timer(gl_poll *p)
{
    /* Only once the deadline has passed: then the timerfd has fired and the
     * read clears it, so the epoll fd stops being readable for it. */
    if (p->timerfd_armed_ns == 0 || gl_monotonic_ns() < p->timerfd_armed_ns) {
        return;
    }
    uint64_t expirations;
    ssize_t n = read(p->timerfd, &expirations, sizeof(expirations));
    (void)n;
    p->timerfd_armed_ns = 0;
}

/* Reads what is ready (timeout 0) and queues the readers and writers.
 * Handlers are looked up when each event is delivered, never kept from
 * before: a callback run in between may have removed or replaced them. */
int
gl_poll_dispatch(gl_loop *loop)
{
    struct epoll_event events[GL_EPOLL_BATCH];
    int n = epoll_wait(loop->poll.epfd, events, GL_EPOLL_BATCH, 0);
    if (n < 0) {
        return errno == EINTR ? 0 : (PyErr_SetFromErrno(PyExc_OSError), -1);
    }
    for (int i = 0; i < n; i++) {
        int fd = events[i].data.fd;
        uint32_t ev = events[i].events;
        if (fd < 0) {
            gl_poll_drain_timer(&loop->poll);
            continue;
        }
        /* As asyncio's selectors: an error or hang-up wakes both sides. */
        gl_handle *reader = gl_poll_get(&loop->poll, fd, 0);
        if (reader && (ev & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP)) &&
            gl_loop_push_ready(loop, reader) < 0) {
            return -1;
        }
        gl_handle *writer = gl_poll_get(&loop->poll, fd, 1);
        if (writer && (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR)) &&
            gl_loop_push_ready(loop, writer) < 0) {
            return -1;
        }
    }
    return 0;
}

