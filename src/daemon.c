/* daemon — command line, start-up order and the loop (DESIGN.md "Process model"). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <uv.h>

#include "config.h"
#include "log.h"
#include "daemon.h"
#include "process.h"
#include "proto.h"
#include "server.h"
#include "tls.h"

#define DEFAULT_CONFIG "/etc/mailkeep/mailkeep.conf"

static void usage(FILE *out)
{
	fprintf(out, "usage: mailkeep [-c FILE] [-f|--foreground] [--check-config] [--version] "
		     "[--help]\n"
		     "  -c, --config FILE   configuration file (default " DEFAULT_CONFIG ")\n"
		     "  -f, --foreground    stay in the foreground and log to stderr\n"
		     "      --check-config  check the configuration and exit (0 when it is good)\n"
		     "      --settings      list every setting with its default, tab separated\n"
		     "      --version       print the version\n"
		     "      --help          this text\n");
}

/* Every listener's protocol must be one this binary serves; errors as FILE:LINE: why. */
static int check_protocols(FILE *out, const struct config *cfg,
			   const struct proto_ops *const *protos, size_t n_protos)
{
	const char *names[16];
	size_t n = 0;
	for (size_t i = 0; i < n_protos && n < 16; i++)
		names[n++] = protos[i]->name;
	struct config_errors errs = {0};
	int r = config_check_protocols(cfg, names, n, &errs);
	for (size_t i = 0; i < errs.n; i++)
		fprintf(out, "%s:%u: %s\n", errs.items[i].file, errs.items[i].line,
			errs.items[i].message);
	config_errors_free(&errs);
	return r;
}

/* --check-config: every error as FILE:LINE: why, and the certificate loaded for real. */
static int check_config(const char *path, const struct proto_ops *const *protos, size_t n_protos)
{
	struct config *cfg = NULL;
	struct config_errors errs;
	if (config_load(path, &cfg, &errs) < 0) {
		for (size_t i = 0; i < errs.n; i++) {
			if (errs.items[i].line)
				printf("%s:%u: %s\n", errs.items[i].file, errs.items[i].line,
				       errs.items[i].message);
			else
				printf("%s: %s\n", errs.items[i].file, errs.items[i].message);
		}
		config_errors_free(&errs);
		return 1;
	}
	int ret = 0;
	if (cfg->tls_cert && cfg->tls_key) {
		/* Loaded for real when this user can read them (ExecStartPre runs as root). An
		 * unprivileged check cannot read a private key and says so rather than failing:
		 * the daemon loads the files at start and on SIGHUP, and logs why if it cannot. */
		if (access(cfg->tls_cert, R_OK) == 0 && access(cfg->tls_key, R_OK) == 0) {
			struct tls_creds *creds = NULL;
			char err[512];
			if (tls_creds_load(cfg->tls_cert, cfg->tls_key, cfg->tls_priority, &creds,
					   err, sizeof(err)) < 0) {
				printf("%s: [tls] %s\n", path, err);
				ret = 1;
			}
			tls_creds_unref(&creds);
		} else {
			printf("%s: note: [tls] cert or key is not readable by this user (%s); not "
			       "checked\n",
			       path, strerror(errno));
		}
	}
	if (check_protocols(stdout, cfg, protos, n_protos) < 0)
		ret = 1;
	if (ret == 0)
		printf("%s: OK\n", path);
	config_unref(&cfg);
	return ret;
}

/* Thousands of idle phones need thousands of descriptors: take the hard limit. */
static void raise_fd_limit(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static int daemonize(void)
{
	pid_t pid = fork();
	if (pid < 0)
		return -errno;
	if (pid > 0)
		_exit(0);
	if (setsid() < 0)
		return -errno;
	if (chdir("/") < 0)
		return -errno;
	int fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (fd >= 0) {
		dup2(fd, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		if (fd > 2)
			close(fd);
	}
	return 0;
}

int daemon_run(int argc, char **argv, const struct proto_ops *const *protos, size_t n_protos,
	       const struct daemon_hooks *hooks)
{
	static const struct option opts[] = {
		{"config", required_argument, NULL, 'c'},
		{"foreground", no_argument, NULL, 'f'},
		{"check-config", no_argument, NULL, 'C'},
		{"version", no_argument, NULL, 'V'},
		{"settings", no_argument, NULL, 'S'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *path = DEFAULT_CONFIG;
	bool foreground = false, check = false;
	int ch;
	while ((ch = getopt_long(argc, argv, "c:fh", opts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			path = optarg;
			break;
		case 'f':
			foreground = true;
			break;
		case 'C':
			check = true;
			break;
		case 'V':
			printf("mailkeep %s\n", MAILKEEP_VERSION);
			return 0;
		case 'S':
			for (size_t i = 0; i < config_setting_count(); i++) {
				const struct config_setting_doc *d = config_setting_get(i);
				printf("%s\t%s\t%s\t%s\n", d->section, d->key, d->default_text,
				       d->doc);
			}
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		usage(stderr);
		return 2;
	}
	if (check)
		return check_config(path, protos, n_protos);

	log_init("mailkeep", foreground);
	struct config *cfg = NULL;
	struct config_errors errs;
	if (config_load(path, &cfg, &errs) < 0) {
		for (size_t i = 0; i < errs.n; i++)
			log_error("event=config_error file=%s line=%u error=\"%s\"",
				  errs.items[i].file, errs.items[i].line, errs.items[i].message);
		config_errors_free(&errs);
		return 1;
	}
	enum log_level lvl;
	if (cfg->log_level && log_level_parse(cfg->log_level, &lvl))
		log_set_level(lvl);
	if (check_protocols(stderr, cfg, protos, n_protos) < 0)
		return 1;

	raise_fd_limit();
	uv_loop_t *loop = uv_default_loop();
	struct server *server = NULL;
	if (server_new(loop, cfg, protos, n_protos, &server) < 0 || server_bind(server) < 0) {
		log_error("event=start_failed");
		return 1;
	}
	if (!foreground && daemonize() < 0)
		fatal("event=daemonize_failed error=\"%s\"", strerror(errno));
	/* DESIGN.md "Process model": bind (done), start the privileged helper, drop to mail_user,
	 * then accept. */
	if (hooks && hooks->before_drop && hooks->before_drop(cfg) < 0) {
		log_error("event=start_failed stage=before_drop");
		return 1;
	}
	if (process_drop_privileges(cfg) < 0)
		return 1;
	if (hooks && hooks->attach && hooks->attach(loop) < 0) {
		log_error("event=start_failed stage=attach");
		return 1;
	}
	if (hooks && hooks->stop)
		server_on_stop(server, hooks->stop);
	if (hooks && hooks->reload)
		server_on_reload(server, hooks->reload);
	if (server_listen(server) < 0)
		return 1;
	log_info("event=started version=%s config=%s", MAILKEEP_VERSION, path);
	config_unref(&cfg);

	uv_run(loop, UV_RUN_DEFAULT);

	server_free(&server);
	uv_loop_close(loop);
	return 0;
}
