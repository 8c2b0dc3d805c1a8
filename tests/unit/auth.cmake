# Tests of auth/ (mk_auth).
mk_unit_test(test_auth_wire SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/test_auth_wire.c LIBS mk_auth)
mk_unit_test(test_auth_sasl SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/test_auth_sasl.c LIBS mk_auth)
mk_unit_test(test_auth_policy SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/test_auth_policy.c
	LIBS mk_auth)

# PAM tests: pam_matrix (from libpam-wrapper) with a generated passdb, and a test module that
# can be slow, expire an account or rename a user.
find_file(MK_PAM_MATRIX pam_matrix.so
	PATHS /usr/lib/x86_64-linux-gnu/pam_wrapper /usr/lib/pam_wrapper /usr/lib64/pam_wrapper
	NO_DEFAULT_PATH)
find_library(MK_PAM_WRAPPER_LIB pam_wrapper)
if(NOT MK_PAM_MATRIX OR NOT MK_PAM_WRAPPER_LIB)
	message(FATAL_ERROR "auth tests need libpam-wrapper (pam_matrix.so, libpam_wrapper.so)")
endif()

add_library(pam_mk_test MODULE ${CMAKE_SOURCE_DIR}/tests/pam/pam_mk_test.c)
set_target_properties(pam_mk_test PROPERTIES PREFIX "")
target_link_libraries(pam_mk_test PRIVATE PkgConfig::PAM)
# A PAM module is loaded into processes built without sanitizers too: keep it plain.
target_compile_options(pam_mk_test PRIVATE -fno-sanitize=all)
target_link_options(pam_mk_test PRIVATE -fno-sanitize=all)

add_library(mk_auth_testsupport STATIC ${CMAKE_SOURCE_DIR}/tests/support/auth_pamtest.c)
target_link_libraries(mk_auth_testsupport PUBLIC mk_auth)
target_include_directories(mk_auth_testsupport PUBLIC ${CMAKE_SOURCE_DIR}/tests/support)
target_compile_definitions(mk_auth_testsupport PUBLIC
	MK_PAM_MATRIX="${MK_PAM_MATRIX}"
	MK_PAM_TEST_MODULE="$<TARGET_FILE:pam_mk_test>")
add_dependencies(mk_auth_testsupport pam_mk_test)

mk_unit_test(test_auth_pam SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/test_auth_pam.c
	LIBS mk_auth_testsupport mk_auth TIMEOUT 120)
mk_unit_test(test_auth_authd SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/test_auth_authd.c
	LIBS mk_auth_testsupport mk_auth)
mk_unit_test(test_auth_root SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/test_auth_root.c
	LIBS mk_auth_testsupport mk_auth)

# The same PAM tests through pam_wrapper: plain pam_start (no pam_confdir), the service file
# found through PAM_WRAPPER_SERVICE_DIR (set by the test to its generated directory).
add_test(NAME test_auth_pam_wrapper COMMAND test_auth_pam)
set_tests_properties(test_auth_pam_wrapper PROPERTIES TIMEOUT 120 ENVIRONMENT
	"${MK_TEST_ENV};MK_USE_PAM_WRAPPER=1;LD_PRELOAD=${MK_PAM_WRAPPER_LIB};PAM_WRAPPER=1;PAM_WRAPPER_DISABLE_DEEPBIND=1;UID_WRAPPER_DISABLE_DEEPBIND=1")
# (this pam_wrapper build reads UID_WRAPPER_DISABLE_DEEPBIND, the documented name is the other)
# ASan must come first in the library list; pam_wrapper is preloaded before it.
if(MK_SANITIZE)
	set_property(TEST test_auth_pam_wrapper APPEND PROPERTY ENVIRONMENT
		"ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:verify_asan_link_order=0")
endif()

# Benchmark: built, not run by ctest.
add_executable(bench_auth ${CMAKE_SOURCE_DIR}/tests/bench/bench_auth.c)
target_link_libraries(bench_auth PRIVATE mk_auth_testsupport mk_auth)

mk_unit_test(test_auth_client SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/test_auth_client.c
	LIBS mk_auth_testsupport mk_auth)
