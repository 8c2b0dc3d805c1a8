# Integration tests of auth/: the real daemon, its PAM helper and a generated PAM stack
# (pam_matrix + tests/pam/pam_mk_test.so through pam_start_confdir).
find_file(MK_AUTH_IT_PAM_MATRIX pam_matrix.so
	PATHS /usr/lib/x86_64-linux-gnu/pam_wrapper /usr/lib/pam_wrapper /usr/lib64/pam_wrapper
	NO_DEFAULT_PATH)
mk_python_test(auth_login_concurrency
	${CMAKE_SOURCE_DIR}/tests/integration/auth_login_concurrency.py TIMEOUT 120)
set_property(TEST auth_login_concurrency APPEND PROPERTY ENVIRONMENT
	"MK_PAM_MATRIX=${MK_AUTH_IT_PAM_MATRIX}" "MK_PAM_TEST_MODULE=$<TARGET_FILE:pam_mk_test>")
