import { LABEL_KEY_PATTERN, LABEL_VALUE_PATTERN } from '@bulwark/protocol';

/**
 * Label selectors (ACC-3), the small Kubernetes-like language that scopes a role binding to agents:
 * comma-separated terms, all of which must hold — `env=staging`, `tier!=db`, `region` (the label is
 * present), `!canary` (absent). An empty selector is refused: "everything" is an unscoped binding,
 * said explicitly.
 */

export type Labels = Readonly<Record<string, string>>;

type Term =
  | { kind: 'equals'; key: string; value: string }
  | { kind: 'not_equals'; key: string; value: string }
  | { kind: 'exists'; key: string }
  | { kind: 'absent'; key: string };

export interface Selector {
  text: string;
  terms: Term[];
}

const KEY = LABEL_KEY_PATTERN;
const VALUE = LABEL_VALUE_PATTERN;
export const MAX_SELECTOR_TERMS = 16;

function parseTerm(raw: string): Term | string {
  const term = raw.trim();
  const comparison = /^([^!=]+?)\s*(!=|==|=)\s*(.+)$/.exec(term);
  if (comparison) {
    const [, key = '', operator, value = ''] = comparison;
    if (!KEY.test(key)) return `"${key}" is not a valid label key`;
    if (!VALUE.test(value.trim())) return `"${value}" is not a valid label value`;
    return operator === '!='
      ? { kind: 'not_equals', key, value: value.trim() }
      : { kind: 'equals', key, value: value.trim() };
  }
  const absent = term.startsWith('!');
  const key = absent ? term.slice(1).trim() : term;
  if (!KEY.test(key)) return `"${term}" is not a label term (key=value, key!=value, key or !key)`;
  return absent ? { kind: 'absent', key } : { kind: 'exists', key };
}

/** Parses a selector, or returns the reason it is not one. */
export function parseSelector(text: string): Selector | { problem: string } {
  const parts = text.split(',');
  if (text.trim() === '') return { problem: 'a selector needs at least one term' };
  if (parts.length > MAX_SELECTOR_TERMS) return { problem: `at most ${MAX_SELECTOR_TERMS} terms` };
  const terms: Term[] = [];
  for (const part of parts) {
    const term = parseTerm(part);
    if (typeof term === 'string') return { problem: term };
    terms.push(term);
  }
  return { text: terms.map(formatTerm).join(','), terms };
}

function formatTerm(term: Term): string {
  switch (term.kind) {
    case 'equals':
      return `${term.key}=${term.value}`;
    case 'not_equals':
      return `${term.key}!=${term.value}`;
    case 'exists':
      return term.key;
    case 'absent':
      return `!${term.key}`;
  }
}

function termHolds(term: Term, labels: Labels): boolean {
  const has = Object.hasOwn(labels, term.key);
  switch (term.kind) {
    case 'equals':
      return has && labels[term.key] === term.value;
    case 'not_equals':
      return !has || labels[term.key] !== term.value;
    case 'exists':
      return has;
    case 'absent':
      return !has;
  }
}

export function selectorMatches(selector: Selector, labels: Labels): boolean {
  return selector.terms.every((term) => termHolds(term, labels));
}

/** Parses `env=staging,team=db` (a query-string form of labels) into labels, or a problem. */
export function parseLabels(text: string): Labels | { problem: string } {
  const labels: Record<string, string> = {};
  if (text.trim() === '') return labels;
  for (const pair of text.split(',')) {
    const [key = '', value = '', ...rest] = pair.split('=').map((s) => s.trim());
    if (rest.length > 0 || !KEY.test(key) || !VALUE.test(value))
      return { problem: `"${pair}" is not key=value` };
    labels[key] = value;
  }
  return labels;
}
