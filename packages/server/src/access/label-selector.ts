import { LABEL_KEY_PATTERN, LABEL_VALUE_PATTERN } from '@bulwark/protocol';

/**
 * Label selectors (ACC-3), the Kubernetes label-selector language that scopes a role binding or an API
 * key to agents, and filters the agent list: comma-separated terms, all of which must hold —
 * `env=staging` (also `env==staging`), `tier!=db`, `region` (the label is present), `!canary`
 * (absent), `team in (payments,core)` and `team notin (legacy,test)`. As in Kubernetes, `!=` and
 * `notin` hold when the label is absent. An empty selector is refused: "everything" is an unscoped
 * binding, said explicitly.
 *
 * The grammar only ever grew: every selector stored before set terms existed (role bindings keep the
 * normalized text, API keys the text as typed) parses to the same terms today.
 */

export type Labels = Readonly<Record<string, string>>;

type Term =
  | { kind: 'equals'; key: string; value: string }
  | { kind: 'not_equals'; key: string; value: string }
  | { kind: 'in'; key: string; values: string[] }
  | { kind: 'not_in'; key: string; values: string[] }
  | { kind: 'exists'; key: string }
  | { kind: 'absent'; key: string };

export interface Selector {
  text: string;
  terms: Term[];
}

const KEY = LABEL_KEY_PATTERN;
const VALUE = LABEL_VALUE_PATTERN;
export const MAX_SELECTOR_TERMS = 16;
/** Values in one `in (…)` / `notin (…)` set; an agent carries at most 32 labels, a set rarely needs more. */
export const MAX_SET_VALUES = 32;
/** The longest selector any route accepts; bounds parsing work before anything else is looked at. */
export const MAX_SELECTOR_LENGTH = 1000;

const TERM_FORMS = 'key=value, key!=value, key in (a,b), key notin (a,b), key or !key';

/**
 * Splits at the commas between terms, not those inside `( … )`, or says which parenthesis is wrong.
 * Sets do not nest, so one level is all there is.
 */
function splitTerms(text: string): string[] | string {
  const parts: string[] = [];
  let open = -1;
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    const char = text[i];
    if (char === '(') {
      if (open !== -1) return `"(" at position ${i + 1} is inside another "(": sets do not nest`;
      open = i;
    } else if (char === ')') {
      if (open === -1) return `")" at position ${i + 1} closes nothing`;
      open = -1;
    } else if (char === ',' && open === -1) {
      parts.push(text.slice(start, i));
      start = i + 1;
    }
  }
  if (open !== -1) return `"(" at position ${open + 1} is never closed`;
  parts.push(text.slice(start));
  return parts;
}

function parseSetTerm(term: string): Term | string | undefined {
  // `key in (…)`: whitespace between the key and the operator is what tells `in` from a key's tail.
  const set = /^(\S+)\s+(in|notin)\s*\((.*)\)$/s.exec(term);
  if (!set) {
    if (term.includes('(') || term.includes(')'))
      return `"${term}" is not a label term: parentheses belong only after in or notin (${TERM_FORMS})`;
    return undefined;
  }
  const [, key = '', operator, list = ''] = set;
  if (!KEY.test(key)) return `"${key}" is not a valid label key`;
  const values: string[] = [];
  if (list.trim() === '') return `"${term}" lists no values`;
  for (const raw of list.split(',')) {
    const value = raw.trim();
    if (value === '') return `"${term}" has an empty value (two commas in a row, or a comma at an end)`;
    if (!VALUE.test(value)) return `"${value}" is not a valid label value`;
    if (!values.includes(value)) values.push(value);
  }
  if (values.length > MAX_SET_VALUES) return `"${key} ${operator}" lists more than ${MAX_SET_VALUES} values`;
  return operator === 'in' ? { kind: 'in', key, values } : { kind: 'not_in', key, values };
}

function parseTerm(raw: string): Term | string {
  const term = raw.trim();
  if (term === '') return 'a term is empty (two commas in a row, or a comma at an end)';
  const set = parseSetTerm(term);
  if (set !== undefined) return set;
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
  if (!KEY.test(key)) return `"${term}" is not a label term (${TERM_FORMS})`;
  return absent ? { kind: 'absent', key } : { kind: 'exists', key };
}

/** Parses a selector, or returns the reason it is not one. */
export function parseSelector(text: string): Selector | { problem: string } {
  if (text.length > MAX_SELECTOR_LENGTH)
    return { problem: `a selector is at most ${MAX_SELECTOR_LENGTH} characters` };
  if (text.trim() === '') return { problem: 'a selector needs at least one term' };
  const parts = splitTerms(text);
  if (typeof parts === 'string') return { problem: parts };
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
    case 'in':
      return `${term.key} in (${term.values.join(',')})`;
    case 'not_in':
      return `${term.key} notin (${term.values.join(',')})`;
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
    case 'in':
      return has && term.values.includes(labels[term.key] as string);
    case 'not_in':
      return !has || !term.values.includes(labels[term.key] as string);
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
