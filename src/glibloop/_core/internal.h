/* Shared declarations of the glibloop core.
 *
 * One prefix per file: gl_module_ (module.c), gl_loop_ (loop.c),
 * gl_source_ (source.c), gl_handle_ (handle.c), gl_timers_ (timers.c),
 * gl_poll_ (poll.c).  Functions that can fail return 0 on success and -1
 * with a Python exception set, unless they say otherwise.
 */
#ifndef GLIBLOOP_INTERNAL_H
#define GLIBLOOP_INTERNAL_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#if PY_VERSION_HEX < 0x030B0000
#error "glibloop needs CPython 3.11 or later"
#endif

#define GL_NS_PER_SEC INT64_C(1000000000)
#define GL_NS_PER_MS INT64_C(1000000)
#define GL_NO_DEADLINE INT64_MAX

/* ------------------------------------------------------------------ */
/* module state (module.c)                                            */

typedef struct {
    PyTypeObject *LoopType;
    PyTypeObject *HandleType;
    PyTypeObject *TimerHandleType;
    PyObject *future_type;          /* asyncio.Future */
    PyObject *task_type;            /* asyncio.Task */
    PyObject *format_callback;      /* asyncio.format_helpers._format_callback_source */
    PyObject *extract_stack;        /* asyncio.format_helpers.extract_stack */
    PyObject *str_call_exception_handler;
    PyObject *str_log_slow_callback;
    PyObject *str_context;
    PyObject *str_loop;
    PyObject *str_name;
    PyObject *str_message;
    PyObject *str_exception;
    PyObject *str_handle;
    PyObject *str_source_traceback;
    PyObject *str_set_name;
    PyObject *kwnames_loop;         /* ("loop",) for vectorcall */
    PyMethodDef *loop_methods;      /* every file's Loop methods, joined */
} gl_state;

extern PyModuleDef gl_module_def;
gl_state *gl_module_state_of_type(PyTypeObject *type);

/* ------------------------------------------------------------------ */
/* handles (handle.c)                                                 */

typedef struct gl_handle {
    PyObject_HEAD
    PyObject *callback;          /* NULL once cancelled */
    PyObject *args;              /* tuple, NULL once cancelled */
    PyObject *context;           /* contextvars.Context */
    PyObject *loop;              /* strong reference */
    PyObject *source_traceback;  /* list in debug mode, else NULL */
    PyObject *repr_cache;        /* repr saved at cancel() in debug mode */
    PyObject *weakreflist;
    int cancelled;
} gl_handle;

typedef struct gl_timer {
    gl_handle base;
    double when;                 /* loop time in seconds, as given */
    int64_t when_ns;             /* deadline on CLOCK_MONOTONIC */
    uint64_t seq;                /* tie-break: equal deadlines run FIFO */
    Py_ssize_t heap_index;       /* position in the heap, -1 when not in it */
    int scheduled;
} gl_timer;

extern PyType_Spec gl_handle_spec;
extern PyType_Spec gl_timer_spec;

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
/* ready queue (loop.c): a ring buffer indexed by ever-growing counters */

typedef struct {
    gl_handle **items;
    uint64_t mask;               /* capacity - 1, capacity a power of two */
    uint64_t head;               /* next to run */
    uint64_t tail;               /* next free */
} gl_ready;

/* ------------------------------------------------------------------ */
/* timer heap (timers.c)                                              */

typedef struct {
    gl_timer **items;
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
int gl_timers_traverse(gl_timers *t, visitproc visit, void *arg);

/* ------------------------------------------------------------------ */
/* epoll set (poll.c)                                                 */

typedef struct {
    gl_handle *reader;
    gl_handle *writer;
    uint32_t events;             /* what is registered in epoll */
} gl_fdreg;

typedef struct {
    int epfd;
    int timerfd;
    int64_t timerfd_armed_ns;    /* 0 when disarmed */
    gl_fdreg *regs;              /* indexed by fd */
    int nregs;                   /* length of regs */
    int active;                  /* fds with a reader or a writer */
} gl_poll;

int gl_poll_init(gl_poll *p);                 /* -1 with OSError set */
void gl_poll_close(gl_poll *p);
int gl_poll_traverse(gl_poll *p, visitproc visit, void *arg);
void gl_poll_clear_handlers(gl_poll *p);
/* Installs handle as the reader (is_writer == 0) or writer of fd,
 * replacing and cancelling a previous one. Takes a new reference. */
int gl_poll_set(gl_poll *p, int fd, int is_writer, gl_handle *h);
/* Removes the reader or writer of fd. Returns 1 if one was there, 0 if
 * not, -1 on error. */
int gl_poll_remove(gl_poll *p, int fd, int is_writer);
gl_handle *gl_poll_get(gl_poll *p, int fd, int is_writer);
void gl_poll_arm_timer(gl_poll *p, int64_t deadline_ns);
struct gl_loop;
/* epoll_wait(0) and queue the ready readers/writers of the loop. */
int gl_poll_dispatch(struct gl_loop *loop);
void gl_poll_drain_timer(gl_poll *p);

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

    /* call_soon_threadsafe: handles pushed by any thread */
    GMutex ts_lock;
    gl_handle **ts_items;
    Py_ssize_t ts_size;
    Py_ssize_t ts_capacity;
    int ts_pending;              /* atomic: ts_size > 0 */

    /* Read by prepare/check without the GIL: written with atomics. */
    int64_t next_deadline_ns;
    int stopping;
    int closed;
    int running;
    int dispatch_depth;
    gl_handle *current_handle;   /* borrowed, while its callback runs */
    unsigned long thread_id;     /* while running */

    int debug;
    double slow_callback_duration;
    int64_t batch_budget_ns;
    PyObject *exception_handler; /* NULL for the default */
    PyObject *task_factory;      /* NULL for none */
    PyObject *pending_exc;       /* SystemExit/KeyboardInterrupt to re-raise */
    PyObject *dict;
    PyObject *weakreflist;
} gl_loop;

/* Each concern's methods of the Loop type live in its own file and are
 * joined when the type is made (gl_loop_make_type). Add a table here. */
extern PyMethodDef gl_loop_core_methods[];   /* loop.c */

PyTypeObject *gl_loop_make_type(PyObject *module, gl_state *st);

static inline int64_t
gl_monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * GL_NS_PER_SEC + ts.tv_nsec;
}

int gl_loop_push_ready(gl_loop *loop, gl_handle *h);   /* takes a new ref */
void gl_loop_update_deadline(gl_loop *loop);
/* Runs rounds until the queue is empty, the budget is spent, stop() was
 * called or a callback raised SystemExit/KeyboardInterrupt. Needs the GIL. */
void gl_loop_run_batch(gl_loop *loop);
int gl_loop_check_not_closed(gl_loop *loop);
void gl_loop_report_error(gl_loop *loop, PyObject *message, PyObject *exc,
                          gl_handle *h);

/* ------------------------------------------------------------------ */
/* the GSource (source.c)                                             */

GSource *gl_source_new(gl_loop *loop);
void gl_source_wakeup(gl_loop *loop);

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
