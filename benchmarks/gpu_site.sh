# Sourced by the GPU check scripts: install tsnpipe without its dependencies into /tmp/tsnpipe-site, from this
# tree (or, where it cannot be built there, from a wheel made with `pip wheel --no-deps -w .whl .`), after the
# dependency wheels the GPU image lacks (.whl/: ffmpeg-python, future, lmdb, lz4), and put it on PYTHONPATH.
site=/tmp/tsnpipe-site
python=${PYTHON:-python3}
dependencies=$(find .whl -type f -name "*.whl" ! -name "tsnpipe-*" 2>/dev/null || true)
if [ -n "$dependencies" ]; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --target "$site" $dependencies
fi
if ! "$python" -m pip install -q --no-deps --no-build-isolation --no-compile --target "$site" .; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --target "$site" .whl/tsnpipe-*.whl || exit 1
fi
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
