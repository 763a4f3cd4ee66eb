/* The timer heap: a 4-ary min-heap keyed on (deadline, sequence).
 *
 * Each slot carries its key beside the handle pointer, so ordering the heap
 * reads one array and never the TimerHandles themselves: with tens of
 * thousands of timers the handles are scattered over the Python heap, and a
 * comparison that followed the pointer would miss the cache at every level.
 * Four children per node halve the depth of a binary heap (a push compares
 * once per level); a pop moves the hole down to a leaf along the smallest
 * children and puts the last slot back in from there, which saves the
 * comparison with it at every level on the way down.
 *
 * Cancelled timers stay in the heap until they reach the top or until they
 * are more than half of it, when the heap is rebuilt. */
#include "internal.h"

#define ARITY 4

static inline int
slot_before(const gl_timer_slot *a, const gl_timer_slot *b)
{
    if (a->when_ns != b->when_ns) {
        return a->when_ns < b->when_ns;
    }
    return a->seq < b->seq;
}

/* Puts `moving` at the hole `i` or above it. */
static void
sift_up(gl_timers *t, Py_ssize_t i, gl_timer_slot moving)
{
    gl_timer_slot *items = t->items;
    while (i > 0) {
        Py_ssize_t parent = (i - 1) / ARITY;
        if (!slot_before(&moving, &items[parent])) {
            break;
        }
        items[i] = items[parent];
        i = parent;
    }
    items[i] = moving;
}

/* The smallest of i's children, or -1 when i is a leaf. */
static inline Py_ssize_t
least_child(const gl_timers *t, Py_ssize_t i)
{
    Py_ssize_t first = ARITY * i + 1;
    const gl_timer_slot *c = t->items + first;
    if (first + ARITY <= t->size) {
        /* All four: two pairs, then their winners. */
        Py_ssize_t a = slot_before(&c[1], &c[0]) ? 1 : 0;
        Py_ssize_t b = slot_before(&c[3], &c[2]) ? 3 : 2;
        return first + (slot_before(&c[b], &c[a]) ? b : a);
    }
    if (first >= t->size) {
        return -1;
    }
    Py_ssize_t last = t->size;
    Py_ssize_t best = first;
    for (Py_ssize_t c = first + 1; c < last; c++) {
        if (slot_before(&t->items[c], &t->items[best])) {
            best = c;
        }
    }
    return best;
}

/* Puts `moving` at the hole `i` or below it (heap construction). */
static void
sift_down(gl_timers *t, Py_ssize_t i, gl_timer_slot moving)
{
    Py_ssize_t child;
    while ((child = least_child(t, i)) >= 0 &&
           slot_before(&t->items[child], &moving)) {
        t->items[i] = t->items[child];
        i = child;
    }
    t->items[i] = moving;
}

int
gl_timers_push(gl_timers *t, gl_timer *timer)
{
    if (t->size == t->capacity) {
        Py_ssize_t cap = t->capacity ? t->capacity * 2 : 64;
        gl_timer_slot *items = PyMem_Realloc(t->items, (size_t)cap * sizeof(*items));
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
    gl_timer_slot slot = {timer->when_ns, timer->seq, timer};
    t->size++;
    sift_up(t, t->size - 1, slot);
    return 0;
}

gl_timer *
gl_timers_peek(gl_timers *t)
{
    return t->size ? t->items[0].timer : NULL;
}

gl_timer *
gl_timers_pop(gl_timers *t)
{
    if (t->size == 0) {
        return NULL;
    }
    gl_timer *top = t->items[0].timer;
    t->size--;
    if (t->size > 0) {
        /* The hole goes down to a leaf along the smallest children; the
         * last slot, which belongs near the bottom, goes up from there. */
        gl_timer_slot last = t->items[t->size];
        Py_ssize_t hole = 0, child;
        while ((child = least_child(t, hole)) >= 0) {
            t->items[hole] = t->items[child];
            hole = child;
        }
        sift_up(t, hole, last);
    }
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
        gl_timer *timer = t->items[i].timer;
        if (timer->base.cancelled) {
            timer->scheduled = 0;
            garbage[dropped++] = timer;
        }
        else {
            t->items[kept++] = t->items[i];
        }
    }
    t->size = kept;
    t->cancelled = 0;
    for (Py_ssize_t i = (kept - 2) / ARITY; kept > 1 && i >= 0; i--) {
        sift_down(t, i, t->items[i]);
    }
    for (Py_ssize_t i = 0; i < dropped; i++) {
        gl_handle_release(&garbage[i]->base);
    }
    PyMem_Free(garbage);
}

void
gl_timers_clear(gl_timers *t)
{
    gl_timer_slot *items = t->items;
    Py_ssize_t size = t->size;
    t->items = NULL;
    t->size = 0;
    t->capacity = 0;
    t->cancelled = 0;
    /* Unschedule all first: a finalizer run by a release may cancel a
     * later timer, which must not count as cancelled in the emptied heap. */
    for (Py_ssize_t i = 0; i < size; i++) {
        items[i].timer->scheduled = 0;
    }
    for (Py_ssize_t i = 0; i < size; i++) {
        gl_handle_release(&items[i].timer->base);
    }
    PyMem_Free(items);
}

void
gl_timers_track_kept(gl_timers *t)
{
    for (Py_ssize_t i = 0; i < t->size; i++) {
        PyObject *timer = (PyObject *)t->items[i].timer;
        if (Py_REFCNT(timer) > 1 && !PyObject_GC_IsTracked(timer)) {
            PyObject_GC_Track(timer);
        }
    }
}

int
gl_timers_traverse(gl_timers *t, visitproc visit, void *arg)
{
    for (Py_ssize_t i = 0; i < t->size; i++) {
        int rc = gl_handle_traverse_queued(&t->items[i].timer->base, visit, arg);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}
