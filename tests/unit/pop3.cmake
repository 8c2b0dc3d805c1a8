# Tests of protocols/pop3 (mk_pop3). The parser and the dot-stuffing transform are pure code
# and are compiled straight from the room's sources, so they build whatever state the other
# rooms are in.
set(MK_POP3_DIR ${CMAKE_SOURCE_DIR}/protocols/pop3)
mk_unit_test(test_pop3_parse
	SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/test_pop3_parse.c ${MK_POP3_DIR}/pop3_parse.c
		${MK_POP3_DIR}/pop3_dot.c)
target_include_directories(test_pop3_parse PRIVATE ${MK_POP3_DIR})

# The session end to end: real session, command table and store (temporary Maildir), a fake
# connection and a fake auth service (defined in the test). mk_core brings buf, log and
# config; conn.c and server.c are never pulled in because the fake defines all of conn.h.
mk_unit_test(test_pop3_session
	SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/test_pop3_session.c
		${CMAKE_SOURCE_DIR}/tests/support/pop3_fake_conn.c
	LIBS mk_pop3 mk_storage mk_auth mk_core)
target_include_directories(test_pop3_session PRIVATE ${MK_POP3_DIR})
