"""CPython's test_ssl (TLS over the loop's transports: create_connection, create_server,
start_tls with ssl=, timeouts, shutdown) on the loop under test; TestSSL.new_loop()
asks the policy."""

from ._harness import adopt, load_cpython_tests

adopt(load_cpython_tests("test_ssl"), globals())
