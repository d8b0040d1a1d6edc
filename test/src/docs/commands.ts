/**
 * The command lines the docs show: every line of an indented or fenced code block in
 * README.md and docs/*.md that starts with one of the product's programs, and every
 * inline code span that does (beyond the bare program name). Tests run each one as
 * written, with only its placeholders filled in, so a documented command that cannot
 * parse fails CI.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

export const PROGRAMS = ['guts-upgrade-coordinator', 'guts-upgrade-agent', 'guts-upgrade'] as const;
export type Program = (typeof PROGRAMS)[number];

export interface DocCommand {
  /** e.g. docs/operating.md:42 */
  where: string;
  /** The line as written, without a trailing `# comment`. */
  text: string;
  program: Program;
  /** The program and its subcommand words, e.g. `guts-upgrade rollout start`. */
  path: string;
  /**
   * A line of a code block is a command to type and is run as written; an inline span
   * in prose names a command (often with a placeholder) and is checked against the
   * program's own help: the command exists and takes every flag the span shows.
   */
  kind: 'block' | 'inline';
}

function programOf(line: string): Program | null {
  for (const p of PROGRAMS) if (line === p || line.startsWith(`${p} `)) return p;
  return null;
}

/** Drops a trailing shell comment (` # …`) outside quotes. */
export function stripComment(line: string): string {
  let quote: string | null = null;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (quote) {
      if (c === quote) quote = null;
    } else if (c === '"' || c === "'") quote = c;
    else if (c === '#' && (i === 0 || /\s/.test(line[i - 1]!))) return line.slice(0, i).trimEnd();
  }
  return line.trimEnd();
}

/** The leading words that are subcommands: up to the first flag, placeholder or value-looking word. */
export function commandPath(text: string): string {
  const words = text.split(/\s+/);
  const out = [words[0]!];
  for (const w of words.slice(1)) {
    if (!/^[a-z][a-z-]*$/.test(w)) break;
    out.push(w);
  }
  return out.join(' ');
}

function fromLine(where: string, raw: string, kind: DocCommand['kind']): DocCommand | null {
  const text = stripComment(raw.trim().replace(/^\$\s+/, ''));
  const program = programOf(text);
  if (!program || text === program) return null;
  return { where, text, program, path: commandPath(text), kind };
}

export function docCommandsIn(file: string, rel: string): DocCommand[] {
  const lines = readFileSync(file, 'utf8').split('\n');
  const out: DocCommand[] = [];
  let fenced = false;
  lines.forEach((line, i) => {
    const where = `${rel}:${i + 1}`;
    if (/^\s*```/.test(line)) {
      fenced = !fenced;
      return;
    }
    if (fenced || /^( {4}|\t)/.test(line)) {
      const c = fromLine(where, line, 'block');
      if (c) out.push(c);
      return;
    }
    for (const m of line.matchAll(/`([^`]+)`/g)) {
      const c = fromLine(where, m[1]!, 'inline');
      if (c) out.push(c);
    }
  });
  return out;
}

/** Every documented command line, in the order the docs give them (README first, then docs/ by name). */
export function docCommands(repoRoot: string): DocCommand[] {
  const files = [
    'README.md',
    ...readdirSync(path.join(repoRoot, 'docs'))
      .filter((f) => f.endsWith('.md'))
      .sort()
      .map((f) => `docs/${f}`),
  ];
  return files.flatMap((rel) => docCommandsIn(path.join(repoRoot, rel), rel));
}

/**
 * The indented code blocks of one `## ` section of a doc, each as the shell text it shows
 * (indent removed, line continuations kept), for tests that run a recipe as written.
 */
export function sectionBlocks(file: string, heading: string): string[] {
  const lines = readFileSync(file, 'utf8').split('\n');
  const start = lines.indexOf(`## ${heading}`);
  if (start < 0) throw new Error(`${file} has no section "## ${heading}"`);
  const end = lines.findIndex((l, i) => i > start && l.startsWith('## '));
  const blocks: string[] = [];
  let cur: string[] = [];
  for (const line of lines.slice(start + 1, end < 0 ? undefined : end)) {
    if (/^ {4}/.test(line)) cur.push(line.slice(4));
    else if (line.trim() === '' && cur.length)
      continue; // a blank line inside a block
    else if (cur.length) {
      blocks.push(cur.join('\n'));
      cur = [];
    }
  }
  if (cur.length) blocks.push(cur.join('\n'));
  return blocks;
}
