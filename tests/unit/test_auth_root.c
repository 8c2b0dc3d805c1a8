/* Run as root (CI does): the auth helper is started, the network process drops to nobody, and
 * /proc/PID/status shows the network process as nobody and the helper still root, which still
 * checks passwords. Skipped when not root. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "auth.h"
#include "auth_pamtest.h"
#include "process.h"

/* "Uid:" or "Gid:" line of /proc/PID/status, without the key ("0\t0\t0\t0"). */
static void proc_ids(pid_t pid, const char *key, char *out, size_t outlen)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%ld/status", (long)pid);
	out[0] = '\0';
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return;
	size_t klen = strlen(key);
	while (fgets(line, sizeof(line), f) != NULL) {
		if (strncmp(line, key, klen) == 0) {
			char *v = line + klen;
			while (*v == '\t' || *v == ' ')
				v++;
			size_t n = strcspn(v, "\n");
			while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
				n--;
			v[n] = '\0';
			snprintf(out, outlen, "%s", v);
			break;
		}
	}
	fclose(f);
}

static void login_done(void *ctx, enum auth_result result, const char *user, const char *reason)
{
	int *r = ctx;
	*r = result == AUTH_RESULT_OK && strcmp(user, "bob") == 0 ? 1 : 2;
}

/* 1 when a descriptor of process pid is the socket with inode ino. */
static int proc_has_socket(pid_t pid, ino_t ino)
{
	char dir[64], want[64];
	snprintf(dir, sizeof(dir), "/proc/%ld/fd", (long)pid);
	snprintf(want, sizeof(want), "socket:[%lu]", (unsigned long)ino);
	DIR *d = opendir(dir);
	if (d == NULL)
		return -1;
	int found = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		char path[400], target[128];
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		ssize_t n = readlink(path, target, sizeof(target) - 1);
		if (n > 0) {
			target[n] = '\0';
			if (strcmp(target, want) == 0)
				found = 1;
		}
	}
	closedir(d);
	return found;
}

/* In the child: start, drop, log in once; write the facts to fd. Returns the exit code. */
static int child_main(struct auth_pamtest *t, int fd)
{
	struct auth_service *svc = NULL;
	uv_loop_t loop;
	/* a listener, as the daemon has when it starts the helper */
	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	struct stat st;
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) != 0 ||
	    listen(lfd, 1) != 0 || fstat(lfd, &st) != 0)
		return 9;
	if (auth_service_start(&t->cfg, &svc) != 0)
		return 10;
	/* still root: every /proc/PID/fd is readable (after the drop the helper's are not) */
	int in_net = proc_has_socket(getpid(), st.st_ino);
	int in_sup = proc_has_socket(auth_service_supervisor_pid(svc), st.st_ino);
	int in_helper = proc_has_socket(auth_service_helper_pid(svc), st.st_ino);
	if (process_drop_privileges(&t->cfg) != 0)
		return 11;
	if (uv_loop_init(&loop) != 0 || auth_service_attach(svc, &loop) != 0)
		return 12;
	int result = 0;
	struct auth_request_info info = {.protocol = "imap",
					 .mechanism = "PLAIN",
					 .user = "bob",
					 .password = "secret",
					 .remote_address = "127.0.0.1",
					 .local_port = 143};
	auth_request_start(svc, &info, login_done, &result);
	while (result == 0 && uv_run(&loop, UV_RUN_ONCE) != 0)
		;
	char net_uid[128], net_gid[128], net_groups[128], sup_uid[128], helper_uid[128],
		helper_gid[128];
	proc_ids(getpid(), "Uid:", net_uid, sizeof(net_uid));
	proc_ids(getpid(), "Gid:", net_gid, sizeof(net_gid));
	proc_ids(getpid(), "Groups:", net_groups, sizeof(net_groups));
	proc_ids(auth_service_supervisor_pid(svc), "Uid:", sup_uid, sizeof(sup_uid));
	proc_ids(auth_service_helper_pid(svc), "Uid:", helper_uid, sizeof(helper_uid));
	proc_ids(auth_service_helper_pid(svc), "Gid:", helper_gid, sizeof(helper_gid));
	dprintf(fd,
		"login=%d\nnet_uid=%s\nnet_gid=%s\nnet_groups=%s\nsup_uid=%s\nhelper_uid=%s\n"
		"helper_gid=%s\nlistener: net=%d sup=%d helper=%d\n",
		result, net_uid, net_gid, net_groups, sup_uid, helper_uid, helper_gid, in_net,
		in_sup, in_helper);
	auth_service_free(&svc);
	uv_run(&loop, UV_RUN_DEFAULT);
	uv_loop_close(&loop);
	return 0;
}

static void test_drop_with_helper(void **state)
{
	if (geteuid() != 0)
		skip();
	struct passwd *pw = getpwnam("nobody");
	if (pw == NULL)
		skip();
	struct auth_pamtest t;
	auth_pamtest_init(&t);
	t.cfg.mail_user = (char *)"nobody";
	int p[2];
	assert_int_equal(pipe(p), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(p[0]);
		_exit(child_main(&t, p[1]));
	}
	close(p[1]);
	char report[2048];
	size_t n = 0;
	ssize_t r;
	while ((r = read(p[0], report + n, sizeof(report) - 1 - n)) > 0)
		n += (size_t)r;
	report[n] = '\0';
	close(p[0]);
	int status = 0;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	auth_pamtest_cleanup(&t);
	printf("# %s", report);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);

	char expect[1024];
	unsigned u = (unsigned)pw->pw_uid, g = (unsigned)pw->pw_gid;
	snprintf(expect, sizeof(expect),
		 "login=1\nnet_uid=%u\t%u\t%u\t%u\nnet_gid=%u\t%u\t%u\t%u\nnet_groups=%u\n"
		 "sup_uid=0\t0\t0\t0\nhelper_uid=0\t0\t0\t0\nhelper_gid=0\t0\t0\t0\n"
		 "listener: net=1 sup=0 helper=0\n",
		 u, u, u, u, g, g, g, g, g);
	assert_string_equal(report, expect);
}

/* Refusals happen before anything changes, so they can run in the test process. */
static void test_drop_refusals(void **state)
{
	if (geteuid() != 0)
		skip();
	struct config cfg = {.mail_user = NULL};
	assert_int_equal(process_drop_privileges(&cfg), -EINVAL);
	cfg.mail_user = (char *)"root";
	assert_int_equal(process_drop_privileges(&cfg), -EINVAL);
	cfg.mail_user = (char *)"no-such-user-mailkeep";
	assert_int_equal(process_drop_privileges(&cfg), -ENOENT);
	assert_int_equal(geteuid(), 0);
}

/* A process that is no longer root skips the drop and stays who it is. */
static void test_drop_skipped_after_setuid(void **state)
{
	if (geteuid() != 0)
		skip();
	struct passwd *pw = getpwnam("nobody");
	if (pw == NULL)
		skip();
	uid_t nobody = pw->pw_uid;
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (setresgid(pw->pw_gid, pw->pw_gid, pw->pw_gid) != 0 ||
		    setresuid(nobody, nobody, nobody) != 0)
			_exit(10);
		struct config cfg = {.mail_user = (char *)"daemon"};
		if (process_drop_privileges(&cfg) != 0)
			_exit(11);
		_exit(getuid() == nobody && geteuid() == nobody ? 0 : 12);
	}
	int status = 0;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_drop_with_helper),
		cmocka_unit_test(test_drop_refusals),
		cmocka_unit_test(test_drop_skipped_after_setuid),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
