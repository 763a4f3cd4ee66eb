/* Shared declarations of the glibloop core.
 *
 * One concern per file, and its prefix on everything the file exports:
 *   module.c     gl_module_   the module; its state, every heap type (made
 *                             from the specs the files export)
 *   loop.c       gl_loop_     the Loop type and its Python-facing core;
 *                             futures and call_soon for the C files; the
 *                             one exception reporter
 *   sched.c      gl_sched_    the scheduler: the ready queue, rounds,
 *                             batches, GLib's turns, asyncio's order
 *   source.c     gl_source_   the GSource; running on GLib
 *   tasks.c      gl_tasks_    create_future, create_task
 *   handle.c     gl_handle_, gl_timer_   Handle, TimerHandle
 *   timers.c     gl_timers_   the timer heap
 *   poll.c       gl_poll_     the epoll set, readers and writers, the
 *                             read buffer
 *   signals.c    gl_signals_  signal handlers and the wake-up fd
 *   sock.c       gl_sock_     a socket's fd, socket addresses
 *   sockops.c    gl_sockops_, gl_sockwait_   the sock_* operations
 *   transport.c  gl_transport_   what the C transports share
 *   wq.c         gl_wq_       the write queue, write()'s course
 *   stream.c     gl_stream_   the stream transport
 *   server.c     gl_server_, gl_listener_   listening sockets
 *   udp.c        gl_udp_      the datagram transport
 *   pipe.c       gl_pipe_     the pipe transports
 *   process.c    gl_process_  child watches, the orphan reaper
 * A file owns the structures its section below declares; the module
 * state belongs to module.c alone (made, traversed and cleared there).
 * Functions that can fail return 0 on success and -1 with a Python
 * exception set, unless they say otherwise.
 */
#ifndef GLIBLOOP_INTERNAL_H
#define GLIBLOOP_INTERNAL_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <glib.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#if PY_VERSION_HEX < 0x030B0000
#error "glibloop needs CPython 3.11 or later"
#endif

#define GL_NS_PER_SEC INT64_C(1000000000)
#define GL_NS_PER_MS INT64_C(1000000)
#define GL_NO_DEADLINE INT64_MAX
/* epoll data.fd tags of the loop's own fds (user fds are >= 0) */
#define GL_MAX_DEPTH 64          /* nested main loops we keep track of */
#define GL_TIMER_TAG (-1)
#define GL_SIGNAL_TAG (-2)
#define GL_NSIG NSIG             /* signal numbers are 1 .. GL_NSIG - 1 */

/* ------------------------------------------------------------------ */
/* module state (module.c makes, traverses and clears all of it)      */

/* Interned names (st->s_<name>). */
#define GL_STRINGS(X) \
    X(call_exception_handler) X(context) X(loop) \
    X(name) X(message) X(exception) X(handle) X(source_traceback) \
    X(set_name) \
    X(set_result) X(set_exception) X(done) X(add_done_callback) \
    X(fileno) X(recvfrom) X(sendto) X(accept) X(connect) \
    X(setblocking) X(gettimeout) X(close) X(shutdown) \
    X(getsockname) X(getpeername) X(family) X(type) X(proto) \
    X(connection_made) X(connection_lost) X(data_received) \
    X(eof_received) X(get_buffer) X(buffer_updated) X(pause_writing) \
    X(resume_writing) X(datagram_received) X(error_received) \
    X(_attach) X(_detach) X(transport) X(protocol) X(socket) \
    X(sockname) X(peername) X(_start_reading) X(_read_ready) \
    X(_resume_accepting) X(_op_done) X(_call_connection_lost)

/* The state's objects other than the names: the types (made from the
 * specs the files export, see module.c), then what comes from asyncio and
 * the socket module. */
#define GL_STATE_OBJECTS(X) \
    X(LoopType) X(HandleType) X(TimerHandleType) X(ThreadSafeHandleType) \
    X(SockWaitType) X(StreamType) X(ListenerType) X(DatagramType) \
    X(ReadPipeType) X(WritePipeType) X(ChildWatchType) \
    X(future_type) X(task_type) X(format_callback) X(extract_stack) \
    X(get_running_loop) X(set_running_loop) X(swap_current_task) \
    X(current_task) X(current_tasks) \
    X(socket_type) X(check_ssl_socket) X(buffered_protocol) \
    X(transport_socket) X(set_result_unless_cancelled) X(logger) \
    X(kwnames_loop)

struct gl_child;
struct gl_loop;

typedef struct {
    PyTypeObject *LoopType;         /* loop.c */
    PyTypeObject *HandleType;       /* handle.c */
    PyTypeObject *TimerHandleType;  /* handle.c */
    PyTypeObject *ThreadSafeHandleType;  /* handle.c: 3.14+, else NULL */
    PyTypeObject *SockWaitType;     /* sockops.c */
    PyTypeObject *StreamType;       /* stream.c */
    PyTypeObject *ListenerType;     /* server.c */
    PyTypeObject *DatagramType;     /* udp.c */
    PyTypeObject *ReadPipeType;     /* pipe.c */
    PyTypeObject *WritePipeType;    /* pipe.c */
    PyTypeObject *ChildWatchType;   /* process.c */
    PyObject *future_type;          /* asyncio.Future */
    PyObject *task_type;            /* asyncio.Task */
    PyObject *format_callback;      /* asyncio.format_helpers._format_callback_source */
    PyObject *extract_stack;        /* asyncio.format_helpers.extract_stack */
    PyObject *get_running_loop;     /* asyncio.events._get_running_loop */
    PyObject *set_running_loop;     /* asyncio.events._set_running_loop */
    PyObject *swap_current_task;    /* 3.12+: asyncio.tasks._swap_current_task */
    PyObject *current_task;         /* asyncio.tasks.current_task */
    PyObject *current_tasks;        /* 3.11: asyncio.tasks._current_tasks */
    PyObject *socket_type;          /* socket.socket */
    PyObject *check_ssl_socket;     /* asyncio.base_events._check_ssl_socket */
    PyObject *buffered_protocol;    /* asyncio.BufferedProtocol */
    PyObject *transport_socket;     /* asyncio.trsock.TransportSocket */
    PyObject *set_result_unless_cancelled; /* asyncio.futures._set_... */
    PyObject *logger;               /* asyncio.log.logger */
    PyObject *kwnames_loop;         /* ("loop",) for vectorcall */
#define GL_STRING_FIELD(name) PyObject *s_##name;
    GL_STRINGS(GL_STRING_FIELD)
#undef GL_STRING_FIELD
    PyMethodDef *loop_methods;      /* every file's Loop methods, joined */
    struct gl_child *children;      /* every loop's watched children (borrowed; process.c) */
    int no_pidfd;                   /* tests force the fallback without pidfd */
    /* The loop whose add_signal_handler() handle each signal number runs
     * (borrowed: a loop drops its entries when it closes or dies). */
    struct gl_loop *sig_owner[GL_NSIG];  /* signals.c */
} gl_state;

extern PyModuleDef gl_module_def;
gl_state *gl_module_state_of_type(PyTypeObject *type);
/* Where a Python class keeps its slot `name` (its member descriptor's
 * offset), or (size_t)-1: for C types that derive from asyncio's classes. */
size_t gl_module_slot_offset(PyObject *base, const char *name);
/* The module state of an object with a `loop` field (transports and the
 * other C watchers). */
#define GL_ST(obj) ((obj)->loop->st)

/* The specs the files export (module.c makes the types). */
extern PyType_Spec gl_loop_spec;          /* loop.c */
extern PyType_Spec gl_handle_spec;        /* handle.c */
extern PyType_Spec gl_timer_spec;         /* handle.c */
/* asyncio's _ThreadSafeHandle with glibloop's C handle inside, or NULL with
 * no error where asyncio has no such class (before 3.14; handle.c). */
PyTypeObject *gl_handle_make_threadsafe_type(PyObject *module);
extern PyType_Spec gl_sockwait_spec;      /* sockops.c */
extern PyType_Spec gl_listener_spec;      /* server.c */
extern PyType_Spec gl_stream_spec;        /* stream.c */
extern PyType_Spec gl_udp_spec;           /* udp.c */
extern PyType_Spec gl_pipe_read_spec;     /* pipe.c */
extern PyType_Spec gl_pipe_write_spec;    /* pipe.c */
extern PyType_Spec gl_process_child_spec;         /* process.c */

/* Each concern's methods of the Loop type live in its own file; module.c
 * joins them when it makes the type.  Add a table there. */
extern PyMethodDef gl_loop_core_methods[];   /* loop.c */
extern PyMethodDef gl_source_methods[];      /* source.c */
extern PyMethodDef gl_tasks_methods[];       /* tasks.c */
extern PyMethodDef gl_poll_methods[];        /* poll.c */
extern PyMethodDef gl_signals_methods[];     /* signals.c */
extern PyMethodDef gl_sockops_methods[];     /* sockops.c */
extern PyMethodDef gl_stream_methods[];      /* stream.c */
extern PyMethodDef gl_server_methods[];      /* server.c */
extern PyMethodDef gl_udp_methods[];         /* udp.c */
extern PyMethodDef gl_pipe_methods[];        /* pipe.c */
extern PyMethodDef gl_process_methods[];     /* process.c */

/* The named results of the functions that return a count or an fd, >= 0,
 * on success (the reads of the transports, gl_sock_fileno). */
enum {
    GL_RC_AGAIN = -1,            /* a read: nothing more can be read now
                                  * (would block, or the transport failed
                                  * and was closed) */
    GL_RC_STOP = -2,             /* SystemExit/KeyboardInterrupt set: stop
                                  * the loop */
    GL_RC_ERROR = -3,            /* an exception set, for the caller */
    GL_RC_NOT_DONE = -4,         /* not done: take the other way */
};

/* Exceptions a callback may raise that must stop the loop. */
static inline int
gl_exc_is_fatal(PyObject *exc)
{
    return PyErr_GivenExceptionMatches(exc, PyExc_SystemExit) ||
           PyErr_GivenExceptionMatches(exc, PyExc_KeyboardInterrupt);
}

/* ------------------------------------------------------------------ */
/* handles (handle.c)                                                 */

typedef struct gl_handle {
    PyObject_HEAD
    /* From Python 3.14 call_soon_threadsafe()'s handles are of a type derived
     * from asyncio's _ThreadSafeHandle, whose slots (in the order of their
     * names) lie where these eight pointers do: each holds what its slot is
     * named for, or NULL (handle.c checks the layout when it makes the type). */
    PyObject *args;              /* _args: tuple, NULL once cancelled */
    PyObject *callback;          /* _callback: NULL once cancelled */
    PyObject *unused;            /* _cancelled: NULL (the flag is below) */
    PyObject *context;           /* _context: contextvars.Context */
    PyObject *loop;              /* _loop: strong reference */
    PyObject *repr_cache;        /* _repr: saved at cancel() in debug mode */
    PyObject *source_traceback;  /* _source_traceback: list in debug mode */
    PyObject *weakreflist;       /* _lock: NULL there (its weak references
                                  * are the ones Python manages) */
    uint8_t cancelled;
    /* Python 3.14+: call_soon_threadsafe()'s handles follow asyncio's
     * _ThreadSafeHandle: cancel() or cancelled() from a thread other than the
     * loop's waits while the callback runs (handle.c). */
    uint8_t threadsafe;
    uint8_t running;             /* a threadsafe handle's callback runs now */
    uint32_t waiters;            /* threads waiting for it to end */
} gl_handle;

typedef struct gl_timer {
    gl_handle base;
    double when;                 /* loop time in seconds, as given */
    int64_t when_ns;             /* deadline on CLOCK_MONOTONIC */
    uint64_t seq;                /* tie-break: equal deadlines run FIFO */
    int scheduled;               /* in the heap */
} gl_timer;

/* Handles made by call_soon/call_later live untracked by the GC while the
 * loop's queues hold them: they cannot be garbage while queued, and a
 * burst of 300,000 callbacks would otherwise make every young-generation
 * collection walk them all.  The loop gives a handle up with
 * gl_handle_release(), which tracks it if anyone else still holds it, so
 * cycles through a kept handle are collected as usual. */
static inline void
gl_handle_release(gl_handle *h)
{
    if (Py_REFCNT(h) > 1 && !PyObject_GC_IsTracked((PyObject *)h)) {
        PyObject_GC_Track(h);
    }
    Py_DECREF(h);
}

/* Visits a handle held by one of the loop's queues.  A tracked handle is
 * visited as an object.  An untracked one that only the queue holds is part
 * of the loop as far as the GC can tell, so its references are visited as
 * the loop's own: a loop dropped with callbacks still queued (a cycle
 * through handle->loop) is then collected.  An untracked handle that
 * someone else also holds is skipped, which keeps what it references alive,
 * as it should. */
int gl_handle_traverse_queued(gl_handle *h, visitproc visit, void *arg);

/* New handle, not yet tracked by the GC (see above); steals nothing. args must be a tuple. context NULL or None
 * means a copy of the current context. */
gl_handle *gl_handle_new(gl_state *st, PyObject *loop, PyObject *callback,
                         PyObject *args, PyObject *context);
/* call_soon_threadsafe()'s: as gl_handle_new, asyncio's 3.14 rule added. */
gl_handle *gl_handle_new_threadsafe(gl_state *st, PyObject *loop,
                                    PyObject *callback, PyObject *args,
                                    PyObject *context);
gl_timer *gl_timer_new(gl_state *st, PyObject *loop, double when,
                       int64_t when_ns, PyObject *callback, PyObject *args,
                       PyObject *context);
/* Runs the handle's callback in its context.  Returns 0 when the callback
 * returned or raised an ordinary exception (reported to the loop's
 * exception handler), -1 with the exception set for SystemExit and
 * KeyboardInterrupt, which must stop the loop. */
int gl_handle_run(gl_handle *h);
/* Marks the handle cancelled and drops its callback and arguments. */
void gl_handle_cancel_internal(gl_handle *h);

/* ------------------------------------------------------------------ */
/* ready queue (sched.c): a ring buffer indexed by ever-growing counters */

typedef struct {
    gl_handle **items;
    uint64_t mask;               /* capacity - 1, capacity a power of two */
    uint64_t head;               /* next to run */
    uint64_t tail;               /* next free */
} gl_ready;

/* ------------------------------------------------------------------ */
/* timer heap (timers.c)                                              */

/* A heap slot: the timer's key, copied, beside the timer. */
typedef struct {
    int64_t when_ns;
    uint64_t seq;
    gl_timer *timer;
} gl_timer_slot;

typedef struct {
    gl_timer_slot *items;
    Py_ssize_t size;
    Py_ssize_t capacity;
    Py_ssize_t cancelled;        /* cancelled timers still in the heap */
    uint64_t next_seq;
} gl_timers;

int gl_timers_push(gl_timers *t, gl_timer *timer);      /* takes a new ref */
gl_timer *gl_timers_peek(gl_timers *t);
gl_timer *gl_timers_pop(gl_timers *t);                   /* returns the ref */
void gl_timers_compact(gl_timers *t);
void gl_timers_clear(gl_timers *t);
/* GC-tracks the timers in the heap that someone besides the heap holds
 * (see gl_timer_new); called when a run of the loop ends. */
void gl_timers_track_kept(gl_timers *t);
int gl_timers_traverse(gl_timers *t, visitproc visit, void *arg);

/* ------------------------------------------------------------------ */
/* epoll set (poll.c)                                                 */

struct gl_loop;

/* A C watcher: transports, servers and pending sock_* operations get their
 * epoll events through a function pointer, straight from the event, with
 * no Handle and no trip through the ready queue.  The callback gets a
 * borrowed owner that the dispatcher keeps alive for the call; it returns
 * -1 only for an exception that must stop the loop (SystemExit,
 * KeyboardInterrupt), 0 otherwise, having reported anything else. */
typedef int (*gl_watch_fn)(struct gl_loop *loop, PyObject *owner,
                           uint32_t events);

enum {
    GL_WATCH_SHARED = 1,         /* sock_* waiters, listeners: add_reader ok */
    GL_WATCH_OWNED = 2,          /* a transport: add_reader raises */
    /* or'ed in: events never held back for asyncio's order (a child's
     * pidfd: reaped at once, before any waitpid(-1) reaper queued
     * earlier, e.g. asyncio's FastChildWatcher, can take its status) */
    GL_WATCH_UNHELD = 4,
};

typedef struct {
    gl_handle *reader;
    gl_handle *writer;
    PyObject *owner;             /* C watcher's object (strong), or NULL */
    gl_watch_fn watch_fn;
    uint32_t watch_events;       /* EPOLLIN/EPOLLOUT, EPOLLET if it wants */
    int watch_kind;              /* GL_WATCH_SHARED or GL_WATCH_OWNED */
    int unheld;                  /* GL_WATCH_UNHELD was given */
    int idle;                    /* the watcher waits for nothing: any new
                                  * registration of fd replaces it */
    PyObject *fileobj;           /* what add_reader/add_writer was given */
    uint32_t events;             /* what is registered in epoll */
    uint32_t gen;                /* registration generation, in event data */
} gl_fdreg;

typedef struct {
    int epfd;
    int timerfd;
    int64_t timerfd_armed_ns;    /* 0 when disarmed */
    gl_fdreg *regs;              /* indexed by fd */
    int nregs;                   /* length of regs */
    int active;                  /* fds with a reader, writer or watcher */
    uint32_t next_gen;
    char *readbuf;               /* one read buffer for every transport */
    int watchers_ran;            /* the last gl_poll_dispatch ran a C watcher */
    /* C watcher events held back because callbacks were queued before the
     * poll that read them: they run when the ready queue's head reaches
     * held_mark (asyncio's order, see gl_sched_hold_watchers). */
    struct epoll_event *held;
    int nheld;                   /* events in held */
    int held_next;               /* the next one to run */
    int held_cap;
    uint64_t held_mark;          /* ready-queue position they run at */
} gl_poll;

#define GL_READBUF_SIZE (256 * 1024)

int gl_poll_init(gl_poll *p);                 /* -1 with OSError set */
void gl_poll_close(gl_poll *p);
int gl_poll_traverse(gl_poll *p, visitproc visit, void *arg);
void gl_poll_clear_handlers(gl_poll *p);
/* Installs handle as the reader (is_writer == 0) or writer of fd,
 * replacing and cancelling a previous one. Takes a new reference to h
 * and to fileobj, the object the caller named fd with (kept while fd has
 * a reader or writer, so that a closed object can still be found). */
int gl_poll_set(gl_poll *p, int fd, int is_writer, gl_handle *h,
                PyObject *fileobj);
/* The fd that fileobj was registered with by gl_poll_set, or -1. */
int gl_poll_find_fileobj(gl_poll *p, PyObject *fileobj);
/* Removes the reader or writer of fd. Returns 1 if one was there, 0 if
 * not, -1 on error. */
int gl_poll_remove(gl_poll *p, int fd, int is_writer);
gl_handle *gl_poll_get(gl_poll *p, int fd, int is_writer);
/* Installs owner as the C watcher of fd (takes a new reference).  Fails
 * with RuntimeError if another object already watches fd. */
int gl_poll_watch(gl_poll *p, int fd, PyObject *owner, gl_watch_fn fn,
                  uint32_t events, int kind);
/* Changes what the watcher of fd (which must be owner) waits for.  Always
 * issues the epoll_ctl, so an fd reused behind our back is re-added. */
int gl_poll_watch_events(gl_poll *p, int fd, PyObject *owner,
                         uint32_t events);
/* Removes owner as the watcher of fd if it is; never fails (an fd closed
 * behind our back is simply forgotten).  May release the last reference
 * to owner. */
void gl_poll_unwatch(gl_poll *p, int fd, PyObject *owner);
/* Marks owner, the watcher of fd, idle (waiting for nothing, a cache) or
 * busy again: an idle watcher gives way to any new registration of fd. */
void gl_poll_watch_idle(gl_poll *p, int fd, PyObject *owner, int idle);
/* If the file fd was registered for has been closed (and the number maybe
 * reused), forgets that registration: readers, writers and watcher.
 * Returns 1 if it did, 0 if the registration still holds or none. */
int gl_poll_forget_if_closed(gl_poll *p, int fd);
/* The watcher of fd (borrowed) and its kind, or NULL. */
PyObject *gl_poll_watcher(gl_poll *p, int fd, int *kind);
/* asyncio's _ensure_fd_no_transport: RuntimeError if fd belongs to a
 * transport that is not closing. */
int gl_poll_check_not_owned(gl_poll *p, int fd, PyObject *fileobj);
void gl_poll_arm_timer(gl_poll *p, int64_t deadline_ns);
/* epoll_wait(0) and queue the ready readers/writers of the loop. */
int gl_poll_dispatch(struct gl_loop *loop);
int gl_poll_run_held(struct gl_loop *loop);
void gl_poll_drain_timer(gl_poll *p);
/* The loop's read buffer (GL_READBUF_SIZE bytes) for every transport,
 * allocated on first use; NULL with MemoryError set. */
char *gl_poll_readbuf(gl_poll *p);

/* ------------------------------------------------------------------ */
/* the loop (loop.c)                                                  */

typedef struct gl_loop {
    PyObject_HEAD
    gl_state *st;
    GMainContext *context;
    GSource *source;             /* NULL once closed */
    GMainLoop *mainloop;         /* set while run_forever runs */
    gl_ready ready;
    gl_timers timers;
    gl_poll poll;

    /* Read by prepare/check without the GIL: written with atomics. */
    int64_t next_deadline_ns;
    int stopping;
    int closed;
    int running;
    int dispatch_depth;
    int glib_turn_backoff;       /* see glib_turn_gave_work() in loop.c */
    int in_glib_turn;            /* our source sits out our own GLib turn:
                                  * the g_main_depth() it runs at, or 0 */
    int glib_turn_skip;
    int turn_muted;              /* the epoll fd is muted for a GLib turn */
    /* Fairness (loop.c, run_rounds): asyncio has worked since fair_since_ns
     * without GLib getting an iteration of its own (0: not working). */
    int64_t fair_since_ns;
    int64_t batch_end_ns;        /* when the last batch returned to GLib */
    gl_handle *current_handle;   /* borrowed, while its callback runs */
    /* Nested main loops: the Context each dispatch depth is running a
     * callback in (borrowed), and handles put aside because their Context
     * is entered further up the stack, each with the depth that frees it. */
    PyObject *entered[GL_MAX_DEPTH + 1];
    gl_handle **deferred;
    int *deferred_level;
    Py_ssize_t deferred_size;
    Py_ssize_t deferred_capacity;
    PyObject *quit_func;         /* quits what GLib runs us in, when not run_forever */
    unsigned long thread_id;     /* while running */

    int sig_rfd, sig_wfd;        /* signal wake-up socketpair, -1 if none */
    gl_handle **sig_handlers;    /* add_signal_handler()'s handles, indexed
                                  * by signal number (GL_NSIG), or NULL */

    int debug;
    double slow_callback_duration;
    int64_t batch_budget_ns;
    PyObject *exception_handler; /* NULL for the default */
    PyObject *task_factory;      /* NULL for none */
    PyObject *pending_exc;       /* SystemExit/KeyboardInterrupt to re-raise */
    PyObject *dict;
    PyObject *weakreflist;
} gl_loop;

static inline int64_t
gl_monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * GL_NS_PER_SEC + ts.tv_nsec;
}

int gl_loop_check_not_closed(gl_loop *loop);
/* Argument checks of the Loop methods, as asyncio words them: at least min
 * positional arguments (names lists them for the message); a callback that
 * is callable and no coroutine; the tuple of args[0:n]. */
int gl_loop_need_args(Py_ssize_t nargs, Py_ssize_t min, const char *method,
                      const char *names);
int gl_loop_check_callback(PyObject *cb, const char *method);
PyObject *gl_loop_args_tuple(PyObject *const *args, Py_ssize_t n);
/* The one exception reporter, for handles and C watchers alike.  A
 * SystemExit/KeyboardInterrupt exc is not reported: it is set again and -1
 * returned, to stop the loop.  Anything else (exc may be NULL) goes to
 * loop.call_exception_handler({'message': PyUnicode_FromFormat(format,
 * ...), 'exception' when exc is not NULL, and 'handle' (with its
 * 'source_traceback'), 'transport', 'protocol', 'socket' for those not
 * NULL}).  Returns 0, or -1 with the exception set when the handler raised
 * SystemExit/KeyboardInterrupt: as in asyncio, it must stop the loop and
 * reach the caller of run_until_complete/run_forever, so every caller
 * passes the -1 on up to the handle or watcher that ran.  Any other
 * failure is written as unraisable.  exc is borrowed. */
int gl_loop_report_error(gl_loop *loop, PyObject *exc, gl_handle *h,
                         PyObject *transport, PyObject *protocol, PyObject *sock,
                         const char *format, ...);
/* A new asyncio.Future of the loop. */
PyObject *gl_loop_future_new(gl_loop *loop);
/* fut.set_result(value) / fut.set_exception(exc); -1 with an exception
 * set if that raised. */
int gl_loop_future_set_result(gl_state *st, PyObject *fut, PyObject *value);
int gl_loop_future_set_exception(gl_state *st, PyObject *fut, PyObject *exc);
/* 1 if fut.done(), 0 if not, -1 on error. */
int gl_loop_future_done(gl_state *st, PyObject *fut);
/* Schedules callable(*args) in the next round, as call_soon does, in
 * context (NULL: a copy of the current one). */
int gl_loop_call_soon(gl_loop *loop, PyObject *callable, PyObject *args,
                      PyObject *context);

/* Contexts.  As asyncio (3.15 passes it as `context=`), every protocol
 * call of a transport, listener connection or child watch runs in one
 * contextvars.Context captured when it was made: each accepted connection
 * in its own copy of its server's.  Its handles are queued in it; a C
 * watcher enters it around its protocol calls (gl_sched_enter).
 * gl_loop_context(context): context itself, or a copy of the current
 * context for NULL/None (new reference; TypeError if not a Context). */
PyObject *gl_loop_context(PyObject *context);

/* ------------------------------------------------------------------ */
/* the scheduler (sched.c): the ready queue, rounds, batches, GLib's   */
/* turns, asyncio's order for C watchers, handles put aside            */

int gl_sched_push(gl_loop *loop, gl_handle *h);   /* takes a new ref */
/* Drops cancelled timers off the top of the heap and publishes the next
 * deadline for the GSource's prepare. */
void gl_sched_update_deadline(gl_loop *loop);
/* Runs rounds until the queue is empty, the budget is spent, stop() was
 * called or a callback raised SystemExit/KeyboardInterrupt. Needs the GIL.
 * epoll_readable: GLib saw the epoll fd readable, so the first round reads
 * it even when no user fd is registered (timerfd, signal wake-up). */
void gl_sched_run_batch(gl_loop *loop, int epoll_readable);
/* At the start of a poll's dispatch: 1 if the C watchers' events of this
 * poll must be held back (gl_poll_run_held replays them when run_round
 * reaches the callbacks queued after the poll), 0 if they run at once. */
int gl_sched_hold_watchers(gl_loop *loop);
/* The ready queue and the handles put aside: released / visited. */
void gl_sched_clear(gl_loop *loop);
int gl_sched_traverse(gl_loop *loop, visitproc visit, void *arg);
/* A C watcher enters its transport's context (see gl_loop_context)
 * around its protocol calls:
 *     gl_sched_frame f;
 *     gl_sched_enter(loop, ctx, &f);
 *     rc = ...protocol calls...;
 *     rc = gl_sched_leave(loop, &f, rc);
 * The context is recorded at the dispatch depth as a running handle's is,
 * so a nested main loop defers the handles queued in it. */
typedef struct {
    PyObject *ctx;               /* entered, NULL if it could not be */
    PyObject *outer;             /* loop->entered[depth] before */
    int depth;
} gl_sched_frame;
/* Never fails: a Context already entered further up the stack (its own
 * callback started a nested main loop) is not entered again, and the
 * calls run in the current one. */
void gl_sched_enter(gl_loop *loop, PyObject *ctx, gl_sched_frame *f);
/* Leaves the context; rc is the watcher's result, returned, with its
 * exception (SystemExit/KeyboardInterrupt) kept. */
int gl_sched_leave(gl_loop *loop, gl_sched_frame *f, int rc);


/* ------------------------------------------------------------------ */
/* signal wake-up (signals.c)                                         */

void gl_signals_close(gl_loop *loop);
int gl_signals_traverse(gl_loop *loop, visitproc visit, void *arg);
void gl_signals_clear(gl_loop *loop);
/* _core._signal_handler(signum, frame): the Python-level handler that
 * add_signal_handler() installs (module function, see module.c). */
PyObject *gl_signals_py_handler(PyObject *module, PyObject *const *args,
                                Py_ssize_t nargs);
/* Drains the wake-up socket and runs Python's signal handlers; -1 with the
 * handler's exception (KeyboardInterrupt) set. */
int gl_signals_on_wakeup(gl_loop *loop);

/* ------------------------------------------------------------------ */
/* sockets (sock.c)                                                   */

/* sock.fileno() as an int (-1 for a closed socket), or GL_RC_ERROR with
 * an exception set. */
int gl_sock_fileno(gl_state *st, PyObject *sock);
/* The Python address of a sockaddr of AF_INET, AF_INET6 or AF_UNIX, as the
 * socket module makes it.  NULL without an exception for other families
 * (the caller asks the socket module instead), NULL with one on error. */
PyObject *gl_sock_addr_to_py(const void *sa, unsigned int len);
/* Fills *out (a struct sockaddr_storage) from a Python address of family,
 * for numeric AF_INET and AF_INET6 addresses and AF_UNIX paths.  1 on
 * success, 0 when the socket module must do it (names to resolve, other
 * families), -1 on error. */
int gl_sock_addr_from_py(int family, PyObject *addr, void *out,
                         unsigned int *len);

/* ------------------------------------------------------------------ */
/* stream transports (stream.c)                                       */

/* A stream transport on a connected non-blocking socket (stream.c).
 * waiter, extra and server may be NULL; context as gl_loop_context(). */
PyObject *gl_stream_new(gl_loop *loop, PyObject *sock, PyObject *protocol,
                        PyObject *waiter, PyObject *extra, PyObject *server,
                        PyObject *context);

/* ------------------------------------------------------------------ */
/* what the C transports share (transport.c)                          */

typedef struct {
    PyObject *obj;               /* bytes */
    Py_ssize_t off;              /* bytes of it already written */
} gl_wchunk;

/* The first fields of every C transport (stream.c, pipe.c, udp.c), as
 * PyObject_HEAD is of every object; the functions below take any of them
 * as a gl_transport.  extra, then the fc_ fields, must stay first: they
 * are the slots of the asyncio base classes (BaseTransport's _extra, then
 * _FlowControlMixin's, which CPython lays out sorted by name), and the C
 * code mirrors its own flow-control fields into them.  A type without
 * _FlowControlMixin (the read pipe) leaves the fc_ fields NULL.  The write
 * queue holds bytes objects as given: stream and write pipe use it, the
 * datagram transport keeps datagrams with their addresses instead (wsize
 * counts their bytes all the same). */
#define GL_TRANSPORT_HEAD \
    PyObject_HEAD \
    PyObject *extra; \
    PyObject *fc_high_water; \
    PyObject *fc_loop; \
    PyObject *fc_low_water; \
    PyObject *fc_protocol_paused; \
    gl_loop *loop; \
    PyObject *context;           /* every protocol call runs in it */ \
    PyObject *file;              /* socket or pipe; NULL once closed */ \
    PyObject *protocol; \
    PyObject *data_received;     /* protocol's bound methods, on first use */ \
    PyObject *get_buffer; \
    PyObject *buffer_updated; \
    PyObject *weakreflist; \
    PyObject *dict;              /* as asyncio's Python transports: code and \
                                  * tests set attributes (mocks) on them */ \
    gl_wchunk *wq; \
    Py_ssize_t wq_head; \
    Py_ssize_t wq_len; \
    Py_ssize_t wq_cap; \
    Py_ssize_t wsize;            /* bytes waiting to be written */ \
    Py_ssize_t high_water; \
    Py_ssize_t low_water; \
    int fd; \
    int watching;                /* in the epoll set */ \
    int closing; \
    int conn_lost; \
    int protocol_paused;         /* pause_writing() was called */ \
    int buffered;                /* protocol is a BufferedProtocol */ \
    int no_fionread;             /* the fd does not answer FIONREAD */ \
    Py_ssize_t last_read;        /* bytes the last data read returned */ \
    /* reading (stream and read pipe; see gl_transport_on_event) */ \
    const struct gl_transport_kind *kind_ops; \
    int started;                 /* _start_reading ran */ \
    int paused;                  /* pause_reading() */ \
    int read_eof;                /* EOF seen, the transport stays open */ \
    int read_pending;            /* an edge or data not consumed yet */ \
    int read_scheduled;          /* a _read_ready handle is queued */ \
    int busy;                    /* inside the event handler */ \
    uint32_t deferred;           /* events that arrived while busy */

typedef struct {
    GL_TRANSPORT_HEAD
} gl_transport;

#define GL_TRANSPORT(t) ((gl_transport *)(t))

/* What a reading transport (stream, read pipe) does its own way.  The
 * fd is registered once, edge-triggered; an edge that cannot be acted on
 * (reading not started or paused) is remembered in read_pending and acted
 * on when reading (re)starts.  A protocol callback that runs a nested main
 * loop cannot re-enter its transport: events arriving meanwhile are kept
 * (busy, deferred) and handled when it returns. */
struct gl_transport_kind {
    /* The epoll event(s); -1 only for SystemExit/KeyboardInterrupt. */
    int (*handle_events)(gl_transport *t, uint32_t ev);
    /* One read: 1 there may be more, 0 drained or stopped, -1
     * SystemExit/KeyboardInterrupt. */
    int (*read_once)(gl_transport *t);
};

/* The C watcher of a reading transport: kind_ops->handle_events in the
 * transport's context. */
int gl_transport_on_event(gl_loop *loop, PyObject *owner, uint32_t ev);
int gl_transport_can_read(gl_transport *t);
/* Reads until the fd is drained (a short read: later data makes a new
 * edge), reading stops, or the per-event quota is used up; the rest is
 * read in the next round so that other fds get their turn. */
int gl_transport_read_loop(gl_transport *t);
PyObject *gl_transport_read_ready(PyObject *self, PyObject *unused);
PyObject *gl_transport_start_reading(PyObject *self, PyObject *unused);
PyObject *gl_transport_is_reading(PyObject *self, PyObject *unused);
PyObject *gl_transport_pause_reading(PyObject *self, PyObject *unused);
PyObject *gl_transport_resume_reading(PyObject *self, PyObject *unused);
#define GL_TRANSPORT_READ_METHODS \
    {"is_reading", gl_transport_is_reading, METH_NOARGS, NULL}, \
    {"pause_reading", gl_transport_pause_reading, METH_NOARGS, NULL}, \
    {"resume_reading", gl_transport_resume_reading, METH_NOARGS, NULL}, \
    {"_start_reading", gl_transport_start_reading, METH_NOARGS, NULL}, \
    {"_read_ready", gl_transport_read_ready, METH_NOARGS, NULL}

/* Fills the common fields of a new transport: the loop, the fd, the
 * context (see gl_loop_context), asyncio's default write-buffer limits and,
 * when flow_control, the base's mirrors. */
int gl_transport_init(gl_transport *t, gl_loop *loop, int fd, int flow_control,
                      PyObject *context);
/* Sets the protocol, forgetting the cached bound methods; with
 * detect_buffered, notes whether it is a BufferedProtocol. */
int gl_transport_set_protocol(gl_transport *t, PyObject *protocol,
                              int detect_buffered);
/* The protocol's bound method `name`, looked up once into *cache
 * (borrowed, NULL with an exception set). */
PyObject *gl_transport_protocol_method(gl_transport *t, PyObject **cache,
                                       PyObject *name);
/* Schedules callable(arg), or callable() when arg is NULL, for the next
 * round, in the transport's context; schedule_method does so with the
 * transport's method `name`. */
int gl_transport_schedule_call(gl_transport *t, PyObject *callable, PyObject *arg);
int gl_transport_schedule_method(gl_transport *t, PyObject *name, PyObject *arg);
/* connection_made(t), then _start_reading() when start_reading, then the
 * waiter's result, in that order in the next round, as asyncio. */
int gl_transport_schedule_start(gl_transport *t, PyObject *waiter, int start_reading);
/* asyncio's logger.<level>(fmt, t); never fails (reports unraisable). */
void gl_transport_log(gl_transport *t, const char *level, const char *fmt);
void gl_transport_unwatch(gl_transport *t);
/* Closes the file object and forgets it; never fails. */
void gl_transport_close_file(gl_transport *t);
/* asyncio's _fatal_error with the current exception: an OSError (with
 * eio_only, only one whose errno is EIO) is only logged in debug mode,
 * anything else goes to the exception handler; then close(t, exc) closes
 * the transport.  -1 only for SystemExit/KeyboardInterrupt, put back,
 * whether the failed call or the exception handler raised it (then, as in
 * asyncio, the transport is not closed). */
typedef int (*gl_transport_close_fn)(gl_transport *t, PyObject *exc);
int gl_transport_fatal_error(gl_transport *t, const char *message, int eio_only,
                             gl_transport_close_fn close);
/* A socket transport's close(): connection_lost(None) in the next round,
 * once the queue is empty (now, if it is). */
int gl_transport_close(gl_transport *t);
/* asyncio's _force_close(exc): the write queue is dropped and
 * connection_lost(exc) (None for NULL) runs in the next round, once. */
int gl_transport_force_close(gl_transport *t, PyObject *exc);
/* protocol.connection_lost(exc) when call is true and there is a protocol;
 * then, whatever it did, the transport leaves the epoll set, closes its
 * file and drops its protocol (asyncio's finally).  Returns what
 * connection_lost raised (a new reference, not set) or NULL. */
PyObject *gl_transport_connection_lost(gl_transport *t, PyObject *exc, int call);

/* Reading for the protocols: read_fn is the transport's read syscall with
 * its error handling, returning the byte count, 0 at EOF (handled),
 * GL_RC_AGAIN when nothing more can be read now, GL_RC_STOP for
 * SystemExit/KeyboardInterrupt. */
typedef Py_ssize_t (*gl_transport_read_fn)(gl_transport *t, char *buf, size_t size);
/* One read for data_received(): returns read_fn's count with *data the
 * new bytes object, read_fn's value when that is <= 0, or GL_RC_ERROR
 * with an exception set (memory).  After a large read (bulk data) on an fd that
 * can_ask, the fd is asked how much it holds (FIONREAD) and exactly that
 * is read into the bytes object: an ioctl costs less than copying tens of
 * KiB out of the loop's read buffer, which small reads still use.
 * *queued is what FIONREAD reported (0 when not asked): anything beyond
 * it arrived after the ioctl and makes a new edge. */
Py_ssize_t gl_transport_read_data(gl_transport *t, int can_ask, gl_transport_read_fn read_fn,
                                  PyObject **data, Py_ssize_t *queued);
/* protocol.data_received(data) (the reference to data is taken);
 * protocol.get_buffer(-1) exported writable into *view (never empty);
 * protocol.buffer_updated(n).  0, or -1 with the exception set. */
int gl_transport_data_received(gl_transport *t, PyObject *data);
int gl_transport_get_buffer(gl_transport *t, Py_buffer *view);
int gl_transport_buffer_updated(gl_transport *t, Py_ssize_t n);

/* The write queue (wq.c); push takes a new reference, consume drops n
 * written bytes from the front. */
void gl_wq_clear(gl_transport *t);
int gl_wq_push(gl_transport *t, PyObject *bytes, Py_ssize_t off);
void gl_wq_consume(gl_transport *t, Py_ssize_t n);
/* Writes as much of the queue as the kernel takes, with sendmsg() on a
 * socket (no SIGPIPE) or writev().  0 when the kernel took all it would,
 * -1 with OSError set (the queue as it was). */
int gl_wq_flush(gl_transport *t, int is_socket);
/* TypeError unless data is bytes, bytearray or memoryview (asyncio's). */
int gl_wq_check_data(PyObject *data);
/* write(data)'s course, as asyncio's: b"" does nothing; while refused (the
 * connection is lost) the write is only counted, with refused_warning
 * logged from the fifth on; else the syscall is tried at once when
 * nothing is queued (send() without SIGPIPE on a socket, else write()) and
 * what the kernel did not take is queued (bytes as they are, anything else
 * copied), which may pause the protocol.  1 done; 0 the syscall failed,
 * with the OSError set for the caller to report; -1 error. */
int gl_wq_write(gl_transport *t, PyObject *data, int is_socket, int refused,
                const char *refused_warning);
/* bytes(b"".join(list)), for writelines(). */
PyObject *gl_wq_join(PyObject *list);

/* Flow control: pause_writing() above the high-water mark, resume_writing()
 * at or below the low one; -1 only for SystemExit/KeyboardInterrupt (other
 * exceptions of the hooks go to the exception handler). */
int gl_transport_maybe_pause(gl_transport *t);
int gl_transport_maybe_resume(gl_transport *t);

/* GC and the type slots every transport type uses. */
int gl_transport_traverse(gl_transport *t, visitproc visit, void *arg);
int gl_transport_clear(gl_transport *t);
void gl_transport_dealloc(PyObject *self);   /* calls the type's tp_clear */
void gl_transport_finalize(PyObject *self);  /* ResourceWarning, closes */
/* The bases of a transport type: (asyncio.transports.<base_name>,) or,
 * when base2_name is not NULL, (<base_name>, <base2_name>), after checking
 * that the first base's slots are where GL_TRANSPORT_HEAD puts them. */
PyObject *gl_transport_bases(const char *base_name, const char *base2_name);
/* A transport's get_extra_info() dict: extra plus 'socket' (a
 * TransportSocket), 'sockname' and, unless given, 'peername'. */
PyObject *gl_transport_extra(gl_state *st, PyObject *sock, PyObject *extra);

/* Methods every transport type has. */
PyObject *gl_transport_get_extra_info(PyObject *self, PyObject *const *args,
                                      Py_ssize_t nargs, PyObject *kwnames);
PyObject *gl_transport_is_closing(PyObject *self, PyObject *unused);
PyObject *gl_transport_get_protocol(PyObject *self, PyObject *unused);
PyObject *gl_transport_set_write_buffer_limits(PyObject *self, PyObject *args,
                                               PyObject *kwds);
PyObject *gl_transport_get_write_buffer_limits(PyObject *self, PyObject *unused);
PyObject *gl_transport_get_write_buffer_size(PyObject *self, PyObject *unused);

#define GL_TRANSPORT_BASE_METHODS \
    {"get_extra_info", (PyCFunction)(void (*)(void))gl_transport_get_extra_info, \
     METH_FASTCALL | METH_KEYWORDS, NULL}, \
    {"is_closing", gl_transport_is_closing, METH_NOARGS, NULL}, \
    {"get_protocol", gl_transport_get_protocol, METH_NOARGS, NULL}
#define GL_TRANSPORT_FLOW_METHODS \
    {"set_write_buffer_limits", \
     (PyCFunction)(void (*)(void))gl_transport_set_write_buffer_limits, \
     METH_VARARGS | METH_KEYWORDS, NULL}, \
    {"get_write_buffer_limits", gl_transport_get_write_buffer_limits, METH_NOARGS, NULL}, \
    {"get_write_buffer_size", gl_transport_get_write_buffer_size, METH_NOARGS, NULL}
/* The instance __dict__ (vars(transport)), first in each getset table. */
#define GL_TRANSPORT_GETSET \
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL}
/* __weaklistoffset__, __dictoffset__, _protocol and _conn_lost. */
#define GL_TRANSPORT_MEMBERS \
    {"__weaklistoffset__", T_PYSSIZET, offsetof(gl_transport, weakreflist), READONLY, NULL}, \
    {"__dictoffset__", T_PYSSIZET, offsetof(gl_transport, dict), READONLY, NULL}, \
    {"_protocol", T_OBJECT, offsetof(gl_transport, protocol), READONLY, NULL}, \
    {"_conn_lost", T_INT, offsetof(gl_transport, conn_lost), READONLY, NULL}

/* ------------------------------------------------------------------ */
/* pipes (pipe.c) and child processes (process.c)                     */

/* Once per process, at module init: the orphan reaper's fork handlers. */
int gl_process_module_init(void);
/* _core._use_pidfd(flag): module function, for the fallback's tests. */
PyObject *gl_process_use_pidfd(PyObject *module, PyObject *flag);

/* ------------------------------------------------------------------ */
/* the GSource (source.c)                                             */

GSource *gl_source_new(gl_loop *loop);
void gl_source_wakeup(gl_loop *loop);
/* Stops (1) or restarts (0) GLib polling the loop's epoll fd: while a fatal
 * exception waits to be raised, ready fds must not spin GLib's poll. */
void gl_source_set_paused(gl_loop *loop, int paused);
void gl_source_mute_turn(gl_loop *loop);
void gl_source_unmute_turn(gl_loop *loop);
/* The GMainContext of a PyGObject GLib.MainContext (borrowed), or NULL with
 * TypeError set. */
GMainContext *gl_source_context_of(PyObject *obj);

/* ------------------------------------------------------------------ */
/* exceptions across Python versions                                  */

static inline PyObject *
gl_err_fetch(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (type == NULL) {
        return NULL;
    }
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL) {
        PyException_SetTraceback(value, tb);
    }
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
#endif
}

static inline void
gl_err_restore(PyObject *exc)  /* steals exc */
{
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    PyObject *tb = PyException_GetTraceback(exc);
    PyErr_Restore((PyObject *)Py_NewRef(Py_TYPE(exc)), exc, tb);
#endif
}

#endif /* GLIBLOOP_INTERNAL_H */
