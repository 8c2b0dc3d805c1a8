# Tests of protocols/pop3 (mk_pop3). The parser and the dot-stuffing transform are pure code
# and are compiled straight from the room's sources, so they build whatever state the other
# rooms are in.
set(MK_POP3_DIR ${CMAKE_SOURCE_DIR}/protocols/pop3)
mk_unit_test(test_pop3_parse
	SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/test_pop3_parse.c ${MK_POP3_DIR}/pop3_parse.c
		${MK_POP3_DIR}/pop3_dot.c)
target_include_directories(test_pop3_parse PRIVATE ${MK_POP3_DIR})
