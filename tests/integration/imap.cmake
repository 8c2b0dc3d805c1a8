# IMAP integration tests: the real mailkeep binary on 127.0.0.1 with real clients (Python
# imaplib, curl, mbsync), PAM through pam_matrix in the test's own pam_confdir (no root, no
# system user).
find_file(MK_IMAP_PAM_MATRIX pam_matrix.so
	PATHS /usr/lib/x86_64-linux-gnu/pam_wrapper /usr/lib/pam_wrapper /usr/lib64/pam_wrapper
	NO_DEFAULT_PATH)
foreach(t imap_imaplib imap_clients imap_qresync imap_compress imap_literal_minus imap_objectid
		imap_sort imap_preview imap_quota
		imap_utf8_accept)
	mk_python_test(${t} ${CMAKE_SOURCE_DIR}/tests/integration/${t}.py TIMEOUT 300)
	set_property(TEST ${t} APPEND PROPERTY ENVIRONMENT
		"MK_PAM_MATRIX=${MK_IMAP_PAM_MATRIX}")
endforeach()
# The raw client of imap_harness.py itself, against a scripted peer (no daemon).
mk_python_test(imap_harness_selftest ${CMAKE_SOURCE_DIR}/tests/integration/imap_harness_selftest.py
	TIMEOUT 120)
# The same suites with mail_format = mbox (issue 11), once the back-end is in the tree.
foreach(t imap_imaplib imap_clients imap_qresync imap_quota)
	mk_python_test_mbox(${t} ${CMAKE_SOURCE_DIR}/tests/integration/${t}.py TIMEOUT 300)
	if(TEST ${t}_mbox)
		set_property(TEST ${t}_mbox APPEND PROPERTY ENVIRONMENT
			"MK_PAM_MATRIX=${MK_IMAP_PAM_MATRIX}")
	endif()
endforeach()
# mutt (in a pseudo-terminal) and the server on one mbox: flags seen both ways (issue 11).
if(MK_MBOX_SOURCES)
	mk_python_test(mbox_mutt ${CMAKE_SOURCE_DIR}/tests/integration/mbox_mutt.py TIMEOUT 300)
	set_property(TEST mbox_mutt APPEND PROPERTY ENVIRONMENT "MK_MAIL_FORMAT=mbox"
		"MK_PAM_MATRIX=${MK_IMAP_PAM_MATRIX}")
endif()
