/* Child processes: a ChildWatch tells a callback the exit status of one
 * child of this process.
 *
 * The child is watched with a pidfd (pidfd_open, Linux 5.3) in the loop's
 * epoll set and reaped with waitid(P_PIDFD) when it turns readable.  No
 * SIGCHLD handler and no thread are involved, and only our own children are
 * reaped: GLib's child watches (GLib.child_watch_add, Gio.Subprocess) and
 * anyone else waiting for their own pids are left alone.  The status goes
 * to the callback straight from the epoll event; None means that someone
 * else reaped the child first (Popen.poll() in asyncio's transport close(),
 * or a waitpid(-1) reaper such as asyncio's FastChildWatcher), and the
 * Python side then takes the Popen's returncode or reports 255 as asyncio
 * does.
 *
 * Without pidfds (an old kernel, a seccomp filter, no fds left) the
 * fallback is GLib's own child watch source on the loop's context: GLib
 * waits for that pid only, so it still coexists with GLib's other child
 * watches; GLib then owns SIGCHLD (on GLib < 2.78), which is its way.
 *
 * A loop closed while its children still run hands them to the reaper: one
 * GLib thread, started on first use, that waits for them and reaps them so
 * that none is left a zombie.  Their callbacks are not called (the loop is
 * gone); asyncio's transports report them as still running.
 *
 * The callback runs in the context that was current when the watch began
 * (a copy of it), as a transport's protocol calls do. */
#include "internal.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <structmember.h>
#include <glib-unix.h>

/* waitid()'s idtype for a pidfd; glibc before 2.36 has no name for it. */
#define GL_P_PIDFD ((idtype_t)3)

typedef struct gl_child {
    PyObject_HEAD
    gl_loop *loop;               /* strong, until the watch ends */
    PyObject *callback;          /* NULL once called or the watch ended */
    PyObject *context;           /* the callback runs in it */
    gl_state *st;
    struct gl_child *next;       /* in st->children while linked */
    struct gl_child *prev;
    GSource *gsource;            /* the fallback's child watch, or NULL */
    PyObject *weakreflist;
    pid_t pid;
    int pidfd;                   /* -1 when none */
    int watching;                /* pidfd in the loop's epoll set */
    int linked;
    int returncode;              /* valid once exited */
    int exited;
    int orphaned;                /* handed to the reaper: not ours any more */
} gl_child;

/* ------------------------------------------------------------------ */
/* exit statuses                                                      */

static int
pidfd_open_child(pid_t pid)
{
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    (void)pid;
    errno = ENOSYS;
    return -1;
#endif
}

/* As subprocess and asyncio: the exit code, or -signal. */
static int
wait_status_to_returncode(int status)
{
    if (WIFEXITED(status)) {
        return WEXITSTATUS(status);
    }
    if (WIFSIGNALED(status)) {
        return -WTERMSIG(status);
    }
    return status;
}

/* Reaps the child of pidfd (pid for kernels whose waitid() does not know
 * P_PIDFD yet).  1: reaped, *returncode set; 0: still running; -1: already
 * reaped by someone else (ECHILD). */
static int
reap(int pidfd, pid_t pid, int *returncode)
{
    siginfo_t info;
    memset(&info, 0, sizeof(info));
    int rc;
    do {
        rc = waitid(GL_P_PIDFD, (id_t)pidfd, &info, WEXITED | WNOHANG);
    } while (rc < 0 && errno == EINTR);
    if (rc < 0 && errno == EINVAL) {
        /* Linux 5.3: the pidfd keeps the zombie's pid ours until reaped,
         * so waiting by pid is exact. */
        int status;
        pid_t r;
        do {
            r = waitpid(pid, &status, WNOHANG);
        } while (r < 0 && errno == EINTR);
        if (r == 0) {
            return 0;
        }
        if (r < 0) {
            return -1;
        }
        *returncode = wait_status_to_returncode(status);
        return 1;
    }
    if (rc < 0) {
        return -1;
    }
    if (info.si_pid == 0) {
        return 0;
    }
    *returncode = info.si_code == CLD_EXITED ? info.si_status : -info.si_status;
    return 1;
}

/* ------------------------------------------------------------------ */
/* the reaper of orphaned children                                    */

static GMutex reaper_lock;
static GMainContext *reaper_ctx;     /* NULL until the first orphan */
static int reaper_atfork_set;

static gpointer
reaper_main(gpointer data)
{
    GMainContext *ctx = data;
    for (;;) {
        g_main_context_iteration(ctx, TRUE);
    }
    return NULL;
}

static void reaper_prepare(void) { g_mutex_lock(&reaper_lock); }
static void reaper_parent(void) { g_mutex_unlock(&reaper_lock); }

static void
reaper_child(void)
{
    /* A forked child has no reaper thread, and its parent's orphans are
     * not its children: start afresh (the old context is abandoned). */
    reaper_ctx = NULL;
    g_mutex_unlock(&reaper_lock);
}

/* The reaper's context, with its thread started; NULL if no thread could
 * be started. */
static GMainContext *
reaper_context(void)
{
    g_mutex_lock(&reaper_lock);
    if (reaper_ctx == NULL) {
        GMainContext *ctx = g_main_context_new();
        GThread *thread = g_thread_try_new("glibloop-reaper", reaper_main,
                                           g_main_context_ref(ctx), NULL);
        if (thread == NULL) {
            g_main_context_unref(ctx);  /* the thread's reference */
            g_main_context_unref(ctx);
            ctx = NULL;
        }
        else {
            g_thread_unref(thread);  /* it runs for the life of the process */
        }
        reaper_ctx = ctx;
    }
    GMainContext *ctx = reaper_ctx;
    g_mutex_unlock(&reaper_lock);
    return ctx;
}

typedef struct {
    int pidfd;
    pid_t pid;
} gl_orphan;

static gboolean
orphan_ready(gint fd, GIOCondition Py_UNUSED(cond), gpointer data)
{
    gl_orphan *o = data;
    int returncode;
    if (reap(fd, o->pid, &returncode) == 0) {
        return G_SOURCE_CONTINUE;
    }
    return G_SOURCE_REMOVE;
}

static void
orphan_free(gpointer data)
{
    gl_orphan *o = data;
    close(o->pidfd);
    g_free(o);
}

static void
orphan_exited(GPid Py_UNUSED(pid), gint Py_UNUSED(status),
              gpointer Py_UNUSED(data))
{
    /* GLib reaped it: nothing else to do. */
}

/* Hands a child the loop no longer watches to the reaper: its pidfd
 * (whose ownership moves) or, without one, its pid for GLib's child
 * watch.  Needs no GIL. */
static int
reaper_adopt(int pidfd, pid_t pid)
{
    GMainContext *ctx = reaper_context();
    if (ctx == NULL) {
        return -1;
    }
    GSource *src;
    if (pidfd >= 0) {
        gl_orphan *o = g_new(gl_orphan, 1);
        o->pidfd = pidfd;
        o->pid = pid;
        src = g_unix_fd_source_new(pidfd, G_IO_IN);
        g_source_set_callback(src, (GSourceFunc)(void (*)(void))orphan_ready,
                              o, orphan_free);
    }
    else {
        src = g_child_watch_source_new(pid);
        g_source_set_callback(src, (GSourceFunc)(void (*)(void))orphan_exited,
                              NULL, NULL);
    }
    g_source_set_name(src, "glibloop orphan reaper");
    g_source_attach(src, ctx);
    g_source_unref(src);
    return 0;
}

/* ------------------------------------------------------------------ */
/* ChildWatch                                                         */

static void
link_child(gl_child *c)
{
    gl_state *ps = c->st;
    c->prev = NULL;
    c->next = ps->children;
    if (ps->children != NULL) {
        ps->children->prev = c;
    }
    ps->children = c;
    c->linked = 1;
}

static void
unlink_child(gl_child *c)
{
    if (!c->linked) {
        return;
    }
    gl_state *ps = c->st;
    if (c->prev != NULL) {
        c->prev->next = c->next;
    }
    else {
        ps->children = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    c->next = c->prev = NULL;
    c->linked = 0;
}

/* Stops watching.  orphan: the child may still run; hand it to the
 * reaper so that it does not stay a zombie. */
static void
stop_watching(gl_child *c, int orphan)
{
    unlink_child(c);
    if (c->watching) {
        c->watching = 0;
        if (c->loop != NULL) {
            gl_poll_unwatch(&c->loop->poll, c->pidfd, (PyObject *)c);
        }
    }
    if (c->gsource != NULL) {
        GSource *src = c->gsource;
        c->gsource = NULL;
        g_source_destroy(src);
        g_source_unref(src);
    }
    if (orphan && !c->exited && !c->orphaned) {
        c->orphaned = 1;
        int fd = c->pidfd;
        c->pidfd = -1;
        if (reaper_adopt(fd, c->pid) == 0) {
            return;
        }
        c->pidfd = fd;  /* no thread: the zombie is Popen's to reap */
    }
    if (c->pidfd >= 0) {
        close(c->pidfd);
        c->pidfd = -1;
    }
}

/* The child exited (returncode) or was reaped elsewhere (NULL): end the
 * watch and call the callback.  -1 only for SystemExit/KeyboardInterrupt,
 * which are left set. */
static int
deliver(gl_child *c, PyObject *returncode)
{
    gl_loop *loop = c->loop ? (gl_loop *)Py_NewRef(c->loop) : NULL;
    PyObject *callback = c->callback;
    c->callback = NULL;
    stop_watching(c, 0);
    int rc = 0;
    if (callback != NULL && loop != NULL && !loop->closed) {
        PyObject *r = PyObject_CallOneArg(callback, returncode ? returncode : Py_None);
        if (r == NULL) {
            PyObject *exc = gl_err_fetch();
            rc = gl_loop_report_error(loop, exc, NULL, NULL, NULL, NULL,
                                      "Exception in callback of a child process watch");
            Py_XDECREF(exc);
        }
        Py_XDECREF(r);
    }
    Py_XDECREF(callback);
    Py_XDECREF(loop);
    return rc;
}

static int
child_on_event(gl_loop *loop, PyObject *owner, uint32_t Py_UNUSED(ev))
{
    gl_child *c = (gl_child *)owner;
    int returncode;
    int r = reap(c->pidfd, c->pid, &returncode);
    if (r == 0) {
        return 0;  /* not yet: a spurious wake-up */
    }
    PyObject *rc_obj = NULL;
    if (r > 0) {
        c->exited = 1;
        c->returncode = returncode;
        rc_obj = PyLong_FromLong(returncode);
        if (rc_obj == NULL) {
            PyErr_WriteUnraisable(owner);
        }
    }
    else {
        c->exited = 1;  /* gone: nothing is left to reap */
        c->returncode = 255;
    }
    PyObject *context = Py_NewRef(c->context);  /* deliver() may drop c's */
    gl_sched_frame f;
    gl_sched_enter(loop, context, &f);
    int rc = gl_sched_leave(loop, &f, deliver(c, rc_obj));
    Py_DECREF(context);
    Py_XDECREF(rc_obj);
    return rc;
}

/* The fallback's GLib child watch fired, in GLib's dispatch of the loop's
 * context: queue the callback for the loop's next round. */
static void
child_glib_exited(GPid Py_UNUSED(pid), gint status, gpointer data)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    gl_child *c = data;
    c->exited = 1;
    c->returncode = wait_status_to_returncode(status);
    /* The source ends after this call; forget it without destroying it
     * from inside its own dispatch. */
    if (c->gsource != NULL) {
        g_source_unref(c->gsource);
        c->gsource = NULL;
    }
    PyObject *callback = c->callback;
    c->callback = NULL;
    unlink_child(c);
    if (callback != NULL && c->loop != NULL && !c->loop->closed) {
        PyObject *args = Py_BuildValue("(i)", c->returncode);
        if (args == NULL ||
            gl_loop_call_soon(c->loop, callback, args, c->context) < 0) {
            PyErr_WriteUnraisable((PyObject *)c);
        }
        Py_XDECREF(args);
    }
    Py_XDECREF(callback);
    PyGILState_Release(gil);
}

static void
child_glib_release(gpointer data)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    Py_DECREF((PyObject *)data);
    PyGILState_Release(gil);
}

static int
watch_with_glib(gl_child *c)
{
    GSource *src = g_child_watch_source_new(c->pid);
    g_source_set_callback(src, (GSourceFunc)(void (*)(void))child_glib_exited,
                          Py_NewRef((PyObject *)c), child_glib_release);
    g_source_set_name(src, "glibloop child watch");
    c->gsource = src;
    g_source_attach(src, c->loop->context);
    return 0;
}

static PyObject *
loop_watch_child(gl_loop *loop, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_watch_child(pid, callback) takes 2 arguments");
        return NULL;
    }
    long pid = PyLong_AsLong(args[0]);
    if (pid == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (pid <= 0) {
        PyErr_Format(PyExc_ValueError, "invalid pid %ld", pid);
        return NULL;
    }
    if (!PyCallable_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "callback must be callable");
        return NULL;
    }
    if (gl_loop_check_not_closed(loop) < 0) {
        return NULL;
    }
    gl_state *st = loop->st;
    gl_child *c = (gl_child *)st->ChildWatchType->tp_alloc(
        st->ChildWatchType, 0);
    if (c == NULL) {
        return NULL;
    }
    c->st = st;
    c->loop = (gl_loop *)Py_NewRef(loop);
    c->callback = Py_NewRef(args[1]);
    c->context = PyContext_CopyCurrent();
    if (c->context == NULL) {
        Py_DECREF(c);
        return NULL;
    }
    c->pid = (pid_t)pid;
    c->pidfd = st->no_pidfd ? (errno = ENOSYS, -1) : pidfd_open_child(c->pid);
    if (c->pidfd >= 0) {
        if (gl_poll_watch(&loop->poll, c->pidfd, (PyObject *)c, child_on_event,
                          EPOLLIN, GL_WATCH_OWNED | GL_WATCH_UNHELD) < 0) {
            Py_DECREF(c);
            return NULL;
        }
        c->watching = 1;
    }
    else if (errno == ESRCH) {
        /* Reaped already by someone else: say so in the next round. */
        c->exited = 1;
        c->returncode = 255;
        PyObject *cbargs = PyTuple_Pack(1, Py_None);
        int rc = cbargs ? gl_loop_call_soon(loop, c->callback, cbargs, c->context) : -1;
        Py_XDECREF(cbargs);
        Py_CLEAR(c->callback);
        if (rc < 0) {
            Py_DECREF(c);
            return NULL;
        }
        return (PyObject *)c;
    }
    else if (watch_with_glib(c) < 0) {
        Py_DECREF(c);
        return NULL;
    }
    link_child(c);
    return (PyObject *)c;
}

/* Before the loop closes: children it still waits for go to the reaper. */
static PyObject *
loop_orphan_children(gl_loop *loop, PyObject *Py_UNUSED(ignored))
{
    gl_child *c = loop->st->children;
    while (c != NULL) {
        gl_child *next = c->next;
        if (c->loop == loop) {
            Py_INCREF(c);
            PyObject *callback = c->callback;
            c->callback = NULL;
            stop_watching(c, 1);
            Py_XDECREF(callback);
            Py_DECREF(c);
            /* The list may have changed under the DECREFs: restart. */
            next = loop->st->children;
        }
        c = next;
    }
    Py_RETURN_NONE;
}

PyMethodDef gl_process_methods[] = {
    {"_watch_child", (PyCFunction)(void (*)(void))loop_watch_child, METH_FASTCALL,
     PyDoc_STR("_watch_child(pid, callback)\n--\n\n"
               "Call callback(returncode) when the child pid exits, or\n"
               "callback(None) if someone else reaped it; return the ChildWatch.")},
    {"_orphan_children", (PyCFunction)loop_orphan_children, METH_NOARGS,
     PyDoc_STR("Hand the children the loop still waits for to the reaper\n"
               "thread (the loop is closing).")},
    {NULL, NULL, 0, NULL},
};

PyObject *
gl_process_use_pidfd(PyObject *module, PyObject *flag)
{
    int on = PyObject_IsTrue(flag);
    if (on < 0) {
        return NULL;
    }
    gl_state *st = PyModule_GetState(module);
    int was = !st->no_pidfd;
    st->no_pidfd = !on;
    return PyBool_FromLong(was);
}

/* ------------------------------------------------------------------ */
/* the type                                                           */

static PyObject *
child_cancel(gl_child *c, PyObject *Py_UNUSED(ignored))
{
    PyObject *callback = c->callback;
    c->callback = NULL;
    stop_watching(c, 1);
    Py_XDECREF(callback);
    Py_RETURN_NONE;
}

static PyObject *
child_get_active(gl_child *c, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(c->linked);
}

static PyObject *
child_get_returncode(gl_child *c, void *Py_UNUSED(closure))
{
    if (!c->exited) {
        Py_RETURN_NONE;
    }
    return PyLong_FromLong(c->returncode);
}

static PyObject *
child_repr(gl_child *c)
{
    return PyUnicode_FromFormat("<%s pid=%d %s%s>", _PyType_Name(Py_TYPE(c)),
                                (int)c->pid,
                                c->pidfd >= 0 ? "pidfd" : c->gsource ? "glib" : "",
                                c->linked ? " active" : "");
}

static int
child_traverse(gl_child *c, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(c));
    Py_VISIT(c->loop);
    Py_VISIT(c->callback);
    Py_VISIT(c->context);
    return 0;
}

static int
child_clear(gl_child *c)
{
    Py_CLEAR(c->callback);
    Py_CLEAR(c->context);
    return 0;
}

static void
child_dealloc(gl_child *c)
{
    PyTypeObject *tp = Py_TYPE(c);
    PyObject_GC_UnTrack(c);
    if (c->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)c);
    }
    /* Only a loop torn down without close() drops a live watch. */
    stop_watching(c, 1);
    Py_CLEAR(c->callback);
    Py_CLEAR(c->context);
    Py_CLEAR(c->loop);
    tp->tp_free(c);
    Py_DECREF(tp);
}

static PyGetSetDef child_getset[] = {
    {"active", (getter)child_get_active, NULL,
     PyDoc_STR("True while the child is watched."), NULL},
    {"returncode", (getter)child_get_returncode, NULL,
     PyDoc_STR("The exit status once reaped (255 if someone else reaped it)."),
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef child_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(gl_child, weakreflist), READONLY, NULL},
    {"pid", T_INT, offsetof(gl_child, pid), READONLY, NULL},
    {"pidfd", T_INT, offsetof(gl_child, pidfd), READONLY,
     PyDoc_STR("The pidfd in the loop's epoll set, -1 without one.")},
    {NULL, 0, 0, 0, NULL},
};

/* gl_poll_check_not_owned() asks an fd's owner whether it is closing. */
static PyObject *
child_is_closing(gl_child *c, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(!c->linked);
}

static PyMethodDef child_methods[] = {
    {"cancel", (PyCFunction)child_cancel, METH_NOARGS,
     PyDoc_STR("Stop watching without calling back; the reaper thread reaps\n"
               "the child when it exits.")},
    {"is_closing", (PyCFunction)child_is_closing, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(child_doc,
"The watch of one child process (see loop._watch_child).");

static PyType_Slot child_slots[] = {
    {Py_tp_doc, (void *)child_doc},
    {Py_tp_dealloc, child_dealloc},
    {Py_tp_traverse, child_traverse},
    {Py_tp_clear, child_clear},
    {Py_tp_repr, child_repr},
    {Py_tp_methods, child_methods},
    {Py_tp_getset, child_getset},
    {Py_tp_members, child_members},
    {0, NULL},
};

PyType_Spec gl_process_child_spec = {
    .name = "glibloop._core.ChildWatch",
    .basicsize = sizeof(gl_child),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = child_slots,
};

/* ------------------------------------------------------------------ */
/* module init                                                        */

int
gl_process_module_init(void)
{
    if (!reaper_atfork_set) {
        if (pthread_atfork(reaper_prepare, reaper_parent, reaper_child) != 0) {
            PyErr_SetString(PyExc_RuntimeError, "pthread_atfork failed");
            return -1;
        }
        reaper_atfork_set = 1;
    }
    return 0;
}
