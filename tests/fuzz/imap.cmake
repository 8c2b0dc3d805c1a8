# libFuzzer target for the IMAP parser (configure with CC=clang -DMK_FUZZ=ON).
if(MK_FUZZ)
	add_executable(fuzz_imap ${CMAKE_SOURCE_DIR}/tests/fuzz/fuzz_imap.c
		${CMAKE_SOURCE_DIR}/protocols/imap/imap_parser.c
		${CMAKE_SOURCE_DIR}/protocols/imap/imap_arena.c
		${CMAKE_SOURCE_DIR}/protocols/imap/imap_seqset.c ${CMAKE_SOURCE_DIR}/src/buf.c)
	target_include_directories(fuzz_imap PRIVATE ${CMAKE_SOURCE_DIR}/protocols/imap
		${CMAKE_SOURCE_DIR}/src)
	target_link_options(fuzz_imap PRIVATE -fsanitize=fuzzer)
endif()
