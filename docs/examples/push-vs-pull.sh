#!/usr/bin/env bash
# Measures a cold and an incremental (1 %) push of a generated tree next to
# `ostree pull` over HTTP of the same commits, in the same run, with the peak
# RSS of client and daemon. Usage: push-vs-pull.sh [files] [ostree-upload]
# (default 20000 files, bin/ostree-upload). Needs python3, bc and GNU time.
set -euo pipefail
files=${1:-20000}
bin=$(realpath "${2:-bin/ostree-upload}")
w=$(mktemp -d "${TMPDIR:-/tmp}/push-vs-pull.XXXXXX"); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$w"' EXIT; cd "$w"
FILES=$files python3 - <<'PY'
import os, random
random.seed(7)
for i in range(int(os.environ["FILES"])):
    d = f"tree/d{i%50:02d}/e{i%13}"
    os.makedirs(d, exist_ok=True)
    n = random.randint(100, 20000) if i % 20 else random.randint(100000, 500000)
    with open(f"{d}/f{i:05d}", "wb") as f:
        f.write(os.urandom(n//2) + bytes(n - n//2))
PY
ostree init --mode=archive --repo=build
ostree commit --repo=build -b main --tree=dir=tree -s A --timestamp=@1700000000 >/dev/null
FILES=$files python3 - <<'PY'
import os, random
random.seed(8)
for i in range(0, int(os.environ["FILES"]), 100):   # 1 %
    p = f"tree/d{i%50:02d}/e{i%13}/f{i:05d}"
    with open(p, "wb") as f: f.write(os.urandom(3000))
PY
ostree commit --repo=build -b main --tree=dir=tree -s B --timestamp=@1700000100 >/dev/null
A=$(ostree rev-parse --repo=build main^); B=$(ostree rev-parse --repo=build main)
du -sh build/objects; find build/objects -type f | wc -l
tok=$($bin gentoken -c ou.yaml 2>/dev/null | tail -1)
$bin receive -c ou.yaml -r prod -a 127.0.0.1:18090 2>daemon.log & dpid=$!
sleep 1
# a build repo holding only A, for the cold push
ostree init --mode=archive --repo=buildA; ostree pull-local --repo=buildA build $A >/dev/null; ostree refs --repo=buildA --create=main $A
t0=$(date +%s.%N)
/usr/bin/time -f "client peak RSS %M KiB" env OSTREE_UPLOAD_TOKEN=$tok $bin push -q -r buildA -a http://127.0.0.1:18090 -b main
t1=$(date +%s.%N)
/usr/bin/time -f "client peak RSS %M KiB" env OSTREE_UPLOAD_TOKEN=$tok $bin push -q -r build -a http://127.0.0.1:18090 -b main
t2=$(date +%s.%N)
echo "push cold: $(echo "$t1 - $t0" | bc) s; push incremental (1%): $(echo "$t2 - $t1" | bc) s"
grep VmHWM /proc/$dpid/status | sed 's/^/daemon /'
kill $dpid; wait $dpid || true
(cd build && exec python3 -m http.server --bind 127.0.0.1 18091 >/dev/null 2>&1) & hpid=$!
sleep 1
ostree init --mode=archive --repo=pulled
ostree remote add --repo=pulled --no-gpg-verify b http://127.0.0.1:18091
t0=$(date +%s.%N); ostree pull --repo=pulled b $A >/dev/null; t1=$(date +%s.%N)
ostree pull --repo=pulled b $B >/dev/null; t2=$(date +%s.%N)
echo "ostree pull cold: $(echo "$t1 - $t0" | bc) s; ostree pull incremental: $(echo "$t2 - $t1" | bc) s"
kill $hpid
ostree fsck --repo=prod | tail -1
