/* Module init and module state for glibloop._core: every heap type is made
 * here from the spec its file exports, every name interned and every
 * import done here, and the state is traversed and cleared in one place. */
#include "internal.h"

#include <stddef.h>
#include <structmember.h>

#ifndef GLIBLOOP_VERSION
#define GLIBLOOP_VERSION "0+unknown"
#endif

static gl_state *
get_state(PyObject *module)
{
    return (gl_state *)PyModule_GetState(module);
}

gl_state *
gl_module_state_of_type(PyTypeObject *type)
{
    PyObject *module = PyType_GetModuleByDef(type, &gl_module_def);
    return module ? get_state(module) : NULL;
}

/* What the module takes from asyncio and the socket module. */
static const struct {
    size_t offset;
    const char *module;
    const char *attr;
} imports[] = {
    {offsetof(gl_state, future_type), "asyncio", "Future"},
    {offsetof(gl_state, task_type), "asyncio", "Task"},
    {offsetof(gl_state, format_callback), "asyncio.format_helpers", "_format_callback_source"},
    {offsetof(gl_state, extract_stack), "asyncio.format_helpers", "extract_stack"},
    {offsetof(gl_state, get_running_loop), "asyncio.events", "_get_running_loop"},
    {offsetof(gl_state, set_running_loop), "asyncio.events", "_set_running_loop"},
    {offsetof(gl_state, current_task), "asyncio.tasks", "current_task"},
#if PY_VERSION_HEX >= 0x030C0000
    {offsetof(gl_state, swap_current_task), "asyncio.tasks", "_swap_current_task"},
#else
    {offsetof(gl_state, current_tasks), "asyncio.tasks", "_current_tasks"},
#endif
    {offsetof(gl_state, socket_type), "socket", "socket"},
    {offsetof(gl_state, check_ssl_socket), "asyncio.base_events", "_check_ssl_socket"},
    {offsetof(gl_state, buffered_protocol), "asyncio", "BufferedProtocol"},
    {offsetof(gl_state, transport_socket), "asyncio.trsock", "TransportSocket"},
    {offsetof(gl_state, set_result_unless_cancelled), "asyncio.futures",
     "_set_result_unless_cancelled"},
    {offsetof(gl_state, logger), "asyncio.log", "logger"},
};

/* The heap types but the Handle, TimerHandle and Loop types (made first,
 * in module_exec); a transport type's bases are asyncio.transports.<base>
 * (and <base2>), after checking that their slots are where
 * GL_TRANSPORT_HEAD puts them (transport.c). */
static const struct {
    size_t offset;
    PyType_Spec *spec;
    const char *base;
    const char *base2;
} types[] = {
    {offsetof(gl_state, SockWaitType), &gl_sockwait_spec, NULL, NULL},
    {offsetof(gl_state, ListenerType), &gl_listener_spec, NULL, NULL},
    {offsetof(gl_state, StreamType), &gl_stream_spec, "_FlowControlMixin", NULL},
    /* as asyncio's own datagram transport: a _FlowControlMixin too */
    {offsetof(gl_state, DatagramType), &gl_udp_spec, "_FlowControlMixin", "DatagramTransport"},
    {offsetof(gl_state, ReadPipeType), &gl_pipe_read_spec, "ReadTransport", NULL},
    {offsetof(gl_state, WritePipeType), &gl_pipe_write_spec, "_FlowControlMixin", NULL},
    {offsetof(gl_state, ChildWatchType), &gl_process_child_spec, NULL, NULL},
};

/* Each concern's Loop methods live in its own file; the Loop type gets
 * them all. */
static PyMethodDef *const loop_method_tables[] = {
    gl_loop_core_methods,
    gl_source_methods,
    gl_tasks_methods,
    gl_poll_methods,
    gl_signals_methods,
    gl_sockops_methods,
    gl_stream_methods,
    gl_server_methods,
    gl_udp_methods,
    gl_pipe_methods,
    gl_process_methods,
};

#define GL_SLOT(st, offset) ((PyObject **)((char *)(st) + (offset)))

static int
add_type(PyObject *module, PyTypeObject **slot, PyType_Spec *spec, PyObject *bases)
{
    *slot = (PyTypeObject *)PyType_FromModuleAndSpec(module, spec, bases);
    return *slot ? PyModule_AddType(module, *slot) : -1;
}

/* The Loop's spec with every file's methods joined into one array (in the
 * module state, which outlives the type whose descriptors point into it). */
static int
add_loop_type(PyObject *module, gl_state *st)
{
    size_t n = 0;
    size_t ntables = sizeof(loop_method_tables) / sizeof(loop_method_tables[0]);
    for (size_t t = 0; t < ntables; t++) {
        for (PyMethodDef *m = loop_method_tables[t]; m->ml_name; m++) {
            n++;
        }
    }
    PyMethodDef *all = PyMem_Calloc(n + 1, sizeof(PyMethodDef));
    if (all == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    size_t i = 0;
    for (size_t t = 0; t < ntables; t++) {
        for (PyMethodDef *m = loop_method_tables[t]; m->ml_name; m++) {
            all[i++] = *m;
        }
    }
    st->loop_methods = all;
    for (PyType_Slot *slot = gl_loop_spec.slots; slot->slot; slot++) {
        if (slot->slot == Py_tp_methods) {
            slot->pfunc = all;
        }
    }
    return add_type(module, &st->LoopType, &gl_loop_spec, NULL);
}

size_t
gl_module_slot_offset(PyObject *base, const char *name)
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

static int
module_exec(PyObject *module)
{
    gl_state *st = get_state(module);
    if (add_type(module, &st->HandleType, &gl_handle_spec, NULL) < 0 ||
        add_type(module, &st->TimerHandleType, &gl_timer_spec,
                 (PyObject *)st->HandleType) < 0 ||
        add_loop_type(module, st) < 0) {
        return -1;
    }
    st->ThreadSafeHandleType = gl_handle_make_threadsafe_type(module);
    if (st->ThreadSafeHandleType == NULL && PyErr_Occurred()) {
        return -1;
    }
    for (size_t i = 0; i < sizeof(imports) / sizeof(imports[0]); i++) {
        PyObject *mod = PyImport_ImportModule(imports[i].module);
        if (mod == NULL) {
            return -1;
        }
        PyObject *attr = PyObject_GetAttrString(mod, imports[i].attr);
        Py_DECREF(mod);
        if (attr == NULL) {
            return -1;
        }
        *GL_SLOT(st, imports[i].offset) = attr;
    }
#define GL_INTERN(name) \
    if ((st->s_##name = PyUnicode_InternFromString(#name)) == NULL) { \
        return -1; \
    }
    GL_STRINGS(GL_INTERN)
#undef GL_INTERN
    st->kwnames_loop = PyTuple_Pack(1, st->s_loop);
    if (st->kwnames_loop == NULL || gl_process_module_init() < 0) {
        return -1;
    }
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        PyObject *bases = NULL;
        if (types[i].base != NULL) {
            bases = gl_transport_bases(types[i].base, types[i].base2);
            if (bases == NULL) {
                return -1;
            }
        }
        int rc = add_type(module, (PyTypeObject **)GL_SLOT(st, types[i].offset),
                          types[i].spec, bases);
        Py_XDECREF(bases);
        if (rc < 0) {
            return -1;
        }
    }
    char glib_version[64];
    g_snprintf(glib_version, sizeof(glib_version), "%u.%u.%u",
               glib_major_version, glib_minor_version, glib_micro_version);
    if (PyModule_AddStringConstant(module, "__version__", GLIBLOOP_VERSION) < 0 ||
        PyModule_AddStringConstant(module, "GLIB_VERSION", glib_version) < 0) {
        return -1;
    }
    return 0;
}

static int
module_traverse(PyObject *module, visitproc visit, void *arg)
{
    gl_state *st = get_state(module);
#define GL_VISIT(name) Py_VISIT(st->name);
    GL_STATE_OBJECTS(GL_VISIT)
#undef GL_VISIT
    return 0;
}

static int
module_clear(PyObject *module)
{
    gl_state *st = get_state(module);
#define GL_CLEAR(name) Py_CLEAR(st->name);
    GL_STATE_OBJECTS(GL_CLEAR)
#undef GL_CLEAR
#define GL_CLEAR_STRING(name) Py_CLEAR(st->s_##name);
    GL_STRINGS(GL_CLEAR_STRING)
#undef GL_CLEAR_STRING
    return 0;
}

static void
module_free(void *module)
{
    module_clear((PyObject *)module);
    gl_state *st = get_state((PyObject *)module);
    PyMem_Free(st->loop_methods);
    st->loop_methods = NULL;
}

static PyMethodDef module_methods[] = {
    {"_signal_handler", (PyCFunction)(void (*)(void))gl_signals_py_handler,
     METH_FASTCALL,
     PyDoc_STR("_signal_handler(signum, frame)\n--\n\n"
               "The Python-level handler of signals with a loop handler:\n"
               "queues the Handle of the loop that added it.")},
    {"_use_pidfd", (PyCFunction)gl_process_use_pidfd, METH_O,
     PyDoc_STR("_use_pidfd(flag) -> previous flag\n--\n\n"
               "Whether new child watches use pidfds (tests turn it off to\n"
               "exercise the fallback on GLib's child watch).")},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
#if PY_VERSION_HEX >= 0x030C0000
    /* GLib callbacks come back through PyGILState, which knows only the
     * main interpreter. */
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
    {0, NULL},
};

PyDoc_STRVAR(module_doc,
"The C core of glibloop: an asyncio event loop on one GLib GSource.");

PyModuleDef gl_module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "glibloop._core",
    .m_doc = module_doc,
    .m_size = sizeof(gl_state),
    .m_methods = module_methods,
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC
PyInit__core(void)
{
    return PyModuleDef_Init(&gl_module_def);
}
