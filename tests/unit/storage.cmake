# Tests of storage/ (the mailbox model, the Maildir and mbox back-ends). They build the model's own
# sources into mk_storage_model, so a half-finished MIME parser in the same room (storage/mime*,
# msg_*, envelope*, bodystruct*, charset*) never stops them from building.
set(MK_STORAGE_DIR ${CMAKE_SOURCE_DIR}/storage)
# The mbox back-end (storage/mbox*.c) belongs to the model too, once it is there.
file(GLOB MK_STORAGE_MBOX_SOURCES CONFIGURE_DEPENDS ${MK_STORAGE_DIR}/mbox*.c)
add_library(mk_storage_model STATIC ${MK_STORAGE_MBOX_SOURCES}
	${MK_STORAGE_DIR}/storage_util.c ${MK_STORAGE_DIR}/uidlist.c ${MK_STORAGE_DIR}/mailbox.c
	${MK_STORAGE_DIR}/view.c ${MK_STORAGE_DIR}/maildir.c ${MK_STORAGE_DIR}/mail_stream.c
	${MK_STORAGE_DIR}/store.c ${MK_STORAGE_DIR}/mailbox_pop3.c
	${MK_STORAGE_DIR}/pop3_retrieved.c ${MK_STORAGE_DIR}/mailbox_expunged.c
	${MK_STORAGE_DIR}/quota.c ${MK_STORAGE_DIR}/mailbox_sync.c ${MK_STORAGE_DIR}/folder_cache.c)
target_include_directories(mk_storage_model PUBLIC ${MK_STORAGE_DIR} ${CMAKE_SOURCE_DIR}/src)
target_link_libraries(mk_storage_model PUBLIC mk_core)
add_library(mk_storage_test_support STATIC ${CMAKE_SOURCE_DIR}/tests/support/storage_test.c)
target_include_directories(mk_storage_test_support PUBLIC ${CMAKE_SOURCE_DIR}/tests/support)
target_link_libraries(mk_storage_test_support PUBLIC mk_storage_model PkgConfig::CMOCKA)

mk_unit_test(test_uidlist SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/test_uidlist.c
	LIBS mk_storage_test_support)
mk_unit_test(test_storage_store SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/test_storage_store.c
	LIBS mk_storage_test_support)
mk_unit_test(test_storage_mailbox SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/test_storage_mailbox.c
	LIBS mk_storage_test_support)
mk_unit_test(test_storage_views SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/test_storage_views.c
	LIBS mk_storage_test_support)
mk_unit_test(test_storage_expunged SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/test_storage_expunged.c
	LIBS mk_storage_test_support)
mk_unit_test(test_storage_pop3_expire
	SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/test_storage_pop3_expire.c
	LIBS mk_storage_test_support)
# Quota accounting (issue 7): append, copy, move, expunge, outside delivery, reopen, limits.
mk_unit_test(test_storage_quota SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/test_storage_quota.c
	LIBS mk_storage_test_support)
mk_unit_test(test_maildir_external SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/test_maildir_external.c
	LIBS mk_storage_test_support)
mk_unit_test(test_storage_kill9 SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/test_storage_kill9.c
	LIBS mk_storage_test_support TIMEOUT 300)
# The parser through the cache needs the whole room (mk_storage, the MIME parser included).
mk_unit_test(test_storage_parsed SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/test_storage_parsed.c
	${CMAKE_SOURCE_DIR}/tests/support/storage_test.c LIBS mk_storage mk_core)
# A full disk (RLIMIT_FSIZE) and interrupted changes: all-or-nothing STORE/EXPUNGE, reading
# without space, expunges finished at open; an async open racing a close (issue 8 D1-D3, B9).
mk_unit_test(test_storage_full SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/test_storage_full.c
	LIBS mk_storage_test_support)

# The same tests against the mbox back-end (issue 11): NAME_mbox runs NAME's executable with
# MK_STORE_FORMAT=mbox (tests/support/storage_test.h: st_store_open, st_deliver, st_only).
# Assertions about one back-end's files run only under it (cmocka reports them SKIPPED under
# the other); test_maildir_external's mbox counterpart is test_mbox_external. Registered once
# the back-end exists in the tree.
function(mk_storage_test_mbox name)
	add_test(NAME ${name}_mbox COMMAND ${name})
	get_test_property(${name} TIMEOUT t)
	set_tests_properties(${name}_mbox PROPERTIES TIMEOUT ${t}
		ENVIRONMENT "${MK_TEST_ENV};MK_STORE_FORMAT=mbox")
endfunction()
if(MK_STORAGE_MBOX_SOURCES)
	foreach(t test_storage_store test_storage_mailbox test_storage_views test_storage_expunged
			test_storage_pop3_expire test_storage_parsed test_storage_full
			test_storage_kill9 test_storage_quota)
		mk_storage_test_mbox(${t})
	endforeach()
	mk_unit_test(test_mbox_external SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/test_mbox_external.c
		LIBS mk_storage_test_support)
endif()
# i;unicode-casemap (RFC 5051) for SORT/THREAD.
mk_unit_test(test_unicode_casemap SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/test_unicode_casemap.c
	${MK_STORAGE_DIR}/unicode_casemap.c ${CMAKE_SOURCE_DIR}/src/buf.c LIBS ${MK_UNISTRING_LIB})
target_include_directories(test_unicode_casemap PRIVATE ${MK_STORAGE_DIR} ${CMAKE_SOURCE_DIR}/src)
# The mbox back-end: reading, appends and rewrites, outside changes, crashes, locks, folders.
mk_unit_test(test_storage_mbox SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/test_storage_mbox.c
	LIBS mk_storage_test_support TIMEOUT 120)
