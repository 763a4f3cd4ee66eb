"""CPython's test_subprocess on the loop under test (README.md explains the choices).

SubprocessMixin runs once per child watcher class, each attached to our loop by the
test's setUp through the policy.  glibloop consults no child watcher (it watches its
children with pidfds, process.c), so the four classes run the same tests on our loop
alongside four different watchers: SafeChildWatcher and FastChildWatcher install a
SIGCHLD handler with our add_signal_handler(), and FastChildWatcher reaps every child
of the process with waitpid(-1), which our loop must survive.
"""

from ._harness import adopt, load_cpython_tests

adopt(load_cpython_tests("test_subprocess"), globals())
