#include "process.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "config.h"
#include "log.h"

int process_drop_privileges(const struct config *cfg)
{
	if (geteuid() != 0 && getuid() != 0) {
		log_info("process: not running as root (uid=%ld); privilege drop skipped",
			 (long)getuid());
		return 0;
	}
	const char *name = cfg->mail_user;
	if (name == NULL || name[0] == '\0') {
		log_error("process: running as root and mail_user is not set; refusing to go on");
		return -EINVAL;
	}
	struct passwd pw, *res = NULL;
	char buf[4096];
	int r = getpwnam_r(name, &pw, buf, sizeof(buf), &res);
	if (r != 0 || res == NULL) {
		log_error("process: mail_user %s: %s", log_escape_str(name),
			  r != 0 ? strerror(r) : "no such user");
		return r != 0 ? -r : -ENOENT;
	}
	if (pw.pw_uid == 0) {
		log_error("process: mail_user %s is root; refusing to serve the network as root",
			  log_escape_str(name));
		return -EINVAL;
	}
	gid_t gid = pw.pw_gid;
	/* mail_user's own groups from /etc/group and no others: ssl-cert, for one, lets a
	 * SIGHUP re-read a key such as Debian's snakeoil one (root:ssl-cert 0640). */
	if (initgroups(name, gid) < 0) {
		r = -errno;
		log_error("process: initgroups(%s, %ld): %s", log_escape_str(name), (long)gid,
			  strerror(errno));
		return r;
	}
	if (setresgid(gid, gid, gid) < 0) {
		r = -errno;
		log_error("process: setgid(%ld): %s", (long)gid, strerror(errno));
		return r;
	}
	if (setresuid(pw.pw_uid, pw.pw_uid, pw.pw_uid) < 0) {
		r = -errno;
		log_error("process: setuid(%ld): %s", (long)pw.pw_uid, strerror(errno));
		return r;
	}
	/* Checked, not assumed: every id changed and root is gone for good. */
	uid_t ru, eu, su;
	gid_t rg, eg, sg;
	if (getresuid(&ru, &eu, &su) < 0 || getresgid(&rg, &eg, &sg) < 0 || ru != pw.pw_uid ||
	    eu != pw.pw_uid || su != pw.pw_uid || rg != gid || eg != gid || sg != gid) {
		log_error("process: ids did not change as asked");
		return -EPERM;
	}
	if (setuid(0) == 0 || seteuid(0) == 0) {
		log_error("process: root could be regained after the drop");
		return -EPERM;
	}
	log_info("process: dropped privileges to user=%s uid=%ld gid=%ld", log_escape_str(name),
		 (long)pw.pw_uid, (long)gid);
	return 0;
}
