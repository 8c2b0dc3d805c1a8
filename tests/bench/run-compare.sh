#!/bin/bash
# run-compare.sh — mailkeep and Debian's Dovecot side by side, with mailkeep-bench.
#
#   sudo tests/bench/run-compare.sh            (as root: installs Dovecot if missing)
#
# On a Debian 12 machine: installs dovecot-imapd/dovecot-pop3d if missing (without letting
# the packaged service start), builds mailkeep, mailkeep-bench and gen_maildir
# (RelWithDebInfo), writes the Maildirs (the 10,000-message INBOX of user "bench", a copy for
# "pop", and u0..u99 with 100 messages each), makes one copy for each server, starts
# mailkeep (PAM: pam_wrapper + pam_matrix) and a private Dovecot (passwd-file passdb;
# tests/bench/bench_dovecot.conf.in) on 127.0.0.1 high ports, runs the scenarios, prints the tables and writes
# results.json/results.txt into $MK_BENCH_OUT. It ends only the two servers it started, by
# PID, and removes its temporary directory (MK_BENCH_KEEP=1 keeps it).
#
# Settings (environment): MK_BENCH_BUILD (build dir, default build-bench), MK_BENCH_OUT,
# MK_BENCH_COUNT (10000), MK_BENCH_USERS (100), MK_BENCH_SMALL (100 messages each),
# MK_BENCH_IDLE_N (1000, both servers), MK_BENCH_IDLE_BIG (0: else a second idle run against
# mailkeep alone with that many connections), MK_BENCH_SCENARIOS, MK_BENCH_ARGS (more
# mailkeep-bench options), MK_BENCH_DROP_CACHES (1: drop the page cache before cold FETCH),
# MK_BENCH_CMAKE_ARGS (more cmake -D options for the build).
set -euo pipefail

SRC=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${MK_BENCH_BUILD:-$SRC/build-bench}
OUT=${MK_BENCH_OUT:-$BUILD/bench-results}
COUNT=${MK_BENCH_COUNT:-10000}
USERS=${MK_BENCH_USERS:-100}
SMALL=${MK_BENCH_SMALL:-100}
IDLE_N=${MK_BENCH_IDLE_N:-1000}
IDLE_BIG=${MK_BENCH_IDLE_BIG:-0}
SCENARIOS=${MK_BENCH_SCENARIOS:-logins,fetch,idle,pop3,mixed,fairness}
DROP=${MK_BENCH_DROP_CACHES:-1}
PASSWORD=bench-pw
PAM_LIB=/usr/lib/x86_64-linux-gnu/libpam_wrapper.so
PAM_MATRIX=/usr/lib/x86_64-linux-gnu/pam_wrapper/pam_matrix.so
MAIL_USER=nobody
MAIL_GROUP=$(id -gn nobody)
# Dovecot's mail processes run as another user: each of its IDLE processes holds an inotify
# instance, counted per user (fs.inotify.max_user_instances), and the machine's other
# nobody-owned daemons (test runs) must not run out of theirs.
DC_USER=${MK_BENCH_DC_USER:-mail}
DC_GROUP=$(id -gn "$DC_USER")

say() { printf 'run-compare: %s\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
	say "run me as root (Dovecot's master needs it; both servers drop to $MAIL_USER)"
	exit 2
fi

# 1. Packages. policy-rc.d keeps the packaged dovecot.service from starting on 143/110.
need=()
for p in dovecot-imapd dovecot-pop3d libpam-wrapper gnutls-bin cmake gcc libuv1-dev \
	libgnutls28-dev libpam0g-dev libcmocka-dev pkg-config zlib1g-dev libunistring-dev python3; do
	dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
	made_policy=0
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		made_policy=1
	fi
	say "installing ${need[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
	[ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
fi

# 2. Build.
# shellcheck disable=SC2086
cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo ${MK_BENCH_CMAKE_ARGS:-} >/dev/null
cmake --build "$BUILD" -j2 --target mailkeep mailkeep-bench gen_maildir >/dev/null
BENCH=$BUILD/tests/mailkeep-bench
GEN=$BUILD/tests/gen_maildir
MK=$BUILD/mailkeep

ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
WORK=$(mktemp -d /tmp/mk-bench-XXXXXX)
chmod 755 "$WORK"
MK_PID=
DC_PID=
stop_pid() { # TERM, wait up to 30 s, then KILL: only the PIDs this script started
	local pid=$1
	[ -n "$pid" ] || return 0
	kill -TERM "$pid" 2>/dev/null || return 0
	for _ in $(seq 300); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
}
INOTIFY_WAS=
cleanup() {
	stop_pid "$MK_PID"
	stop_pid "$DC_PID"
	wait 2>/dev/null || true
	if [ -n "$INOTIFY_WAS" ]; then
		echo "$INOTIFY_WAS" >/proc/sys/fs/inotify/max_user_instances
	fi
	if [ "${MK_BENCH_KEEP:-0}" = 1 ]; then
		say "kept $WORK"
	else
		rm -rf "$WORK"
	fi
}
trap cleanup EXIT

# 3. Maildirs: one source, then one copy per server.
say "generating $COUNT messages and $USERS users x $SMALL in $WORK/src"
mkdir -p "$WORK/src"
"$GEN" "$WORK/src/bench" "$COUNT" 1 >&2
"$GEN" "$WORK/src/u-template" "$SMALL" 2 >&2
cp -a "$WORK/src/bench" "$WORK/src/pop"
for i in $(seq 0 $((USERS - 1))); do
	cp -a "$WORK/src/u-template" "$WORK/src/u$i"
done
rm -rf "$WORK/src/u-template"
for s in mk dc; do
	mkdir -p "$WORK/$s"
	cp -a "$WORK/src" "$WORK/$s/mail"
done
chown -R "$MAIL_USER:$MAIL_GROUP" "$WORK/mk/mail"
chown -R "$DC_USER:$DC_GROUP" "$WORK/dc/mail"
rm -rf "$WORK/src"
mkdir -p "$WORK/dc/run" "$WORK/dc/state"

# 4. Certificate, passwords (mailkeep: pam_matrix passdb user:password:service; Dovecot:
# passwd-file, see bench_dovecot.conf.in for why not PAM), ports.
cat >"$WORK/cert.tmpl" <<EOF
cn = "127.0.0.1"
ip_address = "127.0.0.1"
expiration_days = 2
tls_www_server
signing_key
encryption_key
EOF
certtool --generate-privkey --key-type=ecdsa --outfile "$WORK/key.pem" 2>/dev/null
certtool --generate-self-signed --load-privkey "$WORK/key.pem" --template "$WORK/cert.tmpl" \
	--outfile "$WORK/cert.pem" 2>/dev/null
chmod 644 "$WORK/cert.pem" "$WORK/key.pem"
mkdir -p "$WORK/pam.d"
: >"$WORK/passdb"
for u in bench pop $(seq -f "u%g" 0 $((USERS - 1))); do
	printf '%s:%s:mailkeep-bench\n' "$u" "$PASSWORD" >>"$WORK/passdb"
	printf '%s:{PLAIN}%s\n' "$u" "$PASSWORD" >>"$WORK/dc/passwd"
done
printf 'auth required %s passdb=%s\naccount required %s passdb=%s\n' \
	"$PAM_MATRIX" "$WORK/passdb" "$PAM_MATRIX" "$WORK/passdb" >"$WORK/pam.d/mailkeep-bench"
chmod 644 "$WORK/dc/passwd"
read -r P1 P2 P3 P4 P5 P6 P7 P8 < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(8)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')

# 5. mailkeep.
cat >"$WORK/mk/mailkeep.conf" <<EOF
[server]
mail_root = $WORK/mk/mail/%u
mail_user = $MAIL_USER
pam_service = mailkeep-bench
log_level = info
max_connections = 60000
max_connections_per_address = 60000

[tls]
cert = $WORK/cert.pem
key = $WORK/key.pem

[listener imap]
protocol = imap
address = 127.0.0.1
port = $P1
tls = starttls

[listener imaps]
protocol = imap
address = 127.0.0.1
port = $P2
tls = implicit

[listener pop3]
protocol = pop3
address = 127.0.0.1
port = $P3
tls = starttls

[listener pop3s]
protocol = pop3
address = 127.0.0.1
port = $P4
tls = implicit
EOF
export PAM_WRAPPER=1 PAM_WRAPPER_SERVICE_DIR="$WORK/pam.d" PAM_WRAPPER_DISABLE_DEEPBIND=1 \
	UID_WRAPPER_DISABLE_DEEPBIND=1
LD_PRELOAD=$PAM_LIB "$MK" -f -c "$WORK/mk/mailkeep.conf" 2>"$WORK/mk/mailkeep.log" &
MK_PID=$!

# 6. Dovecot. Each IDLE connection is an imap process holding an inotify instance, all as
# $DC_USER: Debian's default fs.inotify.max_user_instances (128) would make all but 128 of
# them fall back to polling every 30 s. Raised for the run, as a Dovecot administrator would
# (Dovecot logs that advice), and put back on exit.
inotify=$(cat /proc/sys/fs/inotify/max_user_instances)
if [ "$inotify" -lt $((IDLE_N + 1000)) ]; then
	INOTIFY_WAS=$inotify
	echo $((IDLE_N + 1000)) >/proc/sys/fs/inotify/max_user_instances
fi
sed -e "s|@WORK@|$WORK|g" -e "s|@CERT@|$WORK/cert.pem|g" -e "s|@KEY@|$WORK/key.pem|g" \
	-e "s|@UID@|$DC_USER|g" -e "s|@GID@|$DC_GROUP|g" -e "s|@PAMDIR@|$WORK/pam.d|g" \
	-e "s|@IMAP@|$P5|g" -e "s|@IMAPS@|$P6|g" -e "s|@POP3@|$P7|g" -e "s|@POP3S@|$P8|g" \
	"$SRC/tests/bench/bench_dovecot.conf.in" >"$WORK/dc/dovecot.conf"
dovecot -F -c "$WORK/dc/dovecot.conf" 2>"$WORK/dc/dovecot.stderr" &
DC_PID=$!

wait_port() { # the server answers on 127.0.0.1:$1 within 30 s
	for _ in $(seq 300); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	return 1
}
for p in $P1 $P2 $P3 $P4; do
	wait_port "$p" || { say "mailkeep did not start:"; tail -20 "$WORK/mk/mailkeep.log" >&2; exit 1; }
done
for p in $P5 $P6 $P7 $P8; do
	wait_port "$p" || { say "dovecot did not start:"; cat "$WORK/dc/dovecot.stderr" "$WORK/dc/dovecot.log" >&2; exit 1; }
done
say "mailkeep pid $MK_PID ($(cat /proc/$MK_PID/cmdline | tr '\0' ' ')), dovecot pid $DC_PID ($(dovecot --version))"

# 7. The run.
mkdir -p "$OUT"
ARGS=(--password "$PASSWORD" --users "$USERS" --idle-n "$IDLE_N" --scenarios "$SCENARIOS"
	--target "mailkeep,imap=$P1,imaps=$P2,pop3=$P3,pop3s=$P4,pid=$MK_PID,mail=$WORK/mk/mail/%u"
	--target "dovecot,imap=$P5,imaps=$P6,pop3=$P7,pop3s=$P8,pid=$DC_PID,mail=$WORK/dc/mail/%u"
	--json "$OUT/results.json")
[ "$DROP" = 1 ] && ARGS+=(--drop-caches)
# shellcheck disable=SC2206
[ -n "${MK_BENCH_ARGS:-}" ] && ARGS+=(${MK_BENCH_ARGS})
{
	echo "# $(date -u '+%F %T UTC') $(uname -r), $(nproc) cores, load at start: $(cat /proc/loadavg)"
	echo "# mailkeep $(git -C "$SRC" rev-parse --short HEAD 2>/dev/null || echo '?'), $(dovecot --version)"
	echo "# $COUNT messages in bench/pop, $USERS users x $SMALL messages, idle N = $IDLE_N"
	"$BENCH" "${ARGS[@]}"
	echo "# load at end: $(cat /proc/loadavg)"
} | tee "$OUT/results.txt"
if [ "$IDLE_BIG" -gt 0 ]; then
	{
		echo "# mailkeep alone, idle N = $IDLE_BIG, load $(cat /proc/loadavg)"
		"$BENCH" --password "$PASSWORD" --users "$USERS" --idle-n "$IDLE_BIG" --scenarios idle \
			--target "mailkeep,imap=$P1,imaps=$P2,pid=$MK_PID,mail=$WORK/mk/mail/%u" \
			--json "$OUT/results-idle-$IDLE_BIG.json"
	} | tee -a "$OUT/results.txt"
fi
say "results in $OUT/results.txt and $OUT/results.json"
