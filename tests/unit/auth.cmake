# Tests of auth/ (mk_auth).
mk_unit_test(test_auth_wire SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/test_auth_wire.c LIBS mk_auth)
mk_unit_test(test_auth_sasl SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/test_auth_sasl.c LIBS mk_auth)
