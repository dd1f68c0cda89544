#!/usr/bin/env bash
# End-to-end demonstration on embedded defaults: a real daemon in front of a
# real production repository, and two real pushes from a build repository.
# Usage: demo.sh [path to ostree-upload]   (make demo builds and runs it)
set -euo pipefail

bin=$(realpath "${1:-bin/ostree-upload}")
work=$(mktemp -d "${TMPDIR:-/tmp}/ostree-upload-demo.XXXXXX")
port=${DEMO_PORT:-18080}
daemon_pid=
sshd_pid=
cleanup() {
  [ -n "$sshd_pid" ] && kill "$sshd_pid" 2>/dev/null && wait "$sshd_pid" 2>/dev/null
  [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "A build repository with a commit on 'demo/stable'"
ostree init --mode=archive --repo=build
mkdir -p tree/usr/bin tree/usr/share/doc tree/etc
for i in $(seq 1 200); do head -c $((RANDOM % 4000 + 100)) /dev/urandom > "tree/usr/share/doc/file$i"; done
head -c 3000000 /dev/urandom > tree/usr/bin/big-binary
echo 'version=1' > tree/etc/demo.conf
ln -s ../share/doc/file1 tree/usr/bin/link
ostree commit --repo=build -b demo/stable --tree=dir=tree -s 'demo v1' >/dev/null
ostree log --repo=build demo/stable | head -n 4

step "A token, and the receive daemon on 127.0.0.1:$port"
token=$("$bin" gentoken -c ostree-upload.yaml --name demo | tail -n 1)
"$bin" receive -c ostree-upload.yaml -r production -a "127.0.0.1:$port" 2> daemon.log &
daemon_pid=$!
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
export OSTREE_UPLOAD_TOKEN=$token

step "First push: everything"
"$bin" push -r build -a "http://127.0.0.1:$port" -b demo/stable

step "A second commit changes a few files; push again: only the change travels"
sleep 1 # a newer commit, by its timestamp in seconds
echo 'version=2' > tree/etc/demo.conf
head -c 2000 /dev/urandom > tree/usr/share/doc/file7
ostree commit --repo=build -b demo/stable --tree=dir=tree -s 'demo v2' >/dev/null
"$bin" push -r build -a "http://127.0.0.1:$port" -b demo/stable

step "Pushing again is a no-op"
"$bin" push -r build -a "http://127.0.0.1:$port" -b demo/stable

if [ "$(id -u)" = 0 ] && [ -x /usr/sbin/sshd ]; then
  step "A third commit, pushed over ssh: sshd on 127.0.0.1:$((port + 2)) relays it to the daemon's socket"
  mkdir -p ssh && chmod 700 ssh && mkdir -p /run/sshd
  ssh-keygen -q -t ed25519 -N '' -f ssh/host_key && ssh-keygen -q -t ed25519 -N '' -f ssh/client_key
  cp ssh/client_key.pub ssh/authorized_keys
  printf '[127.0.0.1]:%s %s\n' "$((port + 2))" "$(cut -d' ' -f1,2 ssh/host_key.pub)" > ssh/known_hosts
  cat > ssh/sshd_config <<CONF
ListenAddress 127.0.0.1:$((port + 2))
HostKey $work/ssh/host_key
PidFile none
AuthorizedKeysFile $work/ssh/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
CONF
  /usr/sbin/sshd -D -e -f ssh/sshd_config 2> ssh/sshd.log &
  sshd_pid=$!
  for _ in $(seq 1 50); do grep -q "Server listening" ssh/sshd.log && break; sleep 0.1; done
  sleep 1 # a newer commit, by its timestamp in seconds
  echo 'version=3' > tree/etc/demo.conf
  ostree commit --repo=build -b demo/stable --tree=dir=tree -s 'demo v3' >/dev/null
  ssh_cmd="ssh -F /dev/null -i $work/ssh/client_key -o IdentitiesOnly=yes -o BatchMode=yes -o UserKnownHostsFile=$work/ssh/known_hosts -o StrictHostKeyChecking=yes -p $((port + 2))"
  "$bin" push -r build --ssh-command "$ssh_cmd" --command "$bin" "root@127.0.0.1:$work/production" -b demo/stable
  grep -o 'msg="session created".*' daemon.log | tail -n 1
else
  step "(The push over ssh is shown when run as root with openssh-server installed)"
fi

step "The production repository"
ostree refs --repo=production --list
ostree log --repo=production demo/stable | head -n 8
ostree fsck --repo=production

step "A client pulls it over HTTP into a bare-user repository"
python3 -m http.server --bind 127.0.0.1 --directory production $((port + 1)) >/dev/null 2>&1 &
http_pid=$!
trap 'kill $http_pid 2>/dev/null; cleanup' EXIT
sleep 1
ostree init --mode=bare-user --repo=client
ostree remote add --repo=client --no-gpg-verify production "http://127.0.0.1:$((port + 1))"
ostree pull --repo=client production demo/stable
ostree fsck --repo=client
[ "$(ostree rev-parse --repo=client demo/stable)" = "$(ostree rev-parse --repo=build demo/stable)" ]

step "Done: the daemon stops now"
