# Tests of src/ (mk_core).
mk_unit_test(test_buf SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/test_buf.c LIBS mk_core)
mk_unit_test(test_config SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/test_config.c LIBS mk_core)
