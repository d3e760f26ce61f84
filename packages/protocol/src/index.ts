export * from './agent-protocol.js';
export { canonicalJson, type JsonValue } from './canonical-json.js';
export { ID_BODY_PATTERN, ID_PREFIXES, type IdPrefix, isId, newId } from './ids.js';
export {
  openSecrets,
  SEALED_SECRETS_ALGORITHM,
  SealedSecrets,
  SealedSecretsError,
  sealSecrets,
} from './sealed-secrets.js';
export { generateToken, isWellFormedToken, TOKEN_PREFIXES, type TokenPrefix, tokenHash } from './tokens.js';
