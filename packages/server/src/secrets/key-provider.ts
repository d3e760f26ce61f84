import { createKeyring, type Keyring, SealedValueError, sealedKeyId } from './keyring.js';
import type { MasterKeys } from './master-key.js';

/**
 * Where the master key (the key-encryption key) lives (SEC-1). Only data keys pass through it: they
 * are wrapped here, and the values themselves are sealed by the data keys. A KMS implements the same
 * three calls; the local provider below keeps the master keys in memory, from the key file or
 * BULWARK_MASTER_KEY.
 */
export interface MasterKeyProvider {
  /** `local`, or the KMS's name: for the start-up log and `bulwark keys status`. */
  readonly name: string;
  /** The id of the key that wraps from now on. */
  currentKeyId(): string;
  wrap(dataKey: Buffer, context: string): string;
  unwrap(wrapped: string, context: string): Buffer;
}

/**
 * The master keys held locally. `reload` reads them again: `bulwark keys rotate` adds a new current
 * key to the key file while servers run, and a server picks it up before it next wraps a data key,
 * or when it meets a data key wrapped by a key it does not know yet.
 */
export function createLocalKeyProvider(initial: MasterKeys, reload: () => MasterKeys): MasterKeyProvider {
  let ring: Keyring = createKeyring(initial);
  const refresh = () => {
    ring = createKeyring(reload());
  };
  return {
    name: 'local',
    currentKeyId: () => ring.currentKeyId,
    wrap(dataKey, context) {
      refresh();
      return ring.seal(dataKey, context);
    },
    unwrap(wrapped, context) {
      if (!ring.keyIds.includes(sealedKeyId(wrapped))) refresh();
      if (!ring.keyIds.includes(sealedKeyId(wrapped)))
        throw new SealedValueError(
          `wrapped by master key ${sealedKeyId(wrapped)}, which this server does not hold (key file or BULWARK_MASTER_KEY): restore that key from backup`,
        );
      return ring.open(wrapped, context);
    },
  };
}
