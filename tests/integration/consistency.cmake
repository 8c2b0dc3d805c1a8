# Issue 8: POP3 <-> IMAP consistency under concurrency and faults, against the real mailkeep
# binary on 127.0.0.1 (PAM through pam_matrix in its own pam_confdir; no root, no system user).
find_file(MK_CONS_PAM_MATRIX pam_matrix.so
	PATHS /usr/lib/x86_64-linux-gnu/pam_wrapper /usr/lib/pam_wrapper /usr/lib64/pam_wrapper
	NO_DEFAULT_PATH)
set(mk_cons_env "MK_PAM_MATRIX=${MK_CONS_PAM_MATRIX}")
set(mk_cons_py ${CMAKE_SOURCE_DIR}/tests/integration/consistency.py)

# The randomized model-checked test: three fixed seeds x 2,000 steps, both pop3_delete
# policies.
foreach(case "1;expunge" "2;hide" "3;expunge")
	list(GET case 0 seed)
	list(GET case 1 policy)
	mk_python_test(consistency_seed${seed} ${mk_cons_py} TIMEOUT 900)
	set_property(TEST consistency_seed${seed} APPEND PROPERTY ENVIRONMENT ${mk_cons_env}
		"MK_CONSISTENCY_SEED=${seed}" "MK_CONSISTENCY_STEPS=2000"
		"MK_CONSISTENCY_POLICY=${policy}")
endforeach()

# The randomized test with mail_format = mbox (issue 11): the MTA appends to the spool under
# dotlock + fcntl, mutt rewrites Status:/X-Status: and deletes messages in the file.
foreach(case "1;expunge" "2;hide")
	list(GET case 0 seed)
	list(GET case 1 policy)
	mk_python_test_mbox(consistency_seed${seed} ${mk_cons_py} TIMEOUT 900)
	if(TEST consistency_seed${seed}_mbox)
		set_property(TEST consistency_seed${seed}_mbox APPEND PROPERTY ENVIRONMENT
			${mk_cons_env} "MK_CONSISTENCY_SEED=${seed}" "MK_CONSISTENCY_STEPS=2000"
			"MK_CONSISTENCY_POLICY=${policy}")
		if(seed EQUAL 2) # INBOX as a spool file outside the mail directory (mbox_inbox)
			set_property(TEST consistency_seed${seed}_mbox APPEND PROPERTY ENVIRONMENT
				"MK_MBOX_SPOOL=1")
		endif()
	endif()
endforeach()

# The same with the server SIGKILLed 50 times and restarted (under each delete policy).
foreach(case "kill;4;expunge" "kill_hide;5;hide")
	list(GET case 0 name)
	list(GET case 1 seed)
	list(GET case 2 policy)
	mk_python_test(consistency_${name} ${mk_cons_py} TIMEOUT 900)
	set_property(TEST consistency_${name} APPEND PROPERTY ENVIRONMENT ${mk_cons_env}
		"MK_CONSISTENCY_SEED=${seed}" "MK_CONSISTENCY_STEPS=500" "MK_CONSISTENCY_KILLS=50"
		"MK_CONSISTENCY_POLICY=${policy}")
endforeach()

# A full disk on demand: an LD_PRELOAD shim (tests/support/enospc_shim.c) fails writes and
# fsyncs of regular files with ENOSPC while a control file exists. Built without sanitizers:
# it is preloaded before ASan's runtime and only forwards calls.
add_library(mk_enospc_shim MODULE ${CMAKE_SOURCE_DIR}/tests/support/enospc_shim.c)
target_compile_options(mk_enospc_shim PRIVATE -fno-sanitize=all)
target_link_options(mk_enospc_shim PRIVATE -fno-sanitize=all)
target_link_libraries(mk_enospc_shim PRIVATE ${CMAKE_DL_LIBS})
# ... and with mbox: a kill can land in an expunge or flag rewrite of the file.
mk_python_test_mbox(consistency_kill ${mk_cons_py} TIMEOUT 900)
if(TEST consistency_kill_mbox)
	set_property(TEST consistency_kill_mbox APPEND PROPERTY ENVIRONMENT ${mk_cons_env}
		"MK_CONSISTENCY_SEED=4" "MK_CONSISTENCY_STEPS=500" "MK_CONSISTENCY_KILLS=50"
		"MK_CONSISTENCY_POLICY=expunge")
endif()

mk_python_test(consistency_enospc ${CMAKE_SOURCE_DIR}/tests/integration/consistency_enospc.py
	TIMEOUT 300)
set_property(TEST consistency_enospc APPEND PROPERTY ENVIRONMENT ${mk_cons_env}
	"MK_ENOSPC_SHIM=$<TARGET_FILE:mk_enospc_shim>")

# The real-client matrix, one script per client, each checking its own end result byte for
# byte with POP3 and IMAP on the same mailbox.
foreach(t consistency_fetchmail consistency_getmail consistency_curl consistency_mbsync
		consistency_pylib)
	mk_python_test(${t} ${CMAKE_SOURCE_DIR}/tests/integration/${t}.py TIMEOUT 300)
	set_property(TEST ${t} APPEND PROPERTY ENVIRONMENT ${mk_cons_env})
endforeach()
