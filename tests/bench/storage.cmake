# Storage benchmarks (built, never run by ctest; they print figures):
#   build/tests/bench_maildir_gen DIR [COUNT] [SEED]   write a realistic Maildir
#   build/tests/bench_storage [COUNT] [TMPDIR]         open/envelopes/flag/append figures
add_executable(bench_maildir_gen ${CMAKE_SOURCE_DIR}/tests/bench/bench_maildir_gen.c
	${CMAKE_SOURCE_DIR}/tests/bench/storage_bench_gen.c)
add_executable(bench_storage ${CMAKE_SOURCE_DIR}/tests/bench/bench_storage.c
	${CMAKE_SOURCE_DIR}/tests/bench/storage_bench_gen.c)
target_link_libraries(bench_storage PRIVATE mk_storage mk_core)
#   build/tests/bench_quota [FOLDERS] [PER_FOLDER] [TMPDIR] [background]  quota count, check, append
add_executable(bench_quota ${CMAKE_SOURCE_DIR}/tests/bench/bench_quota.c
	${CMAKE_SOURCE_DIR}/tests/bench/storage_bench_gen.c)
target_link_libraries(bench_quota PRIVATE mk_storage mk_core)
# build/tests/bench_mbox [COUNT] [BIG_MB] [TMPDIR]: mbox next to Maildir (issue 11 figures)
add_executable(bench_mbox ${CMAKE_SOURCE_DIR}/tests/bench/bench_mbox.c
	${CMAKE_SOURCE_DIR}/tests/bench/storage_bench_gen.c)
target_link_libraries(bench_mbox PRIVATE mk_storage mk_core)
