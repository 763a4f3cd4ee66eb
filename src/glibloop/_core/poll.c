/* The epoll set: the one fd GLib polls for this loop.  Readers and
 * writers registered with add_reader/add_writer live here, level-
 * triggered as asyncio's selectors are, in a table indexed by fd.  So do
 * the C watchers of transports (edge-triggered: registered once, so steady
 * traffic costs no epoll_ctl), servers and pending sock_* operations.  The
 * timerfd for sub-millisecond deadlines lives here too.
 *
 * Each registration carries a generation in its epoll data next to the
 * fd: an event read before the fd was unregistered (and maybe reused for
 * another socket) by a callback run in between is recognised as stale.
 *
 * A registration belongs to the open file it was made for, not to the fd
 * number: when that file is closed behind our back the kernel drops it
 * from the epoll set, and a new registration of the number (a reused fd)
 * first asks the kernel whether ours still holds (forget_if_closed).  If
 * not, the old readers, writers and watcher are forgotten, so none of them
 * blocks the new file or is ever called for it. */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
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
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = GL_TIMER_TAG};
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
    p->nheld = p->held_next = 0;   /* their registrations are gone */
    for (int fd = 0; fd < n; fd++) {
        Py_XDECREF(regs[fd].reader);
        Py_XDECREF(regs[fd].writer);
        Py_XDECREF(regs[fd].owner);
        Py_XDECREF(regs[fd].fileobj);
    }
    PyMem_Free(regs);
}

void
gl_poll_close(gl_poll *p)
{
    gl_poll_clear_handlers(p);
    PyMem_Free(p->readbuf);
    p->readbuf = NULL;
    PyMem_Free(p->held);
    p->held = NULL;
    p->nheld = p->held_cap = 0;
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
        Py_VISIT(p->regs[fd].owner);
        Py_VISIT(p->regs[fd].fileobj);
    }
    return 0;
}

static int
ensure_slot(gl_poll *p, int fd)
{
    if (fd < p->nregs) {
        return 0;
    }
    /* Check the fd exists before sizing the table by its number: asyncio
     * answers a bogus fd with EBADF, not with a huge allocation. */
    if (fcntl(fd, F_GETFD) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    int64_t n = p->nregs ? p->nregs : 64;
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

static inline uint64_t
event_data(int fd, uint32_t gen)
{
    return ((uint64_t)gen << 32) | (uint32_t)fd;
}

/* Brings the kernel's registration of fd in line with `want`.  An fd may
 * have been closed and reopened behind our back (epoll then forgot it),
 * so ENOENT on MOD retries as ADD and EEXIST on ADD retries as MOD. */
static int
sync_epoll(gl_poll *p, int fd, uint32_t want)
{
    gl_fdreg *r = &p->regs[fd];
    int rc;
    if (want == 0) {
        struct epoll_event ev = {0};
        if (r->events != 0 && epoll_ctl(p->epfd, EPOLL_CTL_DEL, fd, &ev) < 0 &&
            errno != ENOENT && errno != EBADF) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        r->events = 0;
        return 0;
    }
    uint32_t gen = r->events == 0 ? ++p->next_gen : r->gen;
    struct epoll_event ev = {.events = want, .data.u64 = event_data(fd, gen)};
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
    r->gen = gen;
    return 0;
}

static uint32_t
wanted_events(gl_fdreg *r)
{
    uint32_t want = (r->reader ? EPOLLIN : 0) | (r->writer ? EPOLLOUT : 0);
    if (r->owner != NULL) {
        uint32_t w = r->watch_events;
        if (r->reader || r->writer) {
            /* add_reader's handles are level-triggered: an edge would be
             * lost to them if the watcher consumed it. */
            w &= ~(uint32_t)EPOLLET;
        }
        want |= w;
    }
    return (want & (EPOLLIN | EPOLLOUT)) ? want : 0;
}

static inline int
reg_in_use(gl_fdreg *r)
{
    return r->reader || r->writer || r->owner;
}

/* Whether the file that fd was registered for is gone.  The kernel drops
 * a file from every epoll set when it is closed, so a MOD that finds no
 * entry for the file now open at fd (ENOENT, or EBADF when the number is
 * free) means ours outlived its file.  Only asked when a registration of
 * fd meets an older one: the MOD repeats what is registered (an edge-
 * triggered watcher may get one spurious event, which they all allow). */
static int
registered_file_gone(gl_poll *p, int fd)
{
    gl_fdreg *r = &p->regs[fd];
    if (r->events == 0) {
        return 0;  /* nothing in the kernel to ask about */
    }
    struct epoll_event ev = {.events = r->events, .data.u64 = event_data(fd, r->gen)};
    if (epoll_ctl(p->epfd, EPOLL_CTL_MOD, fd, &ev) == 0) {
        return 0;
    }
    return errno == ENOENT || errno == EBADF;
}

int
gl_poll_forget_if_closed(gl_poll *p, int fd)
{
    if (fd < 0 || fd >= p->nregs || !registered_file_gone(p, fd)) {
        return 0;
    }
    /* Detach everything before dropping a reference: a finalizer may
     * register fd again (or grow the table) from inside the DECREFs.  The
     * new registration gets a new generation, so events of the old file
     * still held back (or from a dup of it that is still open) are stale. */
    gl_fdreg old = p->regs[fd];
    memset(&p->regs[fd], 0, sizeof(old));
    if (reg_in_use(&old)) {
        p->active--;
    }
    if (old.reader != NULL) {
        gl_handle_cancel_internal(old.reader);
        Py_DECREF(old.reader);
    }
    if (old.writer != NULL) {
        gl_handle_cancel_internal(old.writer);
        Py_DECREF(old.writer);
    }
    Py_XDECREF(old.owner);
    Py_XDECREF(old.fileobj);
    return 1;
}

/* ensure_slot() and forget_if_closed() for a new registration of fd. */
static int
prepare_slot(gl_poll *p, int fd)
{
    if (ensure_slot(p, fd) < 0) {
        return -1;
    }
    /* Forgetting may run finalizers that reset the table (a loop cleared
     * by the GC): size it again. */
    if (gl_poll_forget_if_closed(p, fd) && ensure_slot(p, fd) < 0) {
        return -1;
    }
    return 0;
}

int
gl_poll_set(gl_poll *p, int fd, int is_writer, gl_handle *h, PyObject *fileobj)
{
    if (prepare_slot(p, fd) < 0) {
        return -1;
    }
    gl_fdreg *r = &p->regs[fd];
    gl_handle **slot = is_writer ? &r->writer : &r->reader;
    int was_active = reg_in_use(r);
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
    if (r->fileobj == NULL) {
        /* as a selector key: the object of the first registration stays */
        r->fileobj = Py_NewRef(fileobj);
    }
    if (old != NULL) {
        gl_handle_cancel_internal(old);
        Py_DECREF(old);
    }
    return 0;
}

int
gl_poll_find_fileobj(gl_poll *p, PyObject *fileobj)
{
    for (int fd = 0; fd < p->nregs; fd++) {
        if (p->regs[fd].fileobj == fileobj) {
            return fd;
        }
    }
    return -1;
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
    if (!reg_in_use(r)) {
        p->active--;
    }
    PyObject *fileobj = NULL;
    if (r->reader == NULL && r->writer == NULL) {
        fileobj = r->fileobj;
        r->fileobj = NULL;
    }
    gl_handle_cancel_internal(old);
    Py_DECREF(old);
    Py_XDECREF(fileobj);
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

int
gl_poll_watch(gl_poll *p, int fd, PyObject *owner, gl_watch_fn fn,
              uint32_t events, int kind)
{
    if (p->epfd < 0) {
        PyErr_SetString(PyExc_RuntimeError, "Event loop is closed");
        return -1;
    }
    if (prepare_slot(p, fd) < 0) {
        return -1;
    }
    int unheld = (kind & GL_WATCH_UNHELD) != 0;
    kind &= ~GL_WATCH_UNHELD;
    gl_fdreg *r = &p->regs[fd];
    if (r->owner != NULL && r->watch_kind == GL_WATCH_SHARED &&
        (kind == GL_WATCH_OWNED || r->idle)) {
        /* An idle sock_* waiter is only a cache, and a transport takes the
         * fd from pending sock_* operations as asyncio's add_reader
         * replaces a reader. */
        gl_poll_unwatch(p, fd, r->owner);
        if (ensure_slot(p, fd) < 0) {
            return -1;
        }
        r = &p->regs[fd];
    }
    if (r->owner != NULL) {
        PyErr_Format(PyExc_RuntimeError,
                     "File descriptor %d is already watched by %R", fd,
                     r->owner);
        return -1;
    }
    int was_active = reg_in_use(r);
    r->owner = owner;
    r->watch_fn = fn;
    r->watch_events = events;
    r->watch_kind = kind;
    r->unheld = unheld;
    r->idle = 0;
    if (sync_epoll(p, fd, wanted_events(r)) < 0) {
        r->owner = NULL;
        return -1;
    }
    Py_INCREF(owner);
    if (!was_active) {
        p->active++;
    }
    return 0;
}

int
gl_poll_watch_events(gl_poll *p, int fd, PyObject *owner, uint32_t events)
{
    if (fd < 0 || fd >= p->nregs || p->regs[fd].owner != owner) {
        PyErr_SetString(PyExc_RuntimeError, "fd is not watched by this object");
        return -1;
    }
    gl_fdreg *r = &p->regs[fd];
    uint32_t old = r->watch_events;
    r->watch_events = events;
    if (sync_epoll(p, fd, wanted_events(r)) < 0) {
        r->watch_events = old;
        return -1;
    }
    return 0;
}

void
gl_poll_unwatch(gl_poll *p, int fd, PyObject *owner)
{
    if (fd < 0 || fd >= p->nregs || p->regs[fd].owner != owner) {
        return;
    }
    gl_fdreg *r = &p->regs[fd];
    r->owner = NULL;
    r->watch_fn = NULL;
    r->watch_events = 0;
    r->watch_kind = 0;
    r->unheld = 0;
    r->idle = 0;
    if (sync_epoll(p, fd, wanted_events(r)) < 0) {
        /* As gl_poll_remove: an fd that is gone is forgotten anyway. */
        PyErr_Clear();
        r->events = wanted_events(r);
    }
    if (!reg_in_use(r)) {
        p->active--;
    }
    Py_DECREF(owner);
}

void
gl_poll_watch_idle(gl_poll *p, int fd, PyObject *owner, int idle)
{
    if (fd >= 0 && fd < p->nregs && p->regs[fd].owner == owner) {
        p->regs[fd].idle = idle;
    }
}

PyObject *
gl_poll_watcher(gl_poll *p, int fd, int *kind)
{
    if (fd < 0 || fd >= p->nregs || p->regs[fd].owner == NULL) {
        return NULL;
    }
    if (kind != NULL) {
        *kind = p->regs[fd].watch_kind;
    }
    return p->regs[fd].owner;
}

int
gl_poll_check_not_owned(gl_poll *p, int fd, PyObject *fileobj)
{
    int kind;
    PyObject *owner = gl_poll_watcher(p, fd, &kind);
    if (owner == NULL || kind != GL_WATCH_OWNED) {
        return 0;
    }
    Py_INCREF(owner);
    PyObject *closing = PyObject_CallMethod(owner, "is_closing", NULL);
    int is_closing = closing ? PyObject_IsTrue(closing) : -1;
    Py_XDECREF(closing);
    if (is_closing == 0) {
        PyErr_Format(PyExc_RuntimeError,
                     "File descriptor %R is used by transport %R", fileobj,
                     owner);
    }
    Py_DECREF(owner);
    return is_closing > 0 ? 0 : -1;
}

char *
gl_poll_readbuf(gl_poll *p)
{
    if (p->readbuf == NULL) {
        p->readbuf = PyMem_Malloc(GL_READBUF_SIZE);
        if (p->readbuf == NULL) {
            PyErr_NoMemory();
        }
    }
    return p->readbuf;
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

/* Runs the C watcher of fd for one event.  The owner is kept alive for
 * the call: the callback may close the transport, the loop, or run a
 * nested main loop that dispatches this loop again. */
static int
run_watcher(gl_loop *loop, gl_fdreg *r, uint32_t ev)
{
    PyObject *owner = Py_NewRef(r->owner);
    gl_watch_fn fn = r->watch_fn;
    int rc = fn(loop, owner, ev);
    Py_DECREF(owner);
    return rc;
}

/* Keeps a C watcher's event for later (see gl_poll_dispatch). */
static int
hold_event(gl_poll *p, struct epoll_event *e)
{
    if (p->nheld == p->held_cap) {
        int cap = p->held_cap ? p->held_cap * 2 : GL_EPOLL_BATCH;
        struct epoll_event *grown = PyMem_Realloc(p->held, (size_t)cap * sizeof(*grown));
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        p->held = grown;
        p->held_cap = cap;
    }
    p->held[p->nheld++] = *e;
    return 0;
}

/* The registration an event names, or NULL if it went away since. */
static gl_fdreg *
live_watcher(gl_poll *p, uint64_t data)
{
    int fd = (int)(uint32_t)data;
    uint32_t gen = (uint32_t)(data >> 32);
    if (fd < 0 || fd >= p->nregs || p->regs[fd].gen != gen ||
        p->regs[fd].events == 0 || p->regs[fd].owner == NULL) {
        return NULL;
    }
    return &p->regs[fd];
}

/* Runs the held-back watcher events, in the order they were read; events
 * held back by a nested dispatch while these run are run here too.  On an
 * error (SystemExit, KeyboardInterrupt) the rest stay for the next round. */
int
gl_poll_run_held(gl_loop *loop)
{
    gl_poll *p = &loop->poll;
    int rc = 0;
    /* held_next, not a local index: a watcher may run a nested main loop
     * whose dispatch comes here again and must not run an event twice. */
    while (p->held_next < p->nheld) {
        struct epoll_event e = p->held[p->held_next++];
        gl_fdreg *r = live_watcher(p, e.data.u64);
        if (r != NULL && run_watcher(loop, r, e.events) < 0) {
            rc = -1;
            break;
        }
        if (loop->closed || p->regs == NULL) {
            break;
        }
    }
    if (rc == 0) {
        p->nheld = p->held_next = 0;
    }
    return rc;
}

/* Reads what is ready (timeout 0), runs C watchers and queues the readers
 * and writers.  The scheduler says whether C watchers' events must be held
 * back for asyncio's order (gl_sched_hold_watchers); held, they are kept
 * here and replayed by gl_poll_run_held when run_round says.  Child
 * pidfds (GL_WATCH_UNHELD) always run at once.  Registrations are looked up when
 * each event is delivered and again after every watcher callback, never
 * kept from before: a callback run in between may have removed, replaced
 * or re-added them (and grown the table). */
int
gl_poll_dispatch(gl_loop *loop)
{
    struct epoll_event events[GL_EPOLL_BATCH];
    int n = epoll_wait(loop->poll.epfd, events, GL_EPOLL_BATCH, 0);
    if (n < 0) {
        return errno == EINTR ? 0 : (PyErr_SetFromErrno(PyExc_OSError), -1);
    }
    gl_poll *p = &loop->poll;
    int signalled = 0;
    int hold = gl_sched_hold_watchers(loop);
    p->watchers_ran = 0;
    for (int i = 0; i < n; i++) {
        int fd = (int)(uint32_t)events[i].data.u64;
        uint32_t gen = (uint32_t)(events[i].data.u64 >> 32);
        uint32_t ev = events[i].events;
        if (fd == GL_SIGNAL_TAG) {
            /* Python's handlers run after the other events: a Ctrl-C must
             * not drop the rest of this batch (edge-triggered transports
             * would never hear of their data again). */
            signalled = 1;
            continue;
        }
        if (fd < 0) {
            gl_poll_drain_timer(p);
            continue;
        }
        if (fd >= p->nregs || p->regs[fd].gen != gen ||
            p->regs[fd].events == 0) {
            continue;  /* unregistered since epoll_wait: stale */
        }
        if (p->regs[fd].owner != NULL && hold && !p->regs[fd].unheld) {
            p->watchers_ran = 1;
            if (hold_event(p, &events[i]) < 0) {
                return -1;
            }
        }
        else if (p->regs[fd].owner != NULL) {
            p->watchers_ran = 1;
            if (run_watcher(loop, &p->regs[fd], ev) < 0) {
                return -1;
            }
            if (loop->closed || p->regs == NULL) {
                return 0;
            }
            if (fd >= p->nregs || p->regs[fd].gen != gen ||
                p->regs[fd].events == 0) {
                continue;
            }
        }
        /* As asyncio's selectors: an error or hang-up wakes both sides. */
        gl_handle *reader = gl_poll_get(p, fd, 0);
        if (reader && (ev & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP)) &&
            gl_sched_push(loop, reader) < 0) {
            return -1;
        }
        gl_handle *writer = gl_poll_get(p, fd, 1);
        if (writer && (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR)) &&
            gl_sched_push(loop, writer) < 0) {
            return -1;
        }
    }
    if (signalled && gl_signals_on_wakeup(loop) < 0) {
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* readers and writers                                                */

/* selectors' _fileobj_to_fd: the fd of an int or of obj.fileno(), or
 * -1 with an exception set.  Two numbers that are no fd are told apart, as
 * asyncio treats them apart: GL_FD_HUGE, an int too large for an fd (no
 * exception set: asyncio finds no registration for it, and epoll refuses
 * to register it), and GL_FD_NEGATIVE (ValueError set: a closed socket's
 * fileno(), which asyncio looks up by the object). */
#define GL_FD_HUGE (-2)
#define GL_FD_NEGATIVE (-3)

static int
fileobj_to_fd(PyObject *obj)
{
    PyObject *num;
    if (PyLong_Check(obj)) {
        num = Py_NewRef(obj);
    }
    else {
        num = PyObject_CallMethod(obj, "fileno", NULL);
        if (num == NULL || !PyLong_Check(num)) {
            if (num == NULL && !PyErr_ExceptionMatches(PyExc_AttributeError) &&
                !PyErr_ExceptionMatches(PyExc_TypeError) &&
                !PyErr_ExceptionMatches(PyExc_ValueError)) {
                return -1;
            }
            Py_XDECREF(num);
            PyErr_Clear();
            PyErr_Format(PyExc_ValueError, "Invalid file object: %R", obj);
            return -1;
        }
    }
    int overflow;
    long fd = PyLong_AsLongAndOverflow(num, &overflow);
    if (overflow > 0 || fd > INT32_MAX) {
        Py_DECREF(num);
        return GL_FD_HUGE;
    }
    if (overflow < 0 || fd < 0) {
        PyErr_Format(PyExc_ValueError, "Invalid file descriptor: %S", num);
        Py_DECREF(num);
        return GL_FD_NEGATIVE;
    }
    Py_DECREF(num);
    return (int)fd;
}

static PyObject *
add_fd_handler(gl_loop *loop, PyObject *const *args, Py_ssize_t nargs,
               int is_writer)
{
    const char *method = is_writer ? "add_writer" : "add_reader";
    if (gl_loop_need_args(nargs, 2, method, "'fd' and 'callback'") < 0) {
        return NULL;
    }
    int fd = fileobj_to_fd(args[0]);
    if (fd == GL_FD_HUGE) {
        /* as epoll.register() answers it */
        PyErr_SetString(PyExc_OverflowError, "Python int too large to convert to C int");
        return NULL;
    }
    if (fd < 0 || gl_loop_check_not_closed(loop) < 0 ||
        gl_poll_check_not_owned(&loop->poll, fd, args[0]) < 0 ||
        gl_loop_check_callback(args[1], method) < 0) {
        return NULL;
    }
    PyObject *cbargs = gl_loop_args_tuple(args + 2, nargs - 2);
    if (cbargs == NULL) {
        return NULL;
    }
    gl_handle *h = gl_handle_new(loop->st, (PyObject *)loop, args[1], cbargs,
                                 NULL);
    Py_DECREF(cbargs);
    if (h == NULL) {
        return NULL;
    }
    /* Readers and writers stay registered for long: let the GC see them. */
    PyObject_GC_Track(h);
    int rc = gl_poll_set(&loop->poll, fd, is_writer, h, args[0]);
    Py_DECREF(h);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
loop_add_reader(gl_loop *loop, PyObject *const *args, Py_ssize_t nargs)
{
    return add_fd_handler(loop, args, nargs, 0);
}

static PyObject *
loop_add_writer(gl_loop *loop, PyObject *const *args, Py_ssize_t nargs)
{
    return add_fd_handler(loop, args, nargs, 1);
}

static PyObject *
remove_fd_handler(gl_loop *loop, PyObject *fileobj, int is_writer)
{
    int fd = fileobj_to_fd(fileobj);
    if (fd == -1) {
        return NULL;
    }
    if (fd == GL_FD_NEGATIVE) {
        if (loop->closed) {
            PyErr_Clear();
            Py_RETURN_FALSE;
        }
        /* A closed socket (fileno() is -1) is found by the object it was
         * registered with, as selectors find it. */
        int found = PyLong_Check(fileobj) ? -1 : gl_poll_find_fileobj(&loop->poll, fileobj);
        if (found < 0) {
            return NULL;
        }
        PyErr_Clear();
        return PyBool_FromLong(gl_poll_remove(&loop->poll, found, is_writer));
    }
    if (fd == GL_FD_HUGE || loop->closed) {
        Py_RETURN_FALSE;
    }
    if (gl_poll_check_not_owned(&loop->poll, fd, fileobj) < 0) {
        return NULL;
    }
    int rc = gl_poll_remove(&loop->poll, fd, is_writer);
    if (rc < 0) {
        return NULL;
    }
    return PyBool_FromLong(rc);
}

static PyObject *
loop_remove_reader(gl_loop *loop, PyObject *fileobj)
{
    return remove_fd_handler(loop, fileobj, 0);
}

static PyObject *
loop_remove_writer(gl_loop *loop, PyObject *fileobj)
{
    return remove_fd_handler(loop, fileobj, 1);
}

PyMethodDef gl_poll_methods[] = {
    {"add_reader", (PyCFunction)(void (*)(void))loop_add_reader, METH_FASTCALL,
     PyDoc_STR("add_reader(fd, callback, *args)\n--\n\n"
               "Watch fd for reading.")},
    {"add_writer", (PyCFunction)(void (*)(void))loop_add_writer, METH_FASTCALL,
     PyDoc_STR("add_writer(fd, callback, *args)\n--\n\n"
               "Watch fd for writing.")},
    {"remove_reader", (PyCFunction)loop_remove_reader, METH_O,
     PyDoc_STR("Stop watching fd for reading; return True if it was watched.")},
    {"remove_writer", (PyCFunction)loop_remove_writer, METH_O,
     PyDoc_STR("Stop watching fd for writing; return True if it was watched.")},
    {NULL, NULL, 0, NULL},
};
