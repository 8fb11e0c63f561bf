# Sourced by test.sh and bench.sh: the Python tools of the suite in a virtualenv outside the
# clone, so system Python stays untouched and reruns are instant. The end-to-end tests
# deliver to a real SMTP server (aiosmtpd, tests/smtp/), parse the deployment files (PyYAML)
# fuzz the HTTP API from its OpenAPI document (schemathesis) and make real foreign password
# hashes (Werkzeug, Django, bcrypt, argon2-cffi), validate the Kubernetes manifests
# (kubernetes-validate) and decode OTLP traces (opentelemetry-proto).
VENV="${XDG_CACHE_HOME:-$HOME/.cache}/pwrecovery/smtp-venv"
if ! "$VENV/bin/python" -c 'import aiosmtpd, yaml, schemathesis, werkzeug, django, bcrypt, argon2, kubernetes_validate, opentelemetry.proto' >/dev/null 2>&1; then
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
  fi
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r tests/requirements.txt
fi
export SMTP_SINK_PYTHON="$VENV/bin/python"
export SCHEMATHESIS="$VENV/bin/schemathesis"
