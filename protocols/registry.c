#include "protocols.h"

#include "imap.h"
#include "pop3.h"

/* Each protocol folder adds its descriptor here once it serves clients end to end. */
const struct proto_ops *const protocols_table[] = {
	&imap_proto_ops,
	&pop3_proto_ops,
};
const size_t protocols_count = 2;

void protocols_set_auth_service(struct auth_service *svc)
{
	imap_auth_service_set(svc);
	pop3_auth_service_set(svc);
}
