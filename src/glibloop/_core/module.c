/* Module init and module state for glibloop._core. */
#include "internal.h"

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

static int
import_attr(PyObject **out, const char *modname, const char *attr)
{
    PyObject *mod = PyImport_ImportModule(modname);
    if (mod == NULL) {
        return -1;
    }
    *out = PyObject_GetAttrString(mod, attr);
    Py_DECREF(mod);
    return *out ? 0 : -1;
}

static int
intern(PyObject **out, const char *s)
{
    *out = PyUnicode_InternFromString(s);
    return *out ? 0 : -1;
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
    st->HandleType = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &gl_handle_spec, NULL);
    if (st->HandleType == NULL) {
        return -1;
    }
    st->TimerHandleType = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &gl_timer_spec, (PyObject *)st->HandleType);
    if (st->TimerHandleType == NULL) {
        return -1;
    }
    st->ThreadSafeHandleType = gl_handle_make_threadsafe_type(module);
    if (st->ThreadSafeHandleType == NULL && PyErr_Occurred()) {
        return -1;
    }
    st->LoopType = gl_loop_make_type(module, st);
    if (st->LoopType == NULL) {
        return -1;
    }
    if (PyModule_AddType(module, st->HandleType) < 0 ||
        PyModule_AddType(module, st->TimerHandleType) < 0 ||
        PyModule_AddType(module, st->LoopType) < 0) {
        return -1;
    }
    if (import_attr(&st->future_type, "asyncio", "Future") < 0 ||
        import_attr(&st->task_type, "asyncio", "Task") < 0 ||
        import_attr(&st->format_callback, "asyncio.format_helpers",
                    "_format_callback_source") < 0 ||
        import_attr(&st->extract_stack, "asyncio.format_helpers",
                    "extract_stack") < 0 ||
        import_attr(&st->get_running_loop, "asyncio.events",
                    "_get_running_loop") < 0 ||
        import_attr(&st->set_running_loop, "asyncio.events",
                    "_set_running_loop") < 0) {
        return -1;
    }
    if (import_attr(&st->current_task, "asyncio.tasks", "current_task") < 0) {
        return -1;
    }
#if PY_VERSION_HEX >= 0x030C0000
    if (import_attr(&st->swap_current_task, "asyncio.tasks",
                    "_swap_current_task") < 0) {
        return -1;
    }
#else
    if (import_attr(&st->current_tasks, "asyncio.tasks", "_current_tasks") < 0) {
        return -1;
    }
#endif
    if (intern(&st->str_call_exception_handler, "call_exception_handler") < 0 ||
        intern(&st->str_log_slow_callback, "_log_slow_callback") < 0 ||
        intern(&st->str_context, "context") < 0 ||
        intern(&st->str_loop, "loop") < 0 ||
        intern(&st->str_name, "name") < 0 ||
        intern(&st->str_message, "message") < 0 ||
        intern(&st->str_exception, "exception") < 0 ||
        intern(&st->str_handle, "handle") < 0 ||
        intern(&st->str_source_traceback, "source_traceback") < 0 ||
        intern(&st->str_set_name, "set_name") < 0) {
        return -1;
    }
    st->kwnames_loop = PyTuple_Pack(1, st->str_loop);
    if (st->kwnames_loop == NULL) {
        return -1;
    }
    if (gl_net_state_init(module, st) < 0 ||
        gl_proc_state_init(module, st) < 0) {
        return -1;
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
    Py_VISIT(st->LoopType);
    Py_VISIT(st->HandleType);
    Py_VISIT(st->TimerHandleType);
    Py_VISIT(st->ThreadSafeHandleType);
    Py_VISIT(st->future_type);
    Py_VISIT(st->task_type);
    Py_VISIT(st->format_callback);
    Py_VISIT(st->extract_stack);
    Py_VISIT(st->get_running_loop);
    Py_VISIT(st->set_running_loop);
    Py_VISIT(st->swap_current_task);
    Py_VISIT(st->current_task);
    Py_VISIT(st->current_tasks);
    int rc = gl_net_state_traverse(st, visit, arg);
    if (rc != 0) {
        return rc;
    }
    return gl_proc_state_traverse(st, visit, arg);
}

static int
module_clear(PyObject *module)
{
    gl_state *st = get_state(module);
    Py_CLEAR(st->LoopType);
    Py_CLEAR(st->HandleType);
    Py_CLEAR(st->TimerHandleType);
    Py_CLEAR(st->ThreadSafeHandleType);
    Py_CLEAR(st->future_type);
    Py_CLEAR(st->task_type);
    Py_CLEAR(st->format_callback);
    Py_CLEAR(st->extract_stack);
    Py_CLEAR(st->get_running_loop);
    Py_CLEAR(st->set_running_loop);
    Py_CLEAR(st->swap_current_task);
    Py_CLEAR(st->current_task);
    Py_CLEAR(st->current_tasks);
    Py_CLEAR(st->str_call_exception_handler);
    Py_CLEAR(st->str_log_slow_callback);
    Py_CLEAR(st->str_context);
    Py_CLEAR(st->str_loop);
    Py_CLEAR(st->str_name);
    Py_CLEAR(st->str_message);
    Py_CLEAR(st->str_exception);
    Py_CLEAR(st->str_handle);
    Py_CLEAR(st->str_source_traceback);
    Py_CLEAR(st->str_set_name);
    Py_CLEAR(st->kwnames_loop);
    gl_net_state_clear(st);
    gl_proc_state_clear(st);
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
