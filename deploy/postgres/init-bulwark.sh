#!/bin/sh
# Run once by the postgres image on an empty data directory (/docker-entrypoint-initdb.d): a role
# that owns only Bulwark's database, not a superuser (Bulwark warns at every start otherwise).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres -v pw="$DATABASE_PASSWORD" <<'SQL'
create role bulwark login password :'pw';
create database bulwark owner bulwark;
SQL
