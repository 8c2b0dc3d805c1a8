# libFuzzer target for the config parser (configure with CC=clang -DMK_FUZZ=ON).
if(MK_FUZZ)
	add_executable(fuzz_config ${CMAKE_SOURCE_DIR}/tests/fuzz/fuzz_config.c
		${CMAKE_SOURCE_DIR}/src/config.c ${CMAKE_SOURCE_DIR}/src/log.c)
	target_include_directories(fuzz_config PRIVATE ${CMAKE_SOURCE_DIR}/src)
	target_link_options(fuzz_config PRIVATE -fsanitize=fuzzer)
endif()
