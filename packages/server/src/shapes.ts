/** Shapes of identifiers people type, shared by the request schemas and the services that check them. */

export const SLUG_SHAPE = /^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$/;
export const EMAIL_SHAPE = /^[^\s@]+@[^\s@]+$/;
