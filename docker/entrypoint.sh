#!/bin/sh
# Apply the migrations when asked (only the api service is, so replicas never race), then run
# the command.
set -eu
if [ "${ILLBRIDGE_MIGRATE_ON_START:-false}" = "true" ]; then
    illbridge migrate
fi
exec "$@"
