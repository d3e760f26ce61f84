export type CheckStatus = 'ok' | 'down';

export interface ReadinessDeps {
  pingDatabase: () => Promise<void>;
  /** Present only when Redis is configured: then readiness requires it. */
  pingRedis?: () => Promise<void>;
  migrationsApplied: () => Promise<boolean>;
  stopping: () => boolean;
  timeoutMs?: number;
}

export interface Readiness {
  ready: boolean;
  checks: { database: CheckStatus; migrations: CheckStatus; redis?: CheckStatus; accepting: CheckStatus };
}

function withTimeout(work: Promise<void>, ms: number): Promise<CheckStatus> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<CheckStatus>((resolve) => {
    timer = setTimeout(() => resolve('down'), ms);
  });
  return Promise.race([
    work.then(
      (): CheckStatus => 'ok',
      (): CheckStatus => 'down',
    ),
    timeout,
  ]).finally(() => clearTimeout(timer));
}

/** PLAT-4 readiness: the database answers, migrations are applied, Redis answers when configured, and the server is not stopping. */
export function createReadinessCheck(deps: ReadinessDeps): () => Promise<Readiness> {
  const timeoutMs = deps.timeoutMs ?? 2000;
  return async () => {
    const [database, migrations, redis] = await Promise.all([
      withTimeout(deps.pingDatabase(), timeoutMs),
      withTimeout(
        deps.migrationsApplied().then((applied) => {
          if (!applied) throw new Error('migrations pending');
        }),
        timeoutMs,
      ),
      deps.pingRedis ? withTimeout(deps.pingRedis(), timeoutMs) : Promise.resolve(undefined),
    ]);
    const checks: Readiness['checks'] = {
      database,
      migrations,
      accepting: deps.stopping() ? 'down' : 'ok',
      ...(redis ? { redis } : {}),
    };
    return { ready: Object.values(checks).every((status) => status === 'ok'), checks };
  };
}
