# MIME parser throughput (built, never run by ctest): build/tests/bench_mime [messages]
add_executable(bench_mime ${CMAKE_SOURCE_DIR}/tests/bench/bench_mime.c)
target_link_libraries(bench_mime PRIVATE mk_storage mk_core)
