# MIME parser throughput (built, never run by ctest): build/tests/bench_mime [messages]
# Links only the MIME sources (the same standalone library as tests/unit/mime.cmake).
if(NOT TARGET mk_mime_standalone)
	set(mk_mime_srcs)
	foreach(f mime_parse mime_fields envelope bodystruct msg_section msg_decode charset
			msg_cache msg_imapstr msg_preview)
		list(APPEND mk_mime_srcs ${CMAKE_SOURCE_DIR}/storage/${f}.c)
	endforeach()
	add_library(mk_mime_standalone STATIC ${mk_mime_srcs})
	target_include_directories(mk_mime_standalone PUBLIC ${CMAKE_SOURCE_DIR}/storage)
	target_link_libraries(mk_mime_standalone PUBLIC mk_core)
endif()
add_executable(bench_mime ${CMAKE_SOURCE_DIR}/tests/bench/bench_mime.c)
target_link_libraries(bench_mime PRIVATE mk_mime_standalone mk_core)
