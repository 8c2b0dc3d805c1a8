# The load generator and its Maildir generator (built, never run by ctest, never installed):
#   build/tests/mailkeep-bench --target NAME,imap=P,... [--target ...]   (tests/bench/README.md)
#   build/tests/gen_maildir DIR COUNT [SEED]                             10,000-message Maildir
# tests/bench/run-compare.sh builds nothing: it runs these against mailkeep and Dovecot.
add_executable(mailkeep-bench ${CMAKE_SOURCE_DIR}/tests/bench/mailkeep-bench.c)
target_link_libraries(mailkeep-bench PRIVATE PkgConfig::UV PkgConfig::GNUTLS)
add_executable(gen_maildir ${CMAKE_SOURCE_DIR}/tests/bench/gen_maildir.c
	${CMAKE_SOURCE_DIR}/tests/bench/storage_bench_gen.c)
