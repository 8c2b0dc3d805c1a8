/* bench_maildir_gen DIR [COUNT] [SEED]: write a realistic Maildir (storage_bench_gen.h). */
#include "storage_bench_gen.h"

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s DIR [COUNT] [SEED]\n", argv[0]);
		return 2;
	}
	unsigned count = argc > 2 ? (unsigned)strtoul(argv[2], NULL, 10) : 10000;
	unsigned seed = argc > 3 ? (unsigned)strtoul(argv[3], NULL, 10) : 1;
	uint64_t bytes = bench_maildir_generate(argv[1], count, seed);
	if (bytes == 0)
		return 1;
	printf("wrote %u messages, %llu bytes, into %s\n", count, (unsigned long long)bytes,
	       argv[1]);
	return 0;
}
