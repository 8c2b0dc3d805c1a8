# Integration tests of the daemon's spine.
mk_python_test(check_config ${CMAKE_SOURCE_DIR}/tests/integration/check_config.py TIMEOUT 120)
# The README's demo command, run until a login over each of its four listeners works.
mk_python_test(demo ${CMAKE_SOURCE_DIR}/tests/integration/demo.py TIMEOUT 300)
