# Tests of src/ (mk_core).
mk_unit_test(test_buf SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/test_buf.c LIBS mk_core)
mk_unit_test(test_config SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/test_config.c LIBS mk_core)

# Test support shared by every room: run a daemon on loopback, TLS client, certificates.
add_library(mk_testsupport STATIC ${CMAKE_SOURCE_DIR}/tests/support/testutil.c
	${CMAKE_SOURCE_DIR}/tests/support/testtls.c)
target_include_directories(mk_testsupport PUBLIC ${CMAKE_SOURCE_DIR}/tests/support)
find_package(Threads REQUIRED)
target_link_libraries(mk_testsupport PUBLIC PkgConfig::GNUTLS Threads::Threads)

# mk-testd: the real daemon serving the test protocol, for the connection-layer tests.
add_executable(mk-testd ${CMAKE_SOURCE_DIR}/tests/support/testd.c
	${CMAKE_SOURCE_DIR}/tests/support/testproto.c)
target_link_libraries(mk-testd PRIVATE mk_core)

mk_unit_test(test_conn SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/test_conn.c
	LIBS mk_testsupport PkgConfig::ZLIB TIMEOUT 300)
set_property(TEST test_conn APPEND PROPERTY ENVIRONMENT "MK_TESTD=$<TARGET_FILE:mk-testd>")
add_dependencies(test_conn mk-testd)
