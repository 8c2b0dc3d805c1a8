# MIME parser (storage/msg_parse.h): fixtures, malformed input, cache blobs, quoting.
add_library(mk_test_mime_support STATIC ${CMAKE_SOURCE_DIR}/tests/support/mime_fetch.c)
target_link_libraries(mk_test_mime_support PUBLIC mk_storage mk_core)
target_compile_definitions(mk_test_mime_support PRIVATE MK_TEST_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
target_include_directories(mk_test_mime_support PUBLIC ${CMAKE_SOURCE_DIR}/tests/support)

mk_unit_test(test_mime SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/test_mime.c
	LIBS mk_test_mime_support mk_storage mk_core)

mk_unit_test(test_mime_malformed SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/test_mime_malformed.c
	LIBS mk_test_mime_support mk_storage mk_core TIMEOUT 300)

find_package(ZLIB REQUIRED) # the cache test checks our CRC-32 against zlib's
mk_unit_test(test_mime_api SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/test_mime_api.c
	LIBS mk_test_mime_support mk_storage mk_core ZLIB::ZLIB)
