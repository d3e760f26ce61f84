# The Bulwark control plane (docs/deployment.md). Two stages: `build` compiles the packages and the
# console, `runtime` holds only what `bulwark serve` runs: production dependencies, the built
# server and protocol, and the console's static files.
#
#   docker build -t bulwark .
#   docker build --build-arg BASE_IMAGE=registry.example.com/node:20-bookworm-slim -t bulwark .
#
# Another base must be Debian-like (the build stage uses apt-get) with Node.js 20.19 or newer, and the
# same base is used for both stages so native modules (better-sqlite3, argon2) match the runtime.
ARG BASE_IMAGE=node:20-bookworm-slim

FROM ${BASE_IMAGE} AS build
# better-sqlite3 compiles from source when no prebuilt binary for this Node.js can be fetched.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Manifests first: the dependency layer is reused until the lockfile changes.
COPY package.json package-lock.json ./
COPY packages/protocol/package.json packages/protocol/
COPY packages/server/package.json packages/server/
COPY packages/agent/package.json packages/agent/
COPY packages/console/package.json packages/console/
RUN npm ci --no-audit --no-fund
COPY tsconfig.base.json ./
COPY packages ./packages
RUN npm run build
# Development tools (TypeScript, Vite, test libraries) go; the compiled native modules stay.
RUN npm prune --omit=dev --no-audit --no-fund
# What the runtime needs, gathered in one place. A package's own node_modules holds the versions that
# differ from the root's (npm nests them there), so it comes too when present.
RUN mkdir -p /out/packages/protocol /out/packages/server /out/packages/console \
 && cp -a package.json package-lock.json node_modules /out/ \
 && cp -a packages/protocol/package.json packages/protocol/dist /out/packages/protocol/ \
 && cp -a packages/server/package.json packages/server/dist /out/packages/server/ \
 && if [ -d packages/server/node_modules ]; then cp -a packages/server/node_modules /out/packages/server/; fi \
 && if [ -d packages/protocol/node_modules ]; then cp -a packages/protocol/node_modules /out/packages/protocol/; fi \
 && cp -a packages/console/dist /out/packages/console/

FROM ${BASE_IMAGE} AS runtime
# A fixed uid, so that files mounted into the container (the master key file, TLS keys) can be
# owned by it on the host: Bulwark refuses a key file owned by another user or readable by others.
RUN groupadd --system --gid 10001 bulwark \
 && useradd --system --uid 10001 --gid bulwark --home-dir /var/lib/bulwark --no-create-home \
      --shell /usr/sbin/nologin bulwark \
 && install -d -m 0700 -o bulwark -g bulwark /var/lib/bulwark
WORKDIR /opt/bulwark
COPY --from=build --chown=root:root /out/ ./
# Binding to all addresses needs TLS (BULWARK_TLS_CERT_FILE + BULWARK_TLS_KEY_FILE) or the proxy in
# front (BULWARK_TRUSTED_PROXIES): without either the server refuses to start and says so.
ENV BULWARK_HOST=0.0.0.0 \
    BULWARK_PORT=8080 \
    BULWARK_DATA_DIR=/var/lib/bulwark
# The only place the server writes (SQLite, the master key file it creates on a first start, backup
# scratch files); everything else may be a read-only root filesystem with /tmp on a tmpfs.
VOLUME ["/var/lib/bulwark"]
USER 10001:10001
EXPOSE 8080
# Liveness only (the process answers); /readyz is for load balancers. Plain HTTP on loopback: with
# TLS terminated by the server itself, override this check.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.BULWARK_PORT||8080)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
STOPSIGNAL SIGTERM
# `docker run … bulwark` serves; `docker run … bulwark migrate` (or `config check`, `backup create`…)
# runs the CLI with the same configuration.
ENTRYPOINT ["node", "packages/server/dist/cli.js"]
CMD ["serve"]
