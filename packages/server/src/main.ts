import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import type { DestinationStream, Logger } from 'pino';
import { accessRoutes } from './access/access.routes.js';
import { createAccessService } from './access/access.service.js';
import { createAccessStore } from './access/access.store.js';
import { createRolesService } from './access/roles.service.js';
import { createAgentKeySeals } from './agents/agent-keys.js';
import { agentsRoutes } from './agents/agents.routes.js';
import { createAgentsService } from './agents/agents.service.js';
import { createAgentsStore } from './agents/agents.store.js';
import { createAgentGateway } from './agents/gateway.js';
import { createRegistrationTokensService } from './agents/registration-tokens.service.js';
import { createRegistrationTokensStore } from './agents/registration-tokens.store.js';
import { createServicesService } from './agents/services.service.js';
import { createServicesStore } from './agents/services.store.js';
import { apiKeysRoutes } from './apikeys/api-keys.routes.js';
import { createApiKeysService } from './apikeys/api-keys.service.js';
import { auditRoutes } from './audit/audit.routes.js';
import { createAuditedTransactions } from './audit/audited-transaction.js';
import { createAuditSinks } from './audit/sinks.js';
import { bulkRunsRoutes } from './commands/bulk-runs.routes.js';
import { createBulkRunsService } from './commands/bulk-runs.service.js';
import { createBulkRunsStore } from './commands/bulk-runs.store.js';
import { createCommandNamesStore } from './commands/command-names.store.js';
import { createCommandSealer } from './commands/command-seal.js';
import { commandsRoutes } from './commands/commands.routes.js';
import { createCommandsService } from './commands/commands.service.js';
import { createCommandsStore } from './commands/commands.store.js';
import { createOrgEvents } from './commands/org-events.js';
import { orgEventsRoutes } from './commands/org-events.routes.js';
import type { Config } from './config.js';
import { type CoreServices, openCore } from './core.js';
import { migrationsUpToDate } from './db/migrate.js';
import { createHttpApp } from './http/app.js';
import { consoleRoutes } from './http/console.routes.js';
import { BUILT_CONSOLE_DIR, createConsoleFiles } from './http/console-files.js';
import { openApiRoute } from './http/openapi.js';
import type { RouteDefinition } from './http/route.js';
import { authRoutes } from './identity/auth.routes.js';
import { createAuthService } from './identity/auth.service.js';
import { bootstrapFirstOwner } from './identity/bootstrap.js';
import { createBreachedPasswords } from './identity/breached-passwords.js';
import { createCredentialSeals, credentialIntegrityAlarm } from './identity/credential-seals.js';
import { createCsrf } from './identity/csrf.js';
import { createLiveTicketsService } from './identity/live-tickets.service.js';
import { createLiveTicketsStore } from './identity/live-tickets.store.js';
import { createLoginLimiter } from './identity/login-limiter.js';
import { createPasswordHasher } from './identity/password-hasher.js';
import { createPasswords } from './identity/passwords.js';
import { personalDataRoutes } from './identity/personal-data.routes.js';
import { createPersonalDataService } from './identity/personal-data.service.js';
import { createRouteGuard } from './identity/session-guard.js';
import { createSessionsService } from './identity/sessions.service.js';
import { createSessionsStore } from './identity/sessions.store.js';
import { createUsersStore } from './identity/users.store.js';
import { createLogger } from './logging.js';
import { mfaRoutes } from './mfa/mfa.routes.js';
import { createMfaService } from './mfa/mfa.service.js';
import { relyingPartyResolver } from './mfa/relying-party.js';
import {
  createBackingTls,
  warnAboutPlaintextBackingServices,
  warnAboutUnverifiedTls,
} from './net/backing-tls.js';
import { createGuardedFetch, type GuardedFetch, outboundPolicyOf } from './net/outbound.js';
import { notificationsRoutes } from './notifications/notifications.routes.js';
import { createNotificationsService } from './notifications/notifications.service.js';
import { createNotificationsStore } from './notifications/notifications.store.js';
import { backupRoutes } from './ops/backup.routes.js';
import { createBackupService, sweepBackupScratch } from './ops/backup.service.js';
import { createBackupStore } from './ops/backup.store.js';
import { createLocalClusterBus, createRedisClusterBus } from './ops/cluster-bus.js';
import { createLeases, type LeaseName } from './ops/leases.js';
import { createMaintenanceService } from './ops/maintenance.service.js';
import { createMaintenanceStore } from './ops/maintenance.store.js';
import { startMetricsListener } from './ops/metrics-listener.js';
import { opsRoutes } from './ops/ops.routes.js';
import { warnAboutPrivileges } from './ops/privilege-warnings.js';
import { createReadinessCheck } from './ops/readiness.js';
import { accessReviewRoutes } from './orgs/access-review.js';
import { dashboardRoutes } from './orgs/dashboard.routes.js';
import { createDashboardService } from './orgs/dashboard.service.js';
import { createDashboardStore } from './orgs/dashboard.store.js';
import { invitationsRoutes } from './orgs/invitations.routes.js';
import { createInvitationsService } from './orgs/invitations.service.js';
import { createInvitationsStore } from './orgs/invitations.store.js';
import { membersRoutes } from './orgs/members.routes.js';
import { createMembersService } from './orgs/members.service.js';
import { createMembersStore } from './orgs/members.store.js';
import { createOrgsStore } from './orgs/orgs.store.js';
import { securityPolicyRoutes } from './orgs/security-policy.routes.js';
import { createSecurityPolicyService } from './orgs/security-policy.service.js';
import { teamsRoutes } from './orgs/teams.routes.js';
import { createTeamsService } from './orgs/teams.service.js';
import { createTeamsStore } from './orgs/teams.store.js';
import { scimRoutes } from './scim/scim.routes.js';
import { createScimService } from './scim/scim.service.js';
import { createScimStore } from './scim/scim.store.js';
import { createScimSettingsService } from './scim/scim-settings.service.js';
import { assertPrivateFile } from './secrets/master-key.js';
import { secretsRoutes } from './secrets/secrets.routes.js';
import { createSecretsService } from './secrets/secrets.service.js';
import { workloadIdentityRoutes } from './secrets/workload-identity.routes.js';
import { createWorkloadIdentityService } from './secrets/workload-identity.service.js';
import { createWorkloadIdentityKeysStore } from './secrets/workload-identity-keys.store.js';
import { createExternalTokensService } from './sso/external-tokens.service.js';
import { createLdapDirectory } from './sso/ldap.js';
import { createOidcRelyingParty } from './sso/oidc.js';
import { createSamlServiceProvider } from './sso/saml.js';
import { ssoRoutes } from './sso/sso.routes.js';
import { createSsoStore } from './sso/sso.store.js';
import { createSsoConnectionsService } from './sso/sso-connections.service.js';
import { createSsoDomainsService } from './sso/sso-domains.service.js';
import { createSsoEnforcementService } from './sso/sso-enforcement.service.js';
import { createSsoSignInService } from './sso/sso-sign-in.service.js';
import { VERSION } from './version.js';

/**
 * The composition root: the only module that knows every other. It builds the services from the
 * configuration, starts the HTTP listener and background jobs, and owns the shutdown order.
 */

export interface StartOptions {
  /** Where JSON logs go; stdout by default. */
  logDestination?: DestinationStream;
  clock?: () => number;
  /** Where the first owner's one-time password is shown: the terminal (stderr), never the logs. */
  print?: (line: string) => void;
}

const printToTerminal = (line: string) => process.stderr.write(`${line}\n`);

/** AAL2 (NIST SP 800-63B) session lifetimes; longer is the operator's choice, said out loud at start. */
const AAL2_IDLE_MINUTES = 30;
const AAL2_ABSOLUTE_HOURS = 12;

/**
 * Users, sessions, sign-in, organizations and access control: the guard every permission route goes
 * through and the routes of these domains; the first owner on first start.
 */
async function startIdentity(deps: {
  config: Config;
  core: CoreServices;
  logger: Logger;
  clock: () => number;
  print: (line: string) => void;
  redis: Redis | undefined;
  outbound: GuardedFetch;
}) {
  const { config, core, logger, clock } = deps;
  const { audit } = core;
  const db = core.database.db;
  const { idleMinutes, absoluteHours } = config.sessions;
  if (idleMinutes > AAL2_IDLE_MINUTES || absoluteHours > AAL2_ABSOLUTE_HOURS) {
    logger.warn(
      { idleMinutes, absoluteHours },
      'session lifetimes are relaxed beyond NIST SP 800-63B AAL2 (30 min idle, 12 h absolute)',
    );
  }
  const users = createUsersStore(db);
  const orgs = createOrgsStore(db);
  const hasher = createPasswordHasher(
    config.passwordHashConcurrency === undefined ? {} : { concurrency: config.passwordHashConcurrency },
  );
  const onBroken = credentialIntegrityAlarm({ audit, logger, metrics: core.metrics.credentials });
  const passwords = createPasswords({ hasher, dataKeys: core.dataKeys, onBroken });
  const seals = createCredentialSeals({ dataKeys: core.dataKeys, onBroken });
  const sessions = createSessionsService({
    store: createSessionsStore(db),
    seals,
    clock,
    policy: {
      idleMs: idleMinutes * 60_000,
      absoluteMs: absoluteHours * 3_600_000,
      maxPerUser: config.sessions.maxPerUser,
    },
  });
  const csrf = createCsrf(await core.dataKeys.deriveKey('instance', 'csrf'));
  const limiter = createLoginLimiter({
    limits: config.loginLimits,
    keyPrefix: `${config.redisKeyPrefix}:login`,
    ...(deps.redis ? { redis: deps.redis } : {}),
  });
  // AUTH-1's optional breached-password check, through the SSRF guard; off unless configured.
  const breached = config.breachedPasswordsUrl
    ? createBreachedPasswords({ fetch: deps.outbound, baseUrl: config.breachedPasswordsUrl })
    : undefined;
  await bootstrapFirstOwner({ config, users, passwords, audit, clock, print: deps.print, breached });

  const transact = createAuditedTransactions(audit);
  const accessStore = createAccessStore(db);
  const teamsStore = createTeamsStore(db);
  const access = createAccessService({ store: accessStore, audit });
  const roles = createRolesService({ store: accessStore, transact, clock });
  const mfa = createMfaService({ db, dataKeys: core.dataKeys, seals, audit, clock });
  const auth = createAuthService({
    users,
    orgs,
    sessions,
    passwords,
    csrf,
    audit,
    limiter,
    mfa,
    clock,
    breached,
  });
  const members = createMembersService({
    orgs,
    members: createMembersStore(db),
    teams: teamsStore,
    sessions,
    transact,
    clock,
  });
  const teams = createTeamsService({ teams: teamsStore, transact, clock });
  const secrets = createSecretsService({ db, transact, dataKeys: core.dataKeys, clock });
  const apiKeys = createApiKeysService({ db, transact, seals, audit, clock });
  const invitations = createInvitationsService({
    invitations: createInvitationsStore(db),
    users,
    passwords,
    seals,
    transact,
    clock,
    breached,
    email: core.email?.outbox,
    limits: config.invitationEmails,
  });
  const relyingPartyOf = relyingPartyResolver(config.publicUrl);
  const ssoStore = createSsoStore(db);
  const oidcRelyingParty = createOidcRelyingParty({
    timeoutSeconds: config.sso.timeoutSeconds,
    clock,
    fetch: deps.outbound,
  });
  const ldapDirectory = createLdapDirectory({
    timeoutSeconds: config.sso.timeoutSeconds,
    tls: createBackingTls(config.backingTls),
  });
  const samlServiceProvider = createSamlServiceProvider({ clock });
  const ssoConnections = createSsoConnectionsService({
    store: ssoStore,
    access: accessStore,
    teams: teamsStore,
    dataKeys: core.dataKeys,
    relyingParty: oidcRelyingParty,
    directory: ldapDirectory,
    saml: samlServiceProvider,
    transact,
    clock,
  });
  const ssoSignIn = createSsoSignInService({
    connections: ssoConnections,
    store: ssoStore,
    users,
    access: accessStore,
    relyingParty: oidcRelyingParty,
    provisioned: createScimStore(db),
    directory: ldapDirectory,
    saml: samlServiceProvider,
    limiter,
    dataKeys: core.dataKeys,
    seals,
    sessions,
    mfa,
    audit,
    clock,
  });
  const ssoDomains = createSsoDomainsService({
    store: ssoStore,
    transact,
    clock,
    dnsServers: config.sso.dnsServers,
    timeoutSeconds: config.sso.timeoutSeconds,
  });
  const scimSettings = createScimSettingsService({
    store: createScimStore(db),
    access: accessStore,
    seals,
    transact,
    clock,
  });
  return {
    access,
    transact,
    secrets,
    seals,
    guard: createRouteGuard({
      sessions,
      apiKeys,
      scim: scimSettings,
      externalTokens: createExternalTokensService({
        connections: ssoConnections,
        relyingParty: oidcRelyingParty,
        store: ssoStore,
        users,
        seals,
        mfa,
        clock,
        timeoutSeconds: config.sso.timeoutSeconds,
        fetch: deps.outbound,
      }),
      csrf,
      audit,
      access,
      stepUpMs: config.sessions.stepUpMinutes * 60_000,
      clock,
    }),
    routes: [
      ...authRoutes(auth, relyingPartyOf),
      ...personalDataRoutes(createPersonalDataService({ db, audit, pii: core.pii, clock })),
      ...mfaRoutes(mfa, auth, relyingPartyOf),
      ...notificationsRoutes(createNotificationsService({ store: createNotificationsStore(db), clock })),
      ...securityPolicyRoutes(createSecurityPolicyService({ transact, mfa })),
      ...accessRoutes({ access, roles }),
      ...membersRoutes(members),
      ...teamsRoutes(teams),
      ...secretsRoutes(secrets),
      ...apiKeysRoutes(apiKeys, clock),
      ...invitationsRoutes({ invitations, auth }),
      ...accessReviewRoutes({
        access,
        roles,
        members,
        invitations,
        apiKeys,
        mfa,
        sso: ssoConnections,
        domains: ssoDomains,
        scim: scimSettings,
        audit,
        clock,
      }),
      ...auditRoutes(audit),
      ...ssoRoutes({
        connections: ssoConnections,
        signIn: ssoSignIn,
        enforcement: createSsoEnforcementService({ store: ssoStore, orgs, mfa, transact }),
        domains: ssoDomains,
        publicUrl: config.publicUrl,
      }),
      ...scimRoutes({
        scim: createScimService({ db, sessions, transact, clock }),
        settings: scimSettings,
        publicUrl: config.publicUrl,
      }),
    ],
  };
}

export interface RunningServer {
  url: string;
  app: FastifyInstance;
  metricsUrl: string | undefined;
  logger: Logger;
  /** Stops accepting, finishes in-flight requests, commits the audit log, closes the database. */
  close(): Promise<void>;
}

/** How long shutdown waits for open HTTP connections to end on their own before ending them. */
const SHUTDOWN_GRACE_MS = 5000;
const RETENTION_EVERY_MS = 6 * 3600_000;
const LISTEN_BACKLOG = 4096;
/** Approval and delivery deadlines are checked this often (an indexed query that usually finds nothing). */
const COMMAND_DEADLINES_EVERY_MS = 1000;

interface BackgroundJob {
  /** Stops scheduling and waits for a run in progress, so shutdown never closes the database under it. */
  stop(): Promise<void>;
}

function every(ms: number, logger: Logger, name: string, job: () => Promise<unknown>): BackgroundJob {
  let running: Promise<void> | undefined;
  const timer = setInterval(() => {
    if (running) return;
    running = job()
      .then(
        () => {},
        (error) => logger.error({ err: error, job: name }, 'background job failed'),
      )
      .finally(() => {
        running = undefined;
      });
  }, ms);
  timer.unref();
  return {
    async stop() {
      clearInterval(timer);
      await running;
    },
  };
}

export async function startServer(config: Config, options: StartOptions = {}): Promise<RunningServer> {
  const logger = createLogger({
    level: config.logLevel,
    ...(options.logDestination ? { destination: options.logDestination } : {}),
  });
  if (config.tls) assertPrivateFile(config.tls.keyFile, 'TLS private key');
  warnAboutUnverifiedTls(logger, config.backingTls);
  warnAboutPlaintextBackingServices(logger, {
    databaseUrl: config.database.kind === 'postgres' ? config.database.url : undefined,
    redisUrl: config.redisUrl,
  });
  // A crash mid-backup or mid-restore leaves plaintext scratch copies (and a pgpass) behind.
  for (const file of sweepBackupScratch(config))
    logger.warn({ file }, 'removed a scratch file left by a backup or restore that did not finish');
  const clock = options.clock ?? Date.now;
  const core = await openCore(config, logger, clock);
  // The one SSRF-guarded fetch (NET-3): every server-side HTTP request goes through it.
  const outbound = createGuardedFetch(outboundPolicyOf(config));
  await warnAboutPrivileges(logger, core.database);
  const { database, audit, metrics } = core;
  // Sign what a previous run left unsigned (it may have stopped before its last checkpoint); each
  // chain is verified from its last signed statement first, and a broken one is reported, not signed.
  await audit.checkpointAll();

  const redis = config.redisUrl
    ? new Redis(config.redisUrl, {
        lazyConnect: true,
        maxRetriesPerRequest: 1,
        enableOfflineQueue: false,
        // A Redis that accepts connections but never answers must fail sign-in closed (503), not hang it.
        commandTimeout: 2000,
        // NET-4: `rediss://` is verified against the backing-services CA; a certificate from any other
        // CA fails the connection, and the limiter then fails closed like any Redis outage.
        ...(config.redisUrl.startsWith('rediss:')
          ? { tls: createBackingTls(config.backingTls).options('redis') }
          : {}),
      })
    : undefined;
  redis?.on('error', (error) => logger.warn({ err: error }, 'redis connection error'));
  await redis
    ?.connect()
    .catch((error) => logger.error({ err: error }, 'redis is not reachable; /readyz reports it'));

  let stopping = false;
  const readiness = createReadinessCheck({
    pingDatabase: () => database.ping(),
    ...(redis ? { pingRedis: async () => void (await redis.ping()) } : {}),
    migrationsApplied: () => migrationsUpToDate(database.db),
    stopping: () => stopping,
  });

  const identity = await startIdentity({
    config,
    core,
    logger,
    clock,
    print: options.print ?? printToTerminal,
    redis,
    outbound,
  });

  const agentsStore = createAgentsStore(database.db);
  const registrationTokens = createRegistrationTokensStore(database.db);
  const servicesStore = createServicesStore(database.db);
  const services = createServicesService({ services: servicesStore, audit, clock });
  const commandsStore = createCommandsStore(database.db, core.groupCommit);
  const agentKeys = createAgentKeySeals(core.dataKeys);
  // HA-1: several instances on one PostgreSQL database share Redis for what crosses between them;
  // alone (SQLite, or no Redis) an instance tells nobody, and everything stays in this process.
  const cluster =
    redis && database.dialect === 'postgres'
      ? await createRedisClusterBus({ redis, prefix: `${config.redisKeyPrefix}:cluster`, logger })
      : createLocalClusterBus();
  const orgEvents = createOrgEvents({
    cluster,
    agents: agentsStore,
    onError: (error) => logger.error({ err: error }, 'could not publish a live event'),
  });
  const gateway = createAgentGateway({
    agents: agentsStore,
    agentKeys,
    services,
    commandOwner: (orgId, commandId) => commandsStore.find(orgId, commandId),
    serverKeys: core.serverKeys,
    audit,
    logger,
    clock,
    metrics: metrics.agents,
    options: { ...config.agents, tls: config.tls !== undefined, trustedProxies: config.trustedProxies },
    presence: orgEvents.agentPresence,
    cluster,
    limiterStore: { redis, keyPrefix: `${config.redisKeyPrefix}:rl` },
  });
  const agents = createAgentsService({
    agents: agentsStore,
    tokens: registrationTokens,
    serverKeys: core.serverKeys,
    agentKeys,
    seals: identity.seals,
    audit,
    transact: identity.transact,
    clock,
  });
  const tokens = createRegistrationTokensService({
    tokens: registrationTokens,
    seals: identity.seals,
    transact: identity.transact,
    clock,
  });

  const commandSealer = createCommandSealer(core.dataKeys);
  const workloadIdentity = createWorkloadIdentityService({
    store: createWorkloadIdentityKeysStore(database.db),
    dataKeys: core.dataKeys,
    issuer: config.publicUrl,
    audiences: config.workloadIdentity.audiences,
    clock,
  });
  await workloadIdentity.ensureKey();
  const commandsService = createCommandsService({
    commands: commandsStore,
    agents: agentsStore,
    services: servicesStore,
    access: identity.access,
    gateway,
    serverKeys: core.serverKeys,
    secrets: identity.secrets,
    audit,
    sealer: commandSealer,
    agentKeys,
    deliveryTtlMs: config.commands.deliveryTimeoutSeconds * 1000,
    metrics: metrics.commands,
    clock,
    stepUpMs: config.sessions.stepUpMinutes * 60_000,
    events: orgEvents,
    workloadIdentity,
    orgs: createOrgsStore(database.db),
    cluster,
  });
  gateway.attachCommands(commandsService.handlers);
  const bulkRuns = createBulkRunsService({
    store: createBulkRunsStore(database.db),
    commands: commandsService,
    commandsStore,
    access: identity.access,
    secrets: identity.secrets,
    audit,
    sealer: commandSealer,
    deliveryTtlMs: config.commands.deliveryTimeoutSeconds * 1000,
    clock,
  });
  const liveTickets = createLiveTicketsService({
    store: createLiveTicketsStore(database.db),
    seals: identity.seals,
    audit,
    clock,
  });

  // PLAT-6: which instance runs each cluster-wide job (ops/leases.ts); always this one on SQLite.
  const leases = createLeases({ config, metrics: metrics.leases, logger });

  // AUD-6: audit sinks; their one delivery loop of this process starts once the server listens, and
  // delivers only while this instance holds the sinks' lease.
  const auditSinks = createAuditSinks({
    config,
    database,
    audit,
    dataKeys: core.dataKeys,
    transact: identity.transact,
    fetch: outbound,
    outboundPolicy: outboundPolicyOf(config),
    metrics,
    logger,
    clock,
    leads: () => leases.acquire('audit-sinks'),
  });

  const routes: RouteDefinition[] = [
    ...opsRoutes({ readiness, registry: metrics.registry, metricsToken: config.metricsToken, audit }),
    ...backupRoutes({
      backups: createBackupService({
        config,
        masterKeys: core.masterKeys,
        audit,
        access: identity.access,
        store: createBackupStore(database.db),
        clock,
      }),
      audit,
    }),
    ...identity.routes,
    ...auditSinks.routes,
    ...workloadIdentityRoutes(workloadIdentity),
    ...bulkRunsRoutes({ bulkRuns }),
    ...commandsRoutes({
      commands: commandsService,
      agents: agentsStore,
      liveTickets,
      names: createCommandNamesStore(database.db),
    }),
    ...orgEventsRoutes({ events: orgEvents, liveTickets }),
    ...agentsRoutes({
      agents,
      tokens,
      services,
      access: identity.access,
      gateway,
      onRevoked: (caller, agentId) => commandsService.endForRevokedAgent(caller, agentId),
    }),
    ...dashboardRoutes(
      createDashboardService({
        store: createDashboardStore(database.db),
        lastHeartbeat: (agentId) => gateway.lastHeartbeat(agentId),
        inbox: (caller) => commandsService.inbox(caller),
        criticalEvents: (orgId, since, limit) => audit.recentCritical(orgId, since, limit),
        clock,
      }),
    ),
  ];
  routes.push(openApiRoute(routes, VERSION));
  // After the OpenAPI document: the console's files are not part of the API.
  routes.push(...consoleRoutes(createConsoleFiles(BUILT_CONSOLE_DIR)));
  const app = await createHttpApp(
    {
      config,
      logger,
      metrics: metrics.http,
      guard: identity.guard,
      generation: core.database.generation,
      limiterStore: { redis, keyPrefix: `${config.redisKeyPrefix}:rl` },
    },
    routes,
  );

  gateway.attach(app.server);
  // A fleet reconnecting after a restart arrives all at once. With Node's default backlog (511) the
  // kernel drops the connections that do not fit, and a client retries a dropped connection only
  // after 1, 3, 7, 15, 31 s...: a few agents of a large fleet came back a minute late (bench/fleet).
  // The kernel caps this at net.core.somaxconn.
  await app.listen({ host: config.host, port: config.port, backlog: LISTEN_BACKLOG });
  const address = app.server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `${config.tls ? 'https' : 'http'}://${host}:${address.port}`;
  const metricsListener =
    config.metricsPort === undefined
      ? undefined
      : await startMetricsListener(metrics.registry, config.metricsPort);

  const maintenance = createMaintenanceService({
    store: createMaintenanceStore(database.db),
    clock,
    logger,
    metrics: metrics.maintenance,
    options: {
      sessionIdleMs: config.sessions.idleMinutes * 60_000,
      commandOutputRetentionDays: config.maintenance.commandOutputRetentionDays,
    },
  });
  auditSinks.start();
  // Periodic work, by kind (docs/maintenance.md, "Jobs and leases"):
  // - cluster-wide, each under its own lease so exactly one instance runs it: the jobs below and the
  //   audit sink delivery (shared rows and cursors; two runners would send twice or race);
  // - per instance by nature, no lease: the gateway's heartbeat sweep and misbehaviour flush (this
  //   instance's own agent connections, which is what marks an agent offline), its last-seen flush
  //   (heartbeats counted in this process), the audit group commit, live event streams; and the
  //   checkpoints signed at start and at shutdown of what this instance appended.
  const leader = (name: LeaseName, ms: number, pass: () => Promise<unknown>) =>
    every(ms, logger, name, () => leases.runIfLeader(name, pass));
  const jobs = [
    leader('audit-checkpoint', config.audit.checkpointIntervalSeconds * 1000, () => audit.checkpointAll()),
    leader('audit-retention', RETENTION_EVERY_MS, () => audit.prune()),
    leader('command-deadlines', COMMAND_DEADLINES_EVERY_MS, () => commandsService.expireOverdue()),
    leader('bulk-runs', COMMAND_DEADLINES_EVERY_MS, () => bulkRuns.advanceAll()),
    leader('maintenance', config.maintenance.intervalSeconds * 1000, () => maintenance.runAll()),
    leader('api-key-expiry-notices', config.maintenance.intervalSeconds * 1000, () =>
      core.notifications.noticeExpiringApiKeys(),
    ),
  ];
  // Per instance, no lease: each finds the commands waiting for the agents it holds, should the
  // message telling it so have been lost (HA-1); a lone instance delivers directly and loses none.
  if (cluster.shared)
    jobs.push(
      every(config.agents.heartbeatSeconds * 1000, logger, 'command-delivery-sweep', () =>
        commandsService.redeliver(gateway.held()),
      ),
    );
  const emailWorker = core.email?.worker(logger, metrics.registry);
  if (emailWorker && config.smtp)
    jobs.push(leader('email-outbox', config.smtp.pollSeconds * 1000, () => emailWorker.runOnce()));
  await audit.record({
    actor: { type: 'system', id: 'server', display: 'bulwark server' },
    action: 'system.started',
    outcome: 'success',
    details: { version: VERSION, database: database.dialect, tls: config.tls !== undefined },
  });
  logger.info(
    { url, metricsUrl: metricsListener?.url, database: database.dialect, version: VERSION },
    'bulwark is listening',
  );

  let closing: Promise<void> | undefined;
  const close = async () => {
    stopping = true;
    maintenance.stop();
    await Promise.all(jobs.map((job) => job.stop()));
    // What it has not delivered stays behind its cursor for the next start (the chain is the outbox).
    await auditSinks.stop();
    // With no pass left to run, the leases go at once: another instance's next pass takes them.
    await leases.close();
    // Agent connections first: they are not HTTP requests, and the listener would wait for them.
    await gateway.close();
    // Live streams last until their reader leaves: ended here, or the wait below would never end.
    orgEvents.close();
    // Fastify stops accepting, answers requests on open connections with 503, and waits for in-flight ones.
    // A connection whose client went away mid-stream can outlive its ended response; after a grace
    // period every connection is ended, so a shutdown never waits for ever.
    const forceClose = setTimeout(() => app.server.closeAllConnections(), SHUTDOWN_GRACE_MS);
    forceClose.unref();
    await app.close();
    clearTimeout(forceClose);
    await metricsListener?.close();
    await audit.record({
      actor: { type: 'system', id: 'server', display: 'bulwark server' },
      action: 'system.stopped',
      outcome: 'success',
      details: { version: VERSION },
    });
    await audit.close();
    await cluster.close();
    redis?.disconnect();
    await database.close();
    logger.info('bulwark stopped');
  };

  return {
    url,
    app,
    metricsUrl: metricsListener?.url,
    logger,
    close: () => {
      closing ??= close();
      return closing;
    },
  };
}
