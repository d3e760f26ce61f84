import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import {
  MAX_SELECTOR_LENGTH,
  MAX_SELECTOR_TERMS,
  MAX_SET_VALUES,
  parseSelector,
  type Selector,
  selectorMatches,
} from './label-selector.js';

function parsed(text: string): Selector {
  const selector = parseSelector(text);
  if ('problem' in selector) throw new Error(`${text}: ${selector.problem}`);
  return selector;
}

function problem(text: string): string {
  const selector = parseSelector(text);
  if (!('problem' in selector)) throw new Error(`${text} parsed as ${selector.text}`);
  return selector.problem;
}

describe('label selector grammar', () => {
  it('reads set terms, and the comma inside a set does not split terms', () => {
    const selector = parsed('env=prod, team in (payments, core), tier notin (db,cache),!canary');
    expect(selector.terms).toEqual([
      { kind: 'equals', key: 'env', value: 'prod' },
      { kind: 'in', key: 'team', values: ['payments', 'core'] },
      { kind: 'not_in', key: 'tier', values: ['db', 'cache'] },
      { kind: 'absent', key: 'canary' },
    ]);
    expect(selector.text).toBe('env=prod,team in (payments,core),tier notin (db,cache),!canary');
    // The normalized text is what a role binding stores: it must read back as the same selector.
    expect(parsed(selector.text)).toEqual(selector);
    expect(parsed('team in(a)').terms).toEqual([{ kind: 'in', key: 'team', values: ['a'] }]);
    expect(parsed('team in (a,a,b)').text).toBe('team in (a,b)');
    expect(parsed('example.com/team notin ( a )').text).toBe('example.com/team notin (a)');
  });

  it('keeps reading every selector written before set terms existed, to the same terms', () => {
    // Role bindings store the normalized text and API keys the text as typed: both keep working.
    const stored: Array<[string, string]> = [
      ['env=staging', 'env=staging'],
      ['env==staging', 'env=staging'],
      ['env = staging , tier!=db', 'env=staging,tier!=db'],
      ['region,!canary', 'region,!canary'],
      ['! canary', '!canary'],
      ['example.com/role=web', 'example.com/role=web'],
      // A key or value that merely spells an operator stays a key or value.
      ['in', 'in'],
      ['notin=in', 'notin=in'],
      ['team=in', 'team=in'],
    ];
    for (const [text, normalized] of stored) expect(parsed(text).text).toBe(normalized);
  });

  it('refuses junk with a problem that says what is wrong', () => {
    expect(problem('')).toBe('a selector needs at least one term');
    expect(problem('a,,b')).toMatch(/term is empty/);
    expect(problem('env=prod,')).toMatch(/term is empty/);
    expect(problem('team in (a,b')).toBe('"(" at position 9 is never closed');
    expect(problem('team in a,b)')).toBe('")" at position 12 closes nothing');
    expect(problem('team in ((a))')).toMatch(/sets do not nest/);
    expect(problem('team in ()')).toBe('"team in ()" lists no values');
    expect(problem('team in ( )')).toBe('"team in ( )" lists no values');
    expect(problem('team in (a,,b)')).toMatch(/empty value/);
    expect(problem('team in (a,)')).toMatch(/empty value/);
    expect(problem('team in (a b)')).toBe('"a b" is not a valid label value');
    expect(problem('team in (a=b)')).toBe('"a=b" is not a valid label value');
    expect(problem('te am in (a)')).toMatch(/not a label term/);
    expect(problem('!team in (a)')).toBe('"!team" is not a valid label key');
    expect(problem('team within (a)')).toMatch(/parentheses belong only after in or notin/);
    expect(problem('team=(a)')).toMatch(/parentheses belong only after in or notin/);
    expect(problem('team in (a) extra')).toMatch(/parentheses belong only after in or notin/);
    expect(problem('team in')).toMatch(/not a label term \(key=value, key!=value, key in \(a,b\)/);
    expect(problem('env=a b')).toBe('"a b" is not a valid label value');
    for (const text of [' ', 'env=', '=x', 'env===', 'team notin', '(', ')', 'a in ()b'])
      expect(parseSelector(text)).toHaveProperty('problem');
  });

  it('bounds the work a selector can ask for', () => {
    const terms = Array.from({ length: MAX_SELECTOR_TERMS }, (_, i) => `k${i}`);
    expect(parsed(terms.join(',')).terms).toHaveLength(MAX_SELECTOR_TERMS);
    expect(problem([...terms, 'one-more'].join(','))).toBe(`at most ${MAX_SELECTOR_TERMS} terms`);
    const values = Array.from({ length: MAX_SET_VALUES }, (_, i) => `v${i}`);
    expect(parsed(`k in (${values.join(',')})`).terms).toHaveLength(1);
    expect(problem(`k in (${[...values, 'one-more'].join(',')})`)).toBe(
      `"k in" lists more than ${MAX_SET_VALUES} values`,
    );
    expect(problem(`k=${'v'.repeat(MAX_SELECTOR_LENGTH)}`)).toBe(
      `a selector is at most ${MAX_SELECTOR_LENGTH} characters`,
    );
  });
});

describe('label selector matching', () => {
  it('in holds only when the label is present with a listed value', () => {
    const selector = parsed('team in (payments,core)');
    expect(selectorMatches(selector, { team: 'payments' })).toBe(true);
    expect(selectorMatches(selector, { team: 'core', env: 'prod' })).toBe(true);
    expect(selectorMatches(selector, { team: 'search' })).toBe(false);
    expect(selectorMatches(selector, { env: 'prod' })).toBe(false);
    expect(selectorMatches(selector, {})).toBe(false);
  });

  it('notin holds when the label is absent, as in Kubernetes, or has another value', () => {
    const selector = parsed('tier notin (db,cache)');
    expect(selectorMatches(selector, {})).toBe(true);
    expect(selectorMatches(selector, { env: 'prod' })).toBe(true);
    expect(selectorMatches(selector, { tier: 'web' })).toBe(true);
    expect(selectorMatches(selector, { tier: 'db' })).toBe(false);
    expect(selectorMatches(selector, { tier: 'cache' })).toBe(false);
  });

  it('all terms must hold, and a key inherited from Object.prototype is not a label', () => {
    const selector = parsed('env=prod,team in (payments,core),tier notin (db),!canary');
    expect(selectorMatches(selector, { env: 'prod', team: 'core', tier: 'web' })).toBe(true);
    expect(selectorMatches(selector, { env: 'prod', team: 'core' })).toBe(true);
    expect(selectorMatches(selector, { env: 'staging', team: 'core' })).toBe(false);
    expect(selectorMatches(selector, { env: 'prod', team: 'core', tier: 'db' })).toBe(false);
    expect(selectorMatches(selector, { env: 'prod', team: 'core', canary: 'yes' })).toBe(false);
    expect(selectorMatches(parsed('constructor in (a)'), {})).toBe(false);
    expect(selectorMatches(parsed('toString notin (a)'), {})).toBe(true);
  });
});

describe('the console shows selector examples that parse', () => {
  const pages = fileURLToPath(new URL('../../../console/src/pages/', import.meta.url));

  /**
   * Every hint of an input that takes a selector, as written in the console's page sources: the
   * opening tag of an <InputField> or a <Field> (attribute strings and `{…}` expressions may hold
   * `>`), then its label and hint attributes in either order.
   */
  function selectorHints(): Array<{ file: string; hint: string | undefined }> {
    const found: Array<{ file: string; hint: string | undefined }> = [];
    const openingTag = /<(?:InputField|Field)\b((?:"[^"]*"|\{(?:[^{}]|\{[^{}]*\})*\}|[^>"{])*)>/g;
    for (const file of readdirSync(pages).filter((name) => name.endsWith('.tsx'))) {
      const source = readFileSync(join(pages, file), 'utf8');
      for (const [, attributes = ''] of source.matchAll(openingTag)) {
        const label = /\blabel="([^"]*)"/.exec(attributes)?.[1] ?? '';
        // A hint that is not a plain string is reported as missing rather than skipped.
        if (/selector|agents matching/i.test(label))
          found.push({ file, hint: /\bhint="([^"]*)"/.exec(attributes)?.[1] });
      }
    }
    return found;
  }

  it('every selector input ends its hint with an example the server accepts', () => {
    const hints = selectorHints();
    // Role bindings, API keys, the agent list filter and bulk runs each take a selector.
    expect(hints.map((h) => h.file).sort()).toEqual(
      expect.arrayContaining(['agents.tsx', 'api-keys.tsx', 'bulk-runs.tsx', 'roles.tsx']),
    );
    const examples = new Set<string>();
    for (const { file, hint } of hints) {
      const example = /(?:for example|e\.g\.),? (.+)$/i.exec(hint ?? '')?.[1];
      expect(
        example,
        `${file}: the selector hint "${hint}" ends with "for example <selector>" (or "e.g. <selector>")`,
      ).toBeDefined();
      const selector = parseSelector(example as string);
      expect(selector, `${file}: ${example}`).not.toHaveProperty('problem');
      for (const term of (selector as Selector).terms) examples.add(term.kind);
    }
    // Together the hints show the set-based terms, the part of the grammar people know least.
    expect(examples).toContain('in');
    expect(examples).toContain('not_in');
  });
});

describe('the docs show selector examples that parse', () => {
  const docs = fileURLToPath(new URL('../../../../docs/', import.meta.url));
  /**
   * What marks a code span as something else (a path, a URL, JSON, a shell line, a message, a
   * permission): no selector holds these. Anything else that looks like a term is checked, so a
   * malformed example (brackets for parentheses, say) fails rather than being passed over.
   */
  const NOT_SELECTOR = /[:?"'{}<>%…&*$@#\\]/;
  /**
   * At least one term with a key and an operator: a bare word (`key`, `in`, `selector`) or operator
   * (`!=`) is prose, not an example.
   */
  const OPERATOR = /[A-Za-z0-9]\s*!?=|(?:^|,)\s*!\s*[A-Za-z0-9]|[A-Za-z0-9]\s+(?:not)?in\s*[([]/;

  /**
   * Every selector the docs write: each `code span` that reads as a selector in a paragraph or under
   * a heading that speaks of selectors, and every `"selector": "…"` or `selector=…` in examples of
   * requests (code blocks included). Read from the text, so a new or edited example is checked too.
   */
  function docExamples(): Array<{ file: string; example: string }> {
    const found: Array<{ file: string; example: string }> = [];
    const files = readdirSync(docs, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.md'));
    for (const file of files) {
      const text = readFileSync(join(docs, file), 'utf8');
      for (const [, example = ''] of text.matchAll(/"selector"\s*:\s*"([^"]+)"/g))
        found.push({ file, example });
      for (const [, example = ''] of text.matchAll(/[?&]selector=([^&\s`'"#)]+)/g))
        found.push({ file, example: decodeURIComponent(example.replaceAll('+', ' ')) });
      // Code blocks hold commands and output, whose backticks are the shell's.
      const prose = text.replace(/^(```|~~~)[^\n]*\n[\s\S]*?^\1[^\n]*$/gm, '');
      let heading = '';
      for (const block of prose.split(/\n[ \t]*\n/)) {
        for (const line of block.split('\n')) if (/^#{1,6}\s/.test(line)) heading = line;
        // A table's rows are about different things: each row is judged on its own.
        const units = block.trimStart().startsWith('|') ? block.split('\n') : [block];
        for (const unit of units) {
          if (!/selector/i.test(heading) && !/selector/i.test(unit)) continue;
          for (const [, span = ''] of unit.matchAll(/`([^`\n]+)`/g))
            if (!NOT_SELECTOR.test(span) && OPERATOR.test(span)) found.push({ file, example: span });
        }
      }
    }
    return found;
  }

  it('every selector example in the docs is one the server accepts', () => {
    const examples = docExamples();
    const kinds = new Set<string>();
    for (const { file, example } of examples) {
      const selector = parseSelector(example);
      expect(selector, `docs/${file}: \`${example}\``).not.toHaveProperty('problem');
      if (file === 'access.md') for (const term of (selector as Selector).terms) kinds.add(term.kind);
    }
    // The grammar's own table and example are found (so the reading above does find examples), and
    // other pages that show a selector are read too.
    expect([...kinds].sort()).toEqual(['absent', 'equals', 'in', 'not_equals', 'not_in']);
    expect(new Set(examples.map((e) => e.file)).size).toBeGreaterThan(1);
  });
});
