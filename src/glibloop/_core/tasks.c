/* The Loop's futures and tasks: create_future(), create_task() and the
 * task factory (asyncio's rules for each Python version). */
#include "internal.h"

static PyObject *
loop_create_future(gl_loop *loop, PyObject *Py_UNUSED(ignored))
{
    return gl_loop_future_new(loop);
}

static PyObject *
create_task_with_factory(gl_loop *loop, PyObject *coro, PyObject *kwargs)
{
    PyObject *args = PyTuple_Pack(2, (PyObject *)loop, coro);
    if (args == NULL) {
        return NULL;
    }
#if PY_VERSION_HEX >= 0x030E0000
    PyObject *task = PyObject_Call(loop->task_factory, args, kwargs);
    Py_DECREF(args);
    return task;
#else
    /* Before 3.14 a factory gets the context only when one was given, and
     * the name is set on the task it returns. */
    gl_state *st = loop->st;
    PyObject *name = NULL, *context = NULL, *factory_kw = NULL;
    if (kwargs != NULL) {
        name = PyDict_GetItemWithError(kwargs, st->s_name);
        context = PyDict_GetItemWithError(kwargs, st->s_context);
        if (PyErr_Occurred()) {
            Py_DECREF(args);
            return NULL;
        }
    }
    if (context != NULL && context != Py_None) {
        factory_kw = PyDict_New();
        if (factory_kw == NULL ||
            PyDict_SetItem(factory_kw, st->s_context, context) < 0) {
            Py_XDECREF(factory_kw);
            Py_DECREF(args);
            return NULL;
        }
    }
    PyObject *task = PyObject_Call(loop->task_factory, args, factory_kw);
    Py_DECREF(args);
    Py_XDECREF(factory_kw);
    if (task != NULL && name != NULL && name != Py_None) {
        PyObject *r = PyObject_CallMethodOneArg(task, st->s_set_name, name);
        if (r == NULL) {
            Py_CLEAR(task);
        }
        Py_XDECREF(r);
    }
    return task;
#endif
}

static PyObject *
loop_create_task(gl_loop *loop, PyObject *args, PyObject *kwargs)
{
    /* create_task(coro, **kwargs): coro may come by keyword too.  kw is our
     * own copy of the keywords (without coro), passed on to the task. */
    PyObject *kw = kwargs ? PyDict_Copy(kwargs) : PyDict_New();
    if (kw == NULL) {
        return NULL;
    }
    PyObject *coro = NULL;
    if (PyTuple_GET_SIZE(args) == 1) {
        coro = Py_NewRef(PyTuple_GET_ITEM(args, 0));
    }
    else if (PyTuple_GET_SIZE(args) == 0) {
        coro = PyDict_GetItemString(kw, "coro");
        if (coro != NULL) {
            Py_INCREF(coro);
            if (PyDict_DelItemString(kw, "coro") < 0) {
                goto error;
            }
        }
    }
    if (coro == NULL) {
        PyErr_SetString(PyExc_TypeError,
                        "create_task() takes one positional argument: 'coro'");
        goto error;
    }
    if (gl_loop_check_not_closed(loop) < 0) {
        goto error;
    }
    PyObject *task = NULL;
    if (loop->task_factory != NULL) {
        task = create_task_with_factory(loop, coro, kw);
    }
    else {
        PyObject *targs = PyTuple_Pack(1, coro);
        if (targs != NULL &&
            PyDict_SetItem(kw, loop->st->s_loop, (PyObject *)loop) == 0) {
            task = PyObject_Call(loop->st->task_type, targs, kw);
        }
        Py_XDECREF(targs);
    }
    Py_DECREF(coro);
    Py_DECREF(kw);
    return task;
error:
    Py_XDECREF(coro);
    Py_DECREF(kw);
    return NULL;
}

static PyObject *
loop_set_task_factory(gl_loop *loop, PyObject *factory)
{
    if (factory != Py_None && !PyCallable_Check(factory)) {
        PyErr_SetString(PyExc_TypeError,
                        "task factory must be a callable or None");
        return NULL;
    }
    Py_XSETREF(loop->task_factory,
               factory == Py_None ? NULL : Py_NewRef(factory));
    Py_RETURN_NONE;
}

static PyObject *
loop_get_task_factory(gl_loop *loop, PyObject *Py_UNUSED(ignored))
{
    return Py_NewRef(loop->task_factory ? loop->task_factory : Py_None);
}

PyMethodDef gl_tasks_methods[] = {
    {"create_future", (PyCFunction)loop_create_future, METH_NOARGS,
     PyDoc_STR("Create an asyncio.Future attached to the loop.")},
    {"create_task", (PyCFunction)(void (*)(void))loop_create_task,
     METH_VARARGS | METH_KEYWORDS,
     PyDoc_STR("create_task(coro, *, name=None, context=None)\n--\n\n"
               "Schedule the execution of a coroutine; return a Task.")},
    {"set_task_factory", (PyCFunction)loop_set_task_factory, METH_O, NULL},
    {"get_task_factory", (PyCFunction)loop_get_task_factory, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};
