#!/bin/sh
# Run once by the postgres image on an empty data directory (/docker-entrypoint-initdb.d). Two roles,
# neither a superuser (Bulwark warns at every start otherwise):
# - bulwark_owner owns the database and its schema; Bulwark runs its migrations as it
#   (BULWARK_DATABASE_OWNER_URL) and it grants the next role row access to every table;
# - bulwark is the role the instances serve as: it reads and writes rows under the row-level-security
#   policies, and can neither change the schema nor turn those policies off.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v owner_pw="$DATABASE_OWNER_PASSWORD" -v pw="$DATABASE_PASSWORD" <<'SQL'
create role bulwark_owner login nosuperuser nobypassrls password :'owner_pw';
create role bulwark login nosuperuser nobypassrls password :'pw';
create database bulwark owner bulwark_owner;
SQL
