#!/bin/sh
# Runs this virtualenv's Python as if on an AVX2-only CPU (Zen 3: no AVX-512, no VNNI) under qemu-user,
# so ONNX Runtime picks the int8 kernels such CPUs run (`vpmaddubsw`, which saturates in int16):
#
#     scripts/avx2_only.sh -m pytest -q tests/test_quantize.py
#     scripts/avx2_only.sh -m npu_ep info
#
# Needs Debian's qemu-user (apt-get install qemu-user) and an active virtualenv. Children the process
# starts with sys.executable (the CLI tests, Ray workers) run under the same emulated CPU. Emulation runs
# about ten times slower than the host: use it for correctness, never for speed.
set -eu
: "${VIRTUAL_ENV:?activate the project virtualenv first (. .venv/bin/activate)}"
command -v qemu-x86_64 >/dev/null || { echo "avx2_only.sh: qemu-x86_64 not found (apt-get install qemu-user)" >&2; exit 2; }
real=$(readlink -f "$VIRTUAL_ENV/bin/python")
cpu=EPYC-Milan
# Flags of that model qemu's TCG cannot emulate: dropped, so qemu prints no warning into the tests' stderr.
drop=$(qemu-x86_64 -cpu "$cpu" /bin/true 2>&1 | sed -n 's/.*CPUID[^.]*\.[^.]*\.\([a-z0-9-]*\) .*/,-\1/p' | sort -u | tr -d '\n')
env=$(mktemp -d "${TMPDIR:-/tmp}/npu-ep-avx2.XXXXXX")
trap 'rm -rf "$env"' EXIT
mkdir "$env/bin"
cp "$VIRTUAL_ENV/pyvenv.cfg" "$env/"
ln -s "$VIRTUAL_ENV/lib" "$env/lib"
# argv[0] is the wrapper, so Python finds this pyvenv.cfg and sys.executable comes back through qemu.
cat >"$env/bin/python" <<EOF
#!/bin/sh
exec qemu-x86_64 -cpu $cpu$drop -0 "$env/bin/python" "$real" "\$@"
EOF
chmod +x "$env/bin/python"
ln -s python "$env/bin/python3"
PATH="$env/bin:$PATH" VIRTUAL_ENV="$env" "$env/bin/python" "$@"
