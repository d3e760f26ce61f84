import { chmodSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeConfig, loadConfig } from '../config.js';
import { tempDir } from '../test-support/temp.js';

/** The SMTP settings are checked as a whole at start: email that could not work, or leak, is refused. */
describe('SMTP settings', () => {
  let dir: { path: string; remove(): Promise<void> };
  const base = {
    BULWARK_SMTP_HOST: 'smtp.example.com',
    BULWARK_SMTP_FROM: 'Bulwark <bulwark@example.com>',
    BULWARK_PUBLIC_URL: 'https://bulwark.example.com',
  };
  const load = (env: Record<string, string>) =>
    loadConfig({ env: { BULWARK_DATA_DIR: dir.path, ...env }, cwd: dir.path });

  beforeAll(async () => {
    dir = await tempDir('email-config');
  });
  afterAll(async () => {
    await dir.remove();
  });

  it('leaves email off unless an SMTP server is configured', () => {
    expect(load({}).smtp).toBeUndefined();
    expect(load(base).smtp).toMatchObject({ host: 'smtp.example.com', port: 587, tls: 'starttls' });
  });

  it('refuses SMTP without the console address or a From, and a From that spans lines', () => {
    expect(() => load({ ...base, BULWARK_PUBLIC_URL: '' })).toThrow(
      /BULWARK_PUBLIC_URL: is required with BULWARK_SMTP_HOST/,
    );
    expect(() => load({ ...base, BULWARK_SMTP_FROM: '' })).toThrow(/BULWARK_SMTP_FROM: is required/);
    expect(() => load({ ...base, BULWARK_SMTP_FROM: 'a@b.c\nBcc: x@y.z' })).toThrow(/must be one line/);
  });

  it('reads the password from a private file, refuses one others can read, and never shows it', () => {
    const file = path.join(dir.path, 'smtp-password');
    writeFileSync(file, 'hunter2-but-longer\n', { mode: 0o600 });
    const config = load({ ...base, BULWARK_SMTP_USER: 'bulwark', BULWARK_SMTP_PASSWORD_FILE: file });
    expect(config.smtp?.password).toBe('hunter2-but-longer');
    expect(describeConfig(config).join('\n')).not.toContain('hunter2');
    chmodSync(file, 0o644);
    expect(() => load({ ...base, BULWARK_SMTP_USER: 'bulwark', BULWARK_SMTP_PASSWORD_FILE: file })).toThrow(
      /readable or writable by group or others/,
    );
    expect(() => load({ ...base, BULWARK_SMTP_PASSWORD: 'x' })).toThrow(/BULWARK_SMTP_USER: is required/);
  });
});
