/**
 * The metric names a PromQL expression reads, and the series names a Prometheus
 * text exposition declares: enough to prove that the dashboard and the alert
 * rules name only metrics the project exports (a typo there is a panel that is
 * silently empty, or an alert that never fires).
 */

const KEYWORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'and', 'or', 'unless', 'bool', 'offset', 'inf', 'nan']);

/** Metric names in one expression: label matchers, strings, ranges, groupings and functions are not names. */
export function metricNames(expr: string): string[] {
  const s = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, ' ') // strings (label values, regexes)
    .replace(/\{[^}]*\}/g, ' ') // label matchers
    .replace(/\[[^\]]*\]/g, ' ') // range and subquery selectors, [$__range] included
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ') // label lists
    .replace(/\$\w+/g, ' '); // Grafana variables
  const names = new Set<string>();
  for (const m of s.matchAll(/(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?/g)) {
    const [, name, call] = m;
    if (call || KEYWORDS.has(name!.toLowerCase())) continue; // a function, or an operator word
    names.add(name!);
  }
  return [...names];
}

/** Series names a text exposition declares: each family, plus _bucket/_sum/_count of histograms and summaries. */
export function exportedSeries(exposition: string): Set<string> {
  const out = new Set<string>();
  for (const m of exposition.matchAll(/^# TYPE (\S+) (\w+)$/gm)) {
    const [, name, type] = m;
    out.add(name!);
    if (type === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) out.add(name! + suffix);
    if (type === 'summary') for (const suffix of ['_sum', '_count']) out.add(name! + suffix);
  }
  return out;
}

/** The names `exprs` use that `exported` lacks, each with the expression that uses it. */
export function unknownNames(exprs: string[], exported: Set<string>): { name: string; expr: string }[] {
  return exprs.flatMap((expr) =>
    metricNames(expr)
      .filter((name) => !exported.has(name))
      .map((name) => ({ name, expr })),
  );
}
