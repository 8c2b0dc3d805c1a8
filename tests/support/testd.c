/* mk-testd: the mailkeep daemon serving the test protocol (tests/support/testproto.h) for
 * `protocol = test` listeners, so the connection layer is tested through the real start-up,
 * signals and sockets. */
#include "daemon.h"
#include "testproto.h"

int main(int argc, char **argv)
{
	static const struct proto_ops *const protos[] = {&testproto_ops};
	return daemon_run(argc, argv, protos, 1, NULL);
}
