# IMAP (protocols/imap): parser, sequence sets, session.
# The parser tests compile the few sources they need directly, so a half-built room elsewhere
# never stops them from building.
set(MK_IMAP_DIR ${CMAKE_SOURCE_DIR}/protocols/imap)
mk_unit_test(test_imap_parser SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/test_imap_parser.c
	${MK_IMAP_DIR}/imap_parser.c ${MK_IMAP_DIR}/imap_arena.c ${CMAKE_SOURCE_DIR}/src/buf.c)
target_include_directories(test_imap_parser PRIVATE ${MK_IMAP_DIR} ${CMAKE_SOURCE_DIR}/src)
mk_unit_test(test_imap_seqset SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/test_imap_seqset.c
	${MK_IMAP_DIR}/imap_seqset.c)
target_include_directories(test_imap_seqset PRIVATE ${MK_IMAP_DIR})
# The session over an in-process fake connection (tests/support/imap_fake_conn.c stands in for
# src/conn.c), with every source of the room.
file(GLOB mk_imap_srcs CONFIGURE_DEPENDS ${MK_IMAP_DIR}/*.c)
mk_unit_test(test_imap_session SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/test_imap_session.c
	${CMAKE_SOURCE_DIR}/tests/support/imap_fake_conn.c
	${CMAKE_SOURCE_DIR}/tests/support/imap_fake_auth.c ${mk_imap_srcs}
	${CMAKE_SOURCE_DIR}/auth/sasl.c ${CMAKE_SOURCE_DIR}/auth/base64.c
	${CMAKE_SOURCE_DIR}/src/buf.c ${CMAKE_SOURCE_DIR}/src/log.c
	LIBS mk_storage PkgConfig::UV)
target_include_directories(test_imap_session PRIVATE ${MK_IMAP_DIR} ${CMAKE_SOURCE_DIR}/src
	${CMAKE_SOURCE_DIR}/auth)
# After login, with the real store in a temporary directory and a fake auth service.
mk_unit_test(test_imap_mailbox SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/test_imap_mailbox.c
	${CMAKE_SOURCE_DIR}/tests/support/imap_fake_conn.c
	${CMAKE_SOURCE_DIR}/tests/support/imap_fake_auth.c ${mk_imap_srcs}
	${CMAKE_SOURCE_DIR}/auth/sasl.c ${CMAKE_SOURCE_DIR}/auth/base64.c
	${CMAKE_SOURCE_DIR}/src/buf.c ${CMAKE_SOURCE_DIR}/src/log.c
	LIBS mk_storage PkgConfig::UV)
target_include_directories(test_imap_mailbox PRIVATE ${MK_IMAP_DIR} ${CMAKE_SOURCE_DIR}/src
	${CMAKE_SOURCE_DIR}/auth)
mk_unit_test(test_imap_utf7 SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/test_imap_utf7.c
	${MK_IMAP_DIR}/imap_utf7.c)
target_include_directories(test_imap_utf7 PRIVATE ${MK_IMAP_DIR})
# SORT/THREAD building blocks (imap_sort.h): base subject, dates, ENVELOPE keys, both
# threading algorithms; built with the room's sources like the session tests.
mk_unit_test(test_imap_sort SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/test_imap_sort.c
	${CMAKE_SOURCE_DIR}/tests/support/imap_fake_conn.c
	${CMAKE_SOURCE_DIR}/tests/support/imap_fake_auth.c ${mk_imap_srcs}
	${CMAKE_SOURCE_DIR}/auth/sasl.c ${CMAKE_SOURCE_DIR}/auth/base64.c
	${CMAKE_SOURCE_DIR}/src/buf.c ${CMAKE_SOURCE_DIR}/src/log.c
	LIBS mk_storage PkgConfig::UV)
target_include_directories(test_imap_sort PRIVATE ${MK_IMAP_DIR} ${CMAKE_SOURCE_DIR}/src
	${CMAKE_SOURCE_DIR}/auth)
