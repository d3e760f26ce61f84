import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

/**
 * docs/security/asvs.md maps each OWASP ASVS 5.0 requirement in Bulwark's scope to the tests that
 * prove it, or says why it does not apply or what is missing. A mapping that still names a test after
 * it was renamed, moved or deleted claims a proof that no longer exists, and one that lost a row
 * hides a requirement: this check reads the document and fails on both, naming what is wrong.
 */

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const DOCUMENT = 'docs/security/asvs.md';

/**
 * The in-scope requirements of ASVS 5.0.0 (tag v5.0.0_release, 5.0/en), each `id:level`: every
 * Level 1 and 2 requirement, and the Level 3 ones of V6, V7, V8, V11, V12 and V16.
 */
const IN_SCOPE = `
  V1: 1.1.1:2 1.1.2:2 1.2.1:1 1.2.2:1 1.2.3:1 1.2.4:1 1.2.5:1 1.2.6:2 1.2.7:2 1.2.8:2 1.2.9:2 1.3.1:1
    1.3.2:1 1.3.3:2 1.3.4:2 1.3.5:2 1.3.6:2 1.3.7:2 1.3.8:2 1.3.9:2 1.3.10:2 1.3.11:2 1.4.1:2 1.4.2:2
    1.4.3:2 1.5.1:1 1.5.2:2
  V2: 2.1.1:1 2.1.2:2 2.1.3:2 2.2.1:1 2.2.2:1 2.2.3:2 2.3.1:1 2.3.2:2 2.3.3:2 2.3.4:2 2.4.1:2
  V3: 3.2.1:1 3.2.2:1 3.3.1:1 3.3.2:2 3.3.3:2 3.3.4:2 3.4.1:1 3.4.2:1 3.4.3:2 3.4.4:2 3.4.5:2 3.4.6:2
    3.5.1:1 3.5.2:1 3.5.3:1 3.5.4:2 3.5.5:2 3.7.1:2 3.7.2:2
  V4: 4.1.1:1 4.1.2:2 4.1.3:2 4.2.1:2 4.3.1:2 4.3.2:2 4.4.1:1 4.4.2:2 4.4.3:2 4.4.4:2
  V5: 5.1.1:2 5.2.1:1 5.2.2:1 5.2.3:2 5.3.1:1 5.3.2:1 5.4.1:2 5.4.2:2 5.4.3:2
  V6: 6.1.1:1 6.1.2:2 6.1.3:2 6.2.1:1 6.2.2:1 6.2.3:1 6.2.4:1 6.2.5:1 6.2.6:1 6.2.7:1 6.2.8:1 6.2.9:2
    6.2.10:2 6.2.11:2 6.2.12:2 6.3.1:1 6.3.2:1 6.3.3:2 6.3.4:2 6.3.5:3 6.3.6:3 6.3.7:3 6.3.8:3 6.4.1:1
    6.4.2:1 6.4.3:2 6.4.4:2 6.4.5:3 6.4.6:3 6.5.1:2 6.5.2:2 6.5.3:2 6.5.4:2 6.5.5:2 6.5.6:3 6.5.7:3
    6.5.8:3 6.6.1:2 6.6.2:2 6.6.3:2 6.6.4:3 6.7.1:3 6.7.2:3 6.8.1:2 6.8.2:2 6.8.3:2 6.8.4:2
  V7: 7.1.1:2 7.1.2:2 7.1.3:2 7.2.1:1 7.2.2:1 7.2.3:1 7.2.4:1 7.3.1:2 7.3.2:2 7.4.1:1 7.4.2:1 7.4.3:2
    7.4.4:2 7.4.5:2 7.5.1:2 7.5.2:2 7.5.3:3 7.6.1:2 7.6.2:2
  V8: 8.1.1:1 8.1.2:2 8.1.3:3 8.1.4:3 8.2.1:1 8.2.2:1 8.2.3:2 8.2.4:3 8.3.1:1 8.3.2:3 8.3.3:3 8.4.1:2
    8.4.2:3
  V9: 9.1.1:1 9.1.2:1 9.1.3:1 9.2.1:1 9.2.2:2 9.2.3:2 9.2.4:2
  V10: 10.1.1:2 10.1.2:2 10.2.1:2 10.2.2:2 10.3.1:2 10.3.2:2 10.3.3:2 10.3.4:2 10.4.1:1 10.4.2:1
    10.4.3:1 10.4.4:1 10.4.5:1 10.4.6:2 10.4.7:2 10.4.8:2 10.4.9:2 10.4.10:2 10.4.11:2 10.5.1:2 10.5.2:2
    10.5.3:2 10.5.4:2 10.5.5:2 10.6.1:2 10.6.2:2 10.7.1:2 10.7.2:2 10.7.3:2
  V11: 11.1.1:2 11.1.2:2 11.1.3:3 11.1.4:3 11.2.1:2 11.2.2:2 11.2.3:2 11.2.4:3 11.2.5:3 11.3.1:1
    11.3.2:1 11.3.3:2 11.3.4:3 11.3.5:3 11.4.1:1 11.4.2:2 11.4.3:2 11.4.4:2 11.5.1:2 11.5.2:3 11.6.1:2
    11.6.2:3 11.7.1:3 11.7.2:3
  V12: 12.1.1:1 12.1.2:2 12.1.3:2 12.1.4:3 12.1.5:3 12.2.1:1 12.2.2:1 12.3.1:2 12.3.2:2 12.3.3:2
    12.3.4:2 12.3.5:3
  V13: 13.1.1:2 13.2.1:2 13.2.2:2 13.2.3:2 13.2.4:2 13.2.5:2 13.3.1:2 13.3.2:2 13.4.1:1 13.4.2:2
    13.4.3:2 13.4.4:2 13.4.5:2
  V14: 14.1.1:2 14.1.2:2 14.2.1:1 14.2.2:2 14.2.3:2 14.2.4:2 14.3.1:1 14.3.2:2 14.3.3:2
  V15: 15.1.1:1 15.1.2:2 15.1.3:2 15.2.1:1 15.2.2:2 15.2.3:2 15.3.1:1 15.3.2:2 15.3.3:2 15.3.4:2
    15.3.5:2 15.3.6:2 15.3.7:2
  V16: 16.1.1:2 16.2.1:2 16.2.2:2 16.2.3:2 16.2.4:2 16.2.5:2 16.3.1:2 16.3.2:2 16.3.3:2 16.3.4:2
    16.4.1:2 16.4.2:2 16.4.3:2 16.5.1:2 16.5.2:2 16.5.3:2 16.5.4:3
  V17: 17.1.1:2 17.2.1:2 17.2.2:2 17.2.3:2 17.2.4:2 17.3.1:2 17.3.2:2
`;

const STATUSES = ['tested', 'n/a', 'not yet'] as const;
type Status = (typeof STATUSES)[number];
const REQUIREMENT_HEADER = '| Id | Level | Requirement (paraphrase) | Status | Proof or reason |';
const SUMMARY_HEADER = '| Chapter | Requirements | tested | n/a | not yet |';
/** A backticked `path` or `path::text` naming a file of the repository: a test, a document. */
const REFERENCE = /^((?:packages|docs)\/[^\s:`]+|[A-Z]+\.md)(?:::(.+))?$/;

interface Reference {
  file: string;
  text?: string;
}

interface Row {
  line: number;
  chapter: string;
  id: string;
  level: string;
  paraphrase: string;
  status: string;
  proof: string;
  references: Reference[];
}

const cells = (line: string) =>
  line
    .trim()
    .replace(/^\|/, '')
    .replace(/\|$/, '')
    .split('|')
    .map((cell) => cell.trim());

function referencesIn(text: string): Reference[] {
  return [...text.matchAll(/`([^`]+)`/g)].flatMap(([, quoted]) => {
    const match = REFERENCE.exec(quoted!);
    return match ? [{ file: match[1]!, ...(match[2] ? { text: match[2] } : {}) }] : [];
  });
}

function parse(markdown: string) {
  const rows: Row[] = [];
  const summary = new Map<string, number[]>();
  let table: 'requirements' | 'summary' | undefined;
  let chapter = '';
  markdown.split('\n').forEach((line, index) => {
    if (line.startsWith('## ')) chapter = line.slice(3).trim();
    if (!line.startsWith('|')) {
      table = undefined;
      return;
    }
    if (line === REQUIREMENT_HEADER) table = 'requirements';
    else if (line === SUMMARY_HEADER) table = 'summary';
    if (line === REQUIREMENT_HEADER || line === SUMMARY_HEADER || /^\|[\s|-]+\|$/.test(line)) return;
    if (table === 'summary') {
      const [name = '', ...counts] = cells(line);
      summary.set(name, counts.map(Number));
    } else if (table === 'requirements') {
      const [id = '', level = '', paraphrase = '', status = '', proof = '', ...extra] = cells(line);
      rows.push({
        line: index + 1,
        chapter,
        id: extra.length > 0 ? `${id} (${extra.length} cells too many)` : id,
        level,
        paraphrase,
        status,
        proof,
        references: referencesIn(proof),
      });
    }
  });
  return { rows, summary, references: referencesIn(markdown) };
}

const markdown = readFileSync(path.join(ROOT, DOCUMENT), 'utf8');
const { rows, summary, references } = parse(markdown);

function counts(of: Row[]) {
  const by = (status: Status) => of.filter((row) => row.status === status).length;
  return [of.length, by('tested'), by('n/a'), by('not yet')];
}

describe(DOCUMENT, () => {
  it('names only files that exist, each still holding the text it cites', () => {
    const missing: string[] = [];
    const contents = new Map<string, string>();
    for (const { file, text } of references) {
      const full = path.join(ROOT, file);
      if (!existsSync(full) || !statSync(full).isFile()) {
        missing.push(`${file}: no such file`);
        continue;
      }
      if (text === undefined) continue;
      if (!contents.has(file)) contents.set(file, readFileSync(full, 'utf8'));
      if (!contents.get(file)!.includes(text)) missing.push(`${file}: no longer contains "${text}"`);
    }
    expect(references.length).toBeGreaterThan(100);
    expect([...new Set(missing)], 'proofs that no longer exist').toEqual([]);
  });

  it('gives every row a status, every tested row a test, and every other row its reason', () => {
    const problems: string[] = [];
    for (const row of rows) {
      const where = `${DOCUMENT}:${row.line} ${row.id}`;
      if (!(STATUSES as readonly string[]).includes(row.status))
        problems.push(`${where}: status "${row.status}" is not one of ${STATUSES.join(', ')}`);
      if (row.paraphrase.length < 10) problems.push(`${where}: no paraphrase of the requirement`);
      if (row.status === 'tested' && !row.references.some((ref) => ref.file.endsWith('.test.ts')))
        problems.push(`${where}: tested, but names no test file`);
      // A reason is words, not just a reference to somewhere else.
      const reason = row.proof
        .replace(/`[^`]*`/g, '')
        .replace(/[^\p{L}]+/gu, ' ')
        .trim();
      if (row.status !== 'tested' && reason.length < 10)
        problems.push(`${where}: ${row.status} without a reason`);
    }
    expect(problems).toEqual([]);
  });

  it('covers exactly the in-scope requirements of ASVS 5.0.0, each once, at its level, in its chapter', () => {
    const expected = IN_SCOPE.split(/\s+/).filter((word) => /^\d/.test(word));
    const listed = rows.map((row) => `${row.id}:${row.level}`);
    expect(
      listed.filter((entry, index) => listed.indexOf(entry) !== index),
      'listed twice',
    ).toEqual([]);
    expect(
      listed.filter((entry) => !expected.includes(entry)),
      'not in scope, or at another level',
    ).toEqual([]);
    expect(
      expected.filter((entry) => !listed.includes(entry)),
      'missing',
    ).toEqual([]);
    const misplaced = rows.filter((row) => !row.chapter.startsWith(`V${row.id.split('.')[0]} `));
    expect(misplaced.map((row) => `${row.id} under "${row.chapter}"`)).toEqual([]);
  });

  it('states in its summary the counts of its rows, and prints them', () => {
    const chapters = [...new Set(rows.map((row) => row.chapter))];
    const computed = new Map<string, number[]>([
      ...chapters.map((chapter) => [chapter, counts(rows.filter((row) => row.chapter === chapter))] as const),
      ['Total', counts(rows)],
    ]);
    expect(Object.fromEntries(summary)).toEqual(Object.fromEntries(computed));
    const [total, tested, notApplicable, notYet] = counts(rows);
    console.log(
      `ASVS 5.0 mapping: ${total} requirements, ${tested} tested, ${notApplicable} not applicable, ${notYet} not yet`,
    );
  });
});
