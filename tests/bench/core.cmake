# Benchmarks of the spine: built, never run by ctest (they print figures).
add_executable(bench_idle ${CMAKE_SOURCE_DIR}/tests/bench/bench_idle.c)
target_link_libraries(bench_idle PRIVATE mk_testsupport)
add_dependencies(bench_idle mk-testd)
