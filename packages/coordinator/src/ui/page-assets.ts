/**
 * The coordinator's live page, as three assets the coordinator serves itself
 * (no CDN, nothing fetched from elsewhere): the HTML shell, its stylesheet and
 * its script. Kept as strings in a module so the packaged, bundled coordinator
 * carries them without a file layout to get wrong.
 *
 * The script is plain browser JavaScript: it holds the token the operator types
 * in memory only and sends it as a bearer header (no cookie, so another site
 * cannot make the browser act for the operator), builds the page with
 * textContent only (a node name or a log line is never HTML), and polls the
 * same API the CLI uses.
 */
import { ACTIONS } from '../states.js';

export const PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>guts-upgrade</title>
<link rel="stylesheet" href="/ui/app.css">
<script src="/ui/app.js" defer></script>
</head>
<body>
<header>
  <h1>guts-upgrade</h1>
  <span id="who" class="muted">not signed in</span>
  <span id="status" class="muted" role="status"></span>
</header>
<main>
  <section id="signin">
    <h2>Token</h2>
    <p class="muted">An operator token may steer rollouts; a viewer token only reads. The token stays in this tab's memory.</p>
    <form id="token-form" autocomplete="off">
      <input id="token" type="password" placeholder="bearer token" aria-label="token" required>
      <button type="submit" id="connect">Connect</button>
    </form>
    <p id="signin-error" class="error"></p>
  </section>
  <section id="fleet" hidden>
    <h2>Fleet <span id="chain" class="muted"></span></h2>
    <p id="alerts" class="error"></p>
    <table id="nodes">
      <thead><tr><th>node</th><th>validator</th><th>weight</th><th>version</th><th>health</th><th>height</th><th>leader</th><th>agent</th></tr></thead>
      <tbody></tbody>
    </table>
  </section>
  <section id="rollout" hidden>
    <h2>Rollout <span id="rollout-title"></span></h2>
    <p id="rollout-reason" class="muted"></p>
    <div id="actions" class="actions"></div>
    <p id="action-error" class="error"></p>
    <div id="waves"></div>
    <table id="steps">
      <thead><tr><th>node</th><th>step</th><th>progress</th><th>downtime</th><th>code</th></tr></thead>
      <tbody></tbody>
    </table>
    <div id="failures"></div>
    <h3>Events</h3>
    <ol id="events" class="events"></ol>
  </section>
  <section id="plan" hidden>
    <h2>Plan a rollout</h2>
    <form id="plan-form" autocomplete="off">
      <label>to <input id="plan-to" placeholder="1.1.0" required></label>
      <label title="only for agents with allowUnsigned: true; leave empty and each agent resolves the version through its signed release repository">artifact URL <input id="plan-url" placeholder="optional: allowUnsigned agents only"></label>
      <label title="only with an artifact URL">sha256 <input id="plan-sha" placeholder="optional: 64 hex characters"></label>
      <label>strategy <select id="plan-strategy"><option>rolling</option><option>canary</option><option>halt</option></select></label>
      <label>canary <input id="plan-canary" placeholder="node id (canary)"></label>
      <label>soak ms <input id="plan-soak" type="number" min="0" placeholder="default"></label>
      <button type="submit" id="plan-button">Dry run</button>
      <button type="button" id="start-button" disabled>Start this rollout</button>
    </form>
    <pre id="plan-out"></pre>
    <p id="plan-error" class="error"></p>
  </section>
</main>
</body>
</html>
`;

export const PAGE_CSS = `
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1b1f24; background: #f6f7f9; }
header { display: flex; gap: 1.5em; align-items: baseline; padding: .6em 1.2em; background: #1b1f24; color: #fff; }
header h1 { font-size: 1.2em; margin: 0; }
main { padding: .5em 1.2em 2em; }
section { background: #fff; border: 1px solid #d8dce2; border-radius: 6px; padding: .6em 1em; margin: .8em 0; }
h2 { font-size: 1.05em; margin: .2em 0 .5em; }
h3 { font-size: .95em; margin: .8em 0 .3em; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .2em .6em; border-bottom: 1px solid #eceef1; font-variant-numeric: tabular-nums; }
th { font-weight: 600; color: #57606a; }
.muted { color: #8b949e; }
header .muted { color: #c9d1d9; }
.error { color: #b42318; white-space: pre-wrap; }
.ok { color: #1a7f37; }
.bad { color: #b42318; font-weight: 600; }
.actions button, form button { margin-right: .5em; }
form label { display: inline-block; margin: 0 1em .4em 0; }
.events { max-height: 16em; overflow: auto; font: 12px ui-monospace, monospace; padding-left: 2.5em; }
pre, .log { font: 12px ui-monospace, monospace; background: #f6f8fa; padding: .5em; overflow: auto; max-height: 20em; }
.wave { display: inline-block; margin: 0 .6em .3em 0; padding: .1em .5em; border: 1px solid #d8dce2; border-radius: 4px; }
`;

/** The buttons and the states each is valid in: the coordinator's own table, so page and API agree. */
const ACTIONS_JSON = JSON.stringify(ACTIONS);

export const PAGE_JS = `'use strict';
(function () {
  var ACTIONS = ${ACTIONS_JSON};
  var FINAL = ['completed', 'failed', 'aborted', 'rolled_back'];
  var token = null;
  var role = null;
  var rolloutId = null;
  var afterSeq = 0;
  var planned = null;
  var busy = false;

  function $(id) { return document.getElementById(id); }
  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function row(cells) {
    var tr = document.createElement('tr');
    cells.forEach(function (c) {
      var td = el('td', c && c.text !== undefined ? c.text : c, c && c.cls);
      tr.appendChild(td);
    });
    return tr;
  }
  function fill(tbody, rows) {
    while (tbody.firstChild) tbody.removeChild(tbody.firstChild);
    rows.forEach(function (r) { tbody.appendChild(r); });
  }
  function api(method, path, body) {
    var init = { method: method, headers: { authorization: 'Bearer ' + token }, cache: 'no-store' };
    if (body !== undefined) {
      init.headers['content-type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    return fetch(path, init).then(function (res) {
      return res.text().then(function (text) {
        var json = null;
        try { json = text ? JSON.parse(text) : null; } catch (e) { json = null; }
        if (!res.ok) {
          var err = json && json.error ? json.error : { code: 'HTTP_' + res.status, message: text };
          throw new Error(err.code + ': ' + err.message + (err.action ? ' (' + err.action + ')' : ''));
        }
        return json;
      });
    });
  }
  function short(hex) { return hex ? hex.slice(0, 10) + '…' : '-'; }

  // ---- the fleet: nodes with their validator (or follower), weight, version, health, height and leader
  function renderFleet(f) {
    var byNode = {};
    if (f.chain) f.chain.validators.forEach(function (v) { if (v.node) byNode[v.node] = v; });
    var rows = f.nodes.slice().sort(function (a, b) { return a.id < b.id ? -1 : 1; }).map(function (n) {
      var v = byNode[n.id];
      return row([
        n.id,
        // A follower is outside the set; one the chain shows in it is flagged (FOLLOWER_IS_VALIDATOR).
        v ? v.name + ' ' + short(v.pubkey) + (n.role === 'follower' ? ' (registered as follower!)' : '') : n.role === 'follower' ? 'follower' : 'unbound',
        v ? v.weight : '-',
        n.version || '?',
        { text: n.healthy ? 'healthy' : 'DOWN', cls: n.healthy ? 'ok' : 'bad' },
        n.finalizedHeight === null ? '-' : n.finalizedHeight,
        // The chain's leader as the coordinator works it out, not each node's own claim (two may claim it across a view change).
        n.id === f.leader ? 'leader' : '',
        n.agent || (n.connected ? 'connected' : 'unreachable'),
      ]);
    });
    fill($('nodes').tBodies[0], rows);
    $('chain').textContent = f.chain
      ? 'epoch ' + f.chain.epoch + ' · weight ' + f.chain.totalWeight + ' · quorum ' + f.chain.quorumWeight + ' · slack ' + f.chain.slack + ' (largest ' + f.chain.largestSlack + ')'
      : 'n=' + f.n + ' f=' + f.f;
    $('alerts').textContent = f.alerts.map(function (a) { return a.code + ': ' + a.message; }).join('\\n');
  }

  // ---- the rollout: waves, each node's step, failures with their evidence, the event stream
  function renderRollout(d) {
    var r = d.rollout;
    $('rollout').hidden = false;
    $('rollout-title').textContent = r.id + ' · ' + r.strategy + ' · ' + (r.fromVersion || '?') + ' → ' + r.target.version + ' · ' + r.state + (r.code ? ' · ' + r.code : '');
    $('rollout-title').setAttribute('data-state', r.state);
    $('rollout-reason').textContent = r.reason || (r.data && r.data.waiting ? 'waiting: ' + r.data.waiting : '');
    var waves = $('waves');
    while (waves.firstChild) waves.removeChild(waves.firstChild);
    r.waves.forEach(function (w, i) { waves.appendChild(el('span', 'wave ' + (i + 1) + ': ' + w.join(', '), 'wave')); });
    fill($('steps').tBodies[0], d.steps.map(function (s) {
      return row([s.nodeId, s.state, s.progress || '', s.downtimeMs === null ? '-' : Math.round(s.downtimeMs) + ' ms', { text: s.code || '', cls: s.code ? 'bad' : '' }]);
    }));
    var failures = $('failures');
    while (failures.firstChild) failures.removeChild(failures.firstChild);
    d.steps.filter(function (s) { return s.state === 'failed' && s.evidence; }).forEach(function (s) {
      var message = s.message && s.message.indexOf(s.code + ': ') === 0 ? s.message.slice(s.code.length + 2) : s.message;
      failures.appendChild(el('h3', s.nodeId + ' failed ' + (s.code || '') + (message ? ': ' + message : ''), 'bad'));
      if (s.evidence.check) failures.appendChild(el('p', 'check ' + s.evidence.check.name + ': ' + s.evidence.check.detail));
      if (s.evidence.nodeLog.length) failures.appendChild(el('pre', s.evidence.nodeLog.join('\\n'), 'log'));
    });
    renderActions(r);
  }
  function renderActions(r) {
    var box = $('actions');
    while (box.firstChild) box.removeChild(box.firstChild);
    Object.keys(ACTIONS).forEach(function (action) {
      var b = el('button', action);
      b.id = 'action-' + action;
      b.type = 'button';
      b.disabled = role !== 'operator' || ACTIONS[action].indexOf(r.state) < 0;
      if (role !== 'operator') b.title = 'a viewer token only reads';
      b.addEventListener('click', function () { act(r.id, action); });
      box.appendChild(b);
    });
  }
  function act(id, action) {
    if (action === 'rollback' && !window.confirm('Roll every upgraded node of ' + id + ' back?')) return;
    $('action-error').textContent = '';
    api('POST', '/api/v1/rollouts/' + encodeURIComponent(id) + '/' + action, { reason: 'from the page' })
      .then(function (d) { renderRollout(d); })
      .catch(function (e) { $('action-error').textContent = e.message; });
  }
  function appendEvents(events) {
    var list = $('events');
    events.forEach(function (e) {
      afterSeq = Math.max(afterSeq, e.seq);
      if (e.type === 'command.sent') return;
      var data = e.data || {};
      var what = data.reason || data.message || data.code || (data.step ? data.step + ' ' + data.state : '') || '';
      if (e.type === 'rollout.state') what = data.from + ' → ' + data.to + (data.code ? ' ' + data.code : '') + (data.reason ? ': ' + data.reason : '');
      if (e.type === 'canary.passed' && data.judged === false) what = 'passed, but its metrics judged nothing: ' + (data.metrics && data.metrics.detail);
      list.appendChild(el('li', e.at.slice(11, 23) + ' ' + e.type + (e.nodeId ? ' ' + e.nodeId : '') + (what ? ' — ' + what : '')));
    });
    if (events.length) list.scrollTop = list.scrollHeight;
  }

  // ---- the dry-run plan, then start
  function planBody() {
    var options = {};
    if ($('plan-canary').value) options.canary = $('plan-canary').value.trim();
    if ($('plan-soak').value) options.soakMs = Number($('plan-soak').value);
    // A bare version is the normal case; url and sha256 only when given (the API refuses one without the other).
    var target = { version: $('plan-to').value.trim() };
    if ($('plan-url').value.trim()) target.url = $('plan-url').value.trim();
    if ($('plan-sha').value.trim()) target.sha256 = $('plan-sha').value.trim().toLowerCase();
    var body = { target: target, strategy: $('plan-strategy').value };
    if (Object.keys(options).length) body.options = options;
    return body;
  }
  function renderPlan(p) {
    var lines = ['plan ' + p.strategy + ': ' + (p.fromVersion || '?') + ' → ' + p.target.version + ' (' + (p.path ? p.path.kind : 'n/a') + ') n=' + p.n + ' f=' + p.f + ' maxUnavailable=' + p.maxUnavailable];
    lines.push(p.target.url
      ? '  artifact: ' + p.target.url + ' sha256 ' + p.target.sha256 + ' (for agents with allowUnsigned: true)'
      : '  artifact: signed release (each agent resolves ' + p.target.version + ' through its release repository)');
    p.waves.forEach(function (w, i) {
      lines.push('  wave ' + (i + 1) + ': ' + w.join(', ') + (p.chain ? '  (weight ' + p.chain.waveWeights[i] + ' down, slack left ' + p.chain.slackLeft[i] + ')' : ''));
    });
    if (p.chain) lines.push('  chain: epoch ' + p.chain.epoch + ', total weight ' + p.chain.totalWeight + ', quorum ' + p.chain.quorumWeight + ', slack proven now ' + p.chain.slackNow);
    if (p.skip.length) lines.push('  skip (already on target): ' + p.skip.join(', '));
    if (p.requiresApproval) lines.push('  requires approval');
    p.warnings.forEach(function (w) { lines.push('  warning: ' + w); });
    $('plan-out').textContent = lines.join('\\n');
  }

  // ---- polling
  function refresh() {
    if (!token || busy) return Promise.resolve();
    busy = true;
    return Promise.all([api('GET', '/api/v1/fleet'), api('GET', '/api/v1/rollouts?limit=1')])
      .then(function (res) {
        renderFleet(res[0]);
        var latest = res[1].rollouts[0];
        if (!latest) return null;
        if (latest.id !== rolloutId) {
          rolloutId = latest.id;
          afterSeq = 0;
          var list = $('events');
          while (list.firstChild) list.removeChild(list.firstChild);
        }
        return Promise.all([
          api('GET', '/api/v1/rollouts/' + encodeURIComponent(rolloutId)),
          api('GET', '/api/v1/rollouts/' + encodeURIComponent(rolloutId) + '/events?after=' + afterSeq),
        ]).then(function (r) {
          renderRollout(r[0]);
          appendEvents(r[1].events);
        });
      })
      .then(function () { $('status').textContent = 'live · ' + new Date().toISOString().slice(11, 19); })
      .catch(function (e) { $('status').textContent = 'error: ' + e.message; })
      .then(function () { busy = false; });
  }

  function connect(t) {
    token = t;
    return api('GET', '/api/v1/whoami').then(function (me) {
      role = me.role;
      $('who').textContent = me.name + ' (' + me.role + ')';
      $('signin').hidden = true;
      $('fleet').hidden = false;
      $('plan').hidden = false;
      $('start-button').title = role === 'operator' ? '' : 'a viewer token only reads';
      refresh();
      setInterval(refresh, 1000);
    }).catch(function (e) {
      token = null;
      $('signin-error').textContent = e.message;
    });
  }

  document.addEventListener('DOMContentLoaded', function () {
    $('token-form').addEventListener('submit', function (ev) {
      ev.preventDefault();
      var t = $('token').value.trim();
      $('token').value = '';
      $('signin-error').textContent = '';
      connect(t);
    });
    $('plan-form').addEventListener('submit', function (ev) {
      ev.preventDefault();
      $('plan-error').textContent = '';
      planned = null;
      $('start-button').disabled = true;
      var body = planBody();
      api('POST', '/api/v1/rollouts/plan', body).then(function (r) {
        renderPlan(r.plan);
        planned = body;
        $('start-button').disabled = role !== 'operator';
      }).catch(function (e) { $('plan-out').textContent = ''; $('plan-error').textContent = e.message; });
    });
    $('start-button').addEventListener('click', function () {
      if (!planned) return;
      $('start-button').disabled = true;
      api('POST', '/api/v1/rollouts', planned).then(function (d) {
        planned = null;
        renderRollout(d);
        refresh();
      }).catch(function (e) { $('plan-error').textContent = e.message; });
    });
  });
})();
`;
