/* mailkeep's entry point: the daemon with every protocol of this build. */
#include "daemon.h"
#include "protocols.h"

int main(int argc, char **argv)
{
	return daemon_run(argc, argv, protocols_table, protocols_count);
}
