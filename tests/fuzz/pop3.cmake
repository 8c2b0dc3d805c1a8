# libFuzzer target for the POP3 command parser and dot-stuffing transform
# (configure with CC=clang -DMK_FUZZ=ON; run: build/tests/fuzz_pop3 -max_total_time=60).
if(MK_FUZZ)
	add_executable(fuzz_pop3 ${CMAKE_SOURCE_DIR}/tests/fuzz/fuzz_pop3.c
		${CMAKE_SOURCE_DIR}/protocols/pop3/pop3_parse.c
		${CMAKE_SOURCE_DIR}/protocols/pop3/pop3_dot.c ${CMAKE_SOURCE_DIR}/src/buf.c)
	target_include_directories(fuzz_pop3 PRIVATE ${CMAKE_SOURCE_DIR}/protocols/pop3
		${CMAKE_SOURCE_DIR}/src)
	target_link_options(fuzz_pop3 PRIVATE -fsanitize=fuzzer)
endif()
