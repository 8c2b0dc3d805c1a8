# Integration tests of the daemon's spine.
mk_python_test(check_config ${CMAKE_SOURCE_DIR}/tests/integration/check_config.py TIMEOUT 120)
