# libFuzzer target for the mbox reader (issue 11), through the store's public API (configure
# with CC=clang -DMK_FUZZ=ON; run: build/tests/fuzz_mbox -max_total_time=600 -max_len=65536
# -rss_limit_mb=2048 CORPUS, with seeds from tests/fuzz/mbox-seeds/ each prefixed with one
# option byte, see fuzz_mbox.c). Built once the back-end (storage/mbox*.c) is in the tree.
if(MK_FUZZ AND MK_MBOX_SOURCES)
	add_executable(fuzz_mbox ${CMAKE_SOURCE_DIR}/tests/fuzz/fuzz_mbox.c)
	target_include_directories(fuzz_mbox PRIVATE ${CMAKE_SOURCE_DIR}/storage
		${CMAKE_SOURCE_DIR}/src)
	target_link_libraries(fuzz_mbox PRIVATE mk_storage mk_core)
	target_link_options(fuzz_mbox PRIVATE -fsanitize=fuzzer)
endif()
