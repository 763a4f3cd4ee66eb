/* The timer heap: a binary min-heap of TimerHandles keyed on (deadline,
 * sequence).  Cancelled timers stay in the heap until they reach the top
 * or until they are more than half of it, when the heap is rebuilt. */
#include "internal.h"

static inline int
timer_before(const gl_timer *a, const gl_timer *b)
{
    if (a->when_ns != b->when_ns) {
        return a->when_ns < b->when_ns;
    }
    return a->seq < b->seq;
}

static inline void
heap_place(gl_timers *t, Py_ssize_t i, gl_timer *timer)
{
    t->items[i] = timer;
    timer->heap_index = i;
}

static void
sift_up(gl_timers *t, Py_ssize_t i)
{
    gl_timer *moving = t->items[i];
    while (i > 0) {
        Py_ssize_t parent = (i - 1) / 2;
        if (!timer_before(moving, t->items[parent])) {
            break;
        }
        heap_place(t, i, t->items[parent]);
        i = parent;
    }
    heap_place(t, i, moving);
}

static void
sift_down(gl_timers *t, Py_ssize_t i)
{
    gl_timer *moving = t->items[i];
    Py_ssize_t n = t->size;
    for (;;) {
        Py_ssize_t child = 2 * i + 1;
        if (child >= n) {
            break;
        }
        if (child + 1 < n && timer_before(t->items[child + 1], t->items[child])) {
            child++;
        }
        if (!timer_before(t->items[child], moving)) {
            break;
        }
        heap_place(t, i, t->items[child]);
        i = child;
    }
    heap_place(t, i, moving);
}

int
gl_timers_push(gl_timers *t, gl_timer *timer)
{
    if (t->size == t->capacity) {
        Py_ssize_t cap = t->capacity ? t->capacity * 2 : 64;
        gl_timer **items = PyMem_Realloc(t->items, (size_t)cap * sizeof(*items));
        if (items == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        t->items = items;
        t->capacity = cap;
    }
    Py_INCREF(timer);
    timer->seq = t->next_seq++;
    timer->scheduled = 1;
    t->items[t->size] = timer;
    t->size++;
    sift_up(t, t->size - 1);
    return 0;
}

gl_timer *
gl_timers_peek(gl_timers *t)
{
    return t->size ? t->items[0] : NULL;
}

gl_timer *
gl_timers_pop(gl_timers *t)
{
    if (t->size == 0) {
        return NULL;
    }
    gl_timer *top = t->items[0];
    t->size--;
    if (t->size > 0) {
        heap_place(t, 0, t->items[t->size]);
        sift_down(t, 0);
    }
    top->heap_index = -1;
    top->scheduled = 0;
    if (top->base.cancelled && t->cancelled > 0) {
        t->cancelled--;
    }
    return top;
}

void
gl_timers_compact(gl_timers *t)
{
    /* Drop every cancelled timer, then heapify bottom-up: O(n). The
     * references are released after the heap is consistent again, since a
     * finalizer may schedule new timers. */
    Py_ssize_t kept = 0, dropped = 0;
    gl_timer **garbage = PyMem_Malloc(sizeof(gl_timer *) * (size_t)(t->size ? t->size : 1));
    if (garbage == NULL) {
        return;  /* compaction is an optimisation; try again later */
    }
    for (Py_ssize_t i = 0; i < t->size; i++) {
        gl_timer *timer = t->items[i];
        if (timer->base.cancelled) {
            timer->heap_index = -1;
            timer->scheduled = 0;
            garbage[dropped++] = timer;
        }
        else {
            t->items[kept++] = timer;
        }
    }
    t->size = kept;
    t->cancelled = 0;
    for (Py_ssize_t i = kept / 2 - 1; i >= 0; i--) {
        sift_down(t, i);
    }
    for (Py_ssize_t i = 0; i < kept; i++) {
        t->items[i]->heap_index = i;
    }
    for (Py_ssize_t i = 0; i < dropped; i++) {
        gl_handle_release(&garbage[i]->base);
    }
    PyMem_Free(garbage);
}

void
gl_timers_clear(gl_timers *t)
{
    gl_timer **items = t->items;
    Py_ssize_t size = t->size;
    t->items = NULL;
    t->size = 0;
    t->capacity = 0;
    t->cancelled = 0;
    /* Unschedule all first: a finalizer run by a release may cancel a
     * later timer, which must not count as cancelled in the emptied heap. */
    for (Py_ssize_t i = 0; i < size; i++) {
        items[i]->heap_index = -1;
        items[i]->scheduled = 0;
    }
    for (Py_ssize_t i = 0; i < size; i++) {
        gl_handle_release(&items[i]->base);
    }
    PyMem_Free(items);
}

int
gl_timers_traverse(gl_timers *t, visitproc visit, void *arg)
{
    for (Py_ssize_t i = 0; i < t->size; i++) {
        int rc = gl_handle_traverse_queued(&t->items[i]->base, visit, arg);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}
