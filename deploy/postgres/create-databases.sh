#!/bin/sh
# Creates the databases beside MLflow's: the shared Optuna study's and the service's
# served-rows record. The postgres image runs this once, on the first start with an
# empty data volume (on an older volume: `createdb` them by hand).
set -eu

for db in "${OPTUNA_DB:-optuna}" "${RECORD_DB:-tabserve_record}"; do
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
        -v db="$db" -v owner="$POSTGRES_USER" <<'SQL'
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'owner')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db')\gexec
SQL
done
