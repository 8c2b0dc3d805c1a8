#!/usr/bin/env bash
# The README's first command: on a fresh Debian 12 machine, install what is missing, build,
# and start mailkeep in the foreground on 127.0.0.1 with a demo account and demo mail.
#
#   packaging/demo.sh                 # Ctrl-C stops it
#   MK_DEMO_DIR=/tmp/x MK_DEMO_PORT_BASE=20000 packaging/demo.sh
#   MK_DEMO_BINARY=build/mailkeep packaging/demo.sh    # use a binary already built
#
# Logins go through PAM with a demo stack of its own (pam_start_confdir + pam_pwdfile and a
# generated password file), so no system user is made and, once packages are installed, no
# root is needed.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
demo=${MK_DEMO_DIR:-/tmp/mailkeep-demo}
base=${MK_DEMO_PORT_BASE:-10000}
user=demo
password=${MK_DEMO_PASSWORD:-demopass}

packages=(build-essential cmake pkg-config libuv1-dev libgnutls28-dev gnutls-bin libpam0g-dev
	libcmocka-dev zlib1g-dev libunistring-dev libpam-pwdfile python3 curl)
missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "== installing: ${missing[*]}"
	sudo=""
	[ "$(id -u)" -ne 0 ] && sudo="sudo"
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

binary=${MK_DEMO_BINARY:-}
if [ -z "$binary" ]; then
	echo "== building"
	cmake -S "$top" -B "$top/build-demo" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build "$top/build-demo" -j"$(nproc)" --target mailkeep >/dev/null
	binary="$top/build-demo/mailkeep"
fi

echo "== setting up $demo"
rm -rf "$demo"
mkdir -p "$demo/pam.d" "$demo/mail/$user"/{cur,new,tmp}
# The demo account, in a password file that pam_pwdfile reads (SHA-512 crypt).
hash=$(python3 -W ignore -c 'import crypt,sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_SHA512)))' "$password")
printf '%s:%s\n' "$user" "$hash" > "$demo/passwd"
cat > "$demo/pam.d/mailkeep" <<PAM
auth    required pam_pwdfile.so pwdfile=$demo/passwd
account required pam_permit.so
PAM
# A self-signed certificate for 127.0.0.1 / localhost.
cat > "$demo/cert.tmpl" <<TMPL
cn = "localhost"
dns_name = "localhost"
ip_address = "127.0.0.1"
expiration_days = 365
tls_www_server
encryption_key
signing_key
TMPL
certtool --generate-privkey --key-type ecdsa --outfile "$demo/key.pem" 2>/dev/null
certtool --generate-self-signed --load-privkey "$demo/key.pem" --template "$demo/cert.tmpl" \
	--outfile "$demo/cert.pem" 2>/dev/null
# Demo mail, delivered into new/ as an MTA would.
n=0
for m in "$top"/packaging/demo/*.eml; do
	n=$((n + 1))
	cp "$m" "$demo/mail/$user/new/$(date +%s).demo$n.$(hostname -s 2>/dev/null || echo localhost)"
done
mail_user=$(id -un)
if [ "$(id -u)" -eq 0 ]; then
	# Started as root, mailkeep drops to mail_user after binding; the demo uses nobody.
	mail_user=nobody
	chown -R nobody "$demo/mail" "$demo/key.pem" "$demo/cert.pem"
fi
cat > "$demo/mailkeep.conf" <<CONF
[server]
mail_root = $demo/mail/%u
mail_user = $mail_user
pam_service = mailkeep
pam_confdir = $demo/pam.d

[tls]
cert = $demo/cert.pem
key = $demo/key.pem

[listener imap]
protocol = imap
address = 127.0.0.1
port = $((base + 143))
tls = starttls

[listener imaps]
protocol = imap
address = 127.0.0.1
port = $((base + 993))
tls = implicit

[listener pop3]
protocol = pop3
address = 127.0.0.1
port = $((base + 110))
tls = starttls

[listener pop3s]
protocol = pop3
address = 127.0.0.1
port = $((base + 995))
tls = implicit
CONF
"$binary" --check-config -c "$demo/mailkeep.conf"

cat <<INFO

mailkeep demo on 127.0.0.1 — account: $user / $password ($n messages in INBOX)
  IMAP  + STARTTLS  port $((base + 143))     IMAPS  port $((base + 993))
  POP3  + STLS      port $((base + 110))     POP3S  port $((base + 995))
(the certificate is self-signed: -k tells curl to accept it)

  curl -k --ssl-reqd -u $user:$password 'imap://127.0.0.1:$((base + 143))/INBOX;UID=1'
  curl -k -u $user:$password 'imaps://127.0.0.1:$((base + 993))/INBOX?ALL'
  curl -k --ssl-reqd -u $user:$password 'pop3://127.0.0.1:$((base + 110))/'
  curl -k -u $user:$password 'pop3s://127.0.0.1:$((base + 995))/1'

Config: $demo/mailkeep.conf   Mail: $demo/mail/$user   Stop: Ctrl-C
INFO
exec "$binary" -f -c "$demo/mailkeep.conf"
