# MIME parser (storage/msg_parse.h): fixtures, malformed input, cache blobs, quoting.
# The tests link only the MIME sources (mk_mime_standalone) plus mk_core, so a half-finished
# change elsewhere in storage/ never stops them from building.
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

add_library(mk_test_mime_support STATIC ${CMAKE_SOURCE_DIR}/tests/support/mime_fetch.c)
target_link_libraries(mk_test_mime_support PUBLIC mk_mime_standalone mk_core)
target_compile_definitions(mk_test_mime_support PRIVATE MK_TEST_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
target_include_directories(mk_test_mime_support PUBLIC ${CMAKE_SOURCE_DIR}/tests/support)

mk_unit_test(test_mime SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/test_mime.c
	LIBS mk_test_mime_support mk_mime_standalone mk_core)

mk_unit_test(test_mime_malformed SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/test_mime_malformed.c
	LIBS mk_test_mime_support mk_mime_standalone mk_core TIMEOUT 300)

find_package(ZLIB REQUIRED) # the cache test checks our CRC-32 against zlib's
mk_unit_test(test_mime_api SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/test_mime_api.c
	LIBS mk_test_mime_support mk_mime_standalone mk_core ZLIB::ZLIB)
