# POP3 integration tests: the real mailkeep binary on 127.0.0.1 with real clients, PAM
# through pam_matrix in the test's own pam_confdir (no root, no system user).
find_file(MK_POP3_PAM_MATRIX pam_matrix.so
	PATHS /usr/lib/x86_64-linux-gnu/pam_wrapper /usr/lib/pam_wrapper /usr/lib64/pam_wrapper
	NO_DEFAULT_PATH)
foreach(t pop3_clients pop3_wire)
	mk_python_test(${t} ${CMAKE_SOURCE_DIR}/tests/integration/${t}.py TIMEOUT 600)
	set_property(TEST ${t} APPEND PROPERTY ENVIRONMENT
		"MK_PAM_MATRIX=${MK_POP3_PAM_MATRIX}")
endforeach()
# The same suites with mail_format = mbox (issue 11), once the back-end is in the tree.
foreach(t pop3_clients pop3_wire)
	mk_python_test_mbox(${t} ${CMAKE_SOURCE_DIR}/tests/integration/${t}.py TIMEOUT 600)
	if(TEST ${t}_mbox)
		set_property(TEST ${t}_mbox APPEND PROPERTY ENVIRONMENT
			"MK_PAM_MATRIX=${MK_POP3_PAM_MATRIX}")
	endif()
endforeach()
