# libFuzzer target for the MIME parser (configure with CC=clang -DMK_FUZZ=ON; run:
# build/tests/fuzz_mime -max_total_time=300 -max_len=65536 tests/fuzz/mime-corpus
# with the shared fixtures as seeds: cp ../shared/fixtures/mime/*.eml into the corpus
# after prefixing each with one option byte).
if(MK_FUZZ)
	file(GLOB mk_fuzz_mime_srcs ${CMAKE_SOURCE_DIR}/storage/mime*.c
		${CMAKE_SOURCE_DIR}/storage/msg_*.c ${CMAKE_SOURCE_DIR}/storage/envelope*.c
		${CMAKE_SOURCE_DIR}/storage/bodystruct*.c ${CMAKE_SOURCE_DIR}/storage/charset*.c)
	add_executable(fuzz_mime ${CMAKE_SOURCE_DIR}/tests/fuzz/fuzz_mime.c ${mk_fuzz_mime_srcs}
		${CMAKE_SOURCE_DIR}/src/buf.c)
	target_include_directories(fuzz_mime PRIVATE ${CMAKE_SOURCE_DIR}/storage
		${CMAKE_SOURCE_DIR}/src)
	target_link_options(fuzz_mime PRIVATE -fsanitize=fuzzer)
endif()
