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
